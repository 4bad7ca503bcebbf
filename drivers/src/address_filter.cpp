// The public-address predicate of the fetch path (address_filter.hpp).

#include "address_filter.hpp"

#include <array>
#include <cstdint>

namespace ticktock::drivers::detail {

namespace {

bool is_public_v4(const boost::asio::ip::address_v4& a) {
  const std::uint32_t v = a.to_uint();
  struct block {
    std::uint32_t net;
    int bits;
  };
  static constexpr std::array<block, 14> refused{{
    {0x00000000, 8},   // 0.0.0.0/8 "this network"
    {0x0A000000, 8},   // 10.0.0.0/8 private
    {0x64400000, 10},  // 100.64.0.0/10 CGNAT
    {0x7F000000, 8},   // 127.0.0.0/8 loopback
    {0xA9FE0000, 16},  // 169.254.0.0/16 link-local (cloud metadata)
    {0xAC100000, 12},  // 172.16.0.0/12 private
    {0xC0000000, 24},  // 192.0.0.0/24 IETF protocol assignments
    {0xC0000200, 24},  // 192.0.2.0/24 documentation (TEST-NET-1)
    {0xC0A80000, 16},  // 192.168.0.0/16 private
    {0xC6120000, 15},  // 198.18.0.0/15 benchmarking
    {0xC6336400, 24},  // 198.51.100.0/24 documentation (TEST-NET-2)
    {0xCB007100, 24},  // 203.0.113.0/24 documentation (TEST-NET-3)
    {0xE0000000, 4},   // 224.0.0.0/4 multicast
    {0xF0000000, 4},   // 240.0.0.0/4 reserved, 255.255.255.255 broadcast
  }};
  for (const auto& b : refused) {
    const std::uint32_t mask = ~std::uint32_t{0} << (32 - b.bits);
    if ((v & mask) == b.net)
      return false;
  }
  return true;
}

bool is_public_v6(const boost::asio::ip::address_v6& a) {
  if (a.is_unspecified() || a.is_loopback() || a.is_link_local() || a.is_site_local()
      || a.is_multicast())
    return false;
  if (a.is_v4_mapped())  // ::ffff:a.b.c.d
    return is_public_v4(boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a));
  const auto b = a.to_bytes();
  if ((b[0] & 0xFE) == 0xFC)  // fc00::/7 unique local
    return false;
  auto embedded = [&] {
    return boost::asio::ip::address_v4{boost::asio::ip::address_v4::bytes_type{b[12], b[13], b[14], b[15]}};
  };
  auto zero = [&](int from, int to) {
    for (int i = from; i < to; ++i)
      if (b[i] != 0)
        return false;
    return true;
  };
  if (zero(0, 12))  // ::a.b.c.d (IPv4-compatible, deprecated)
    return is_public_v4(embedded());
  // 64:ff9b::a.b.c.d, the NAT64 well-known prefix (RFC 6052)
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B && zero(4, 12))
    return is_public_v4(embedded());
  // 64:ff9b:1::/48, NAT64 for local use (RFC 8215)
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xFF && b[3] == 0x9B && b[4] == 0x00 && b[5] == 0x01)
    return false;
  // 100::/64, discard only (RFC 6666)
  if (b[0] == 0x01 && b[1] == 0x00 && zero(2, 8))
    return false;
  // 2001:db8::/32 and 3fff::/20, documentation (RFC 3849, RFC 9637)
  if ((b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0D && b[3] == 0xB8)
      || (b[0] == 0x3F && b[1] == 0xFF && (b[2] & 0xF0) == 0x00))
    return false;
  // 2002:a.b.c.d::/48, 6to4 (RFC 3056): relayed to the IPv4 address it carries
  if (b[0] == 0x20 && b[1] == 0x02)
    return is_public_v4(boost::asio::ip::address_v4{
      boost::asio::ip::address_v4::bytes_type{b[2], b[3], b[4], b[5]}});
  // 2001:0::/32, Teredo (RFC 4380): the server's IPv4 address in bits 32-63,
  // the client's (inverted) in the last 32 bits; either may be the one reached
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00)
    return is_public_v4(boost::asio::ip::address_v4{
             boost::asio::ip::address_v4::bytes_type{b[4], b[5], b[6], b[7]}})
           && is_public_v4(boost::asio::ip::address_v4{boost::asio::ip::address_v4::bytes_type{
             static_cast<unsigned char>(~b[12]), static_cast<unsigned char>(~b[13]),
             static_cast<unsigned char>(~b[14]), static_cast<unsigned char>(~b[15])}});
  return true;
}

}  // namespace

bool is_public_address(const boost::asio::ip::address& a) {
  return a.is_v4() ? is_public_v4(a.to_v4()) : is_public_v6(a.to_v6());
}

}  // namespace ticktock::drivers::detail
