// Boost.Asio's SSL part, compiled once for ticktock_drivers (wss:// relays,
// https:// fetches and providers); see asio_impl.cpp.
#include <boost/asio/ssl/impl/src.hpp>
