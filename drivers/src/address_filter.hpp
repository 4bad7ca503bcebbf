#pragma once

// Which addresses an outbound fetch may connect to (http_fetch_options::
// allow_private false): public unicast ones only, so that an agent cannot
// reach the node's own admin API, the cloud metadata service or the private
// network through ctx.fetch. http_client checks every resolved endpoint.

#include <boost/asio/ip/address.hpp>

namespace ticktock::drivers::detail {

/// True for a public unicast address. False for IPv4 0/8, 10/8, 100.64/10,
/// 127/8, 169.254/16, 172.16/12, 192.0.0/24, 192.168/16, 198.18/15, 224/4
/// (multicast) and 240/4 (with the broadcast address); for IPv6 ::, ::1,
/// fc00::/7, fe80::/10, fec0::/10 and ff00::/8; an IPv6 address that carries
/// an IPv4 one (::ffff:a.b.c.d, ::a.b.c.d, 64:ff9b::a.b.c.d) is judged by
/// that IPv4 address.
bool is_public_address(const boost::asio::ip::address& a);

}  // namespace ticktock::drivers::detail
