// Boost.Asio's and Boost.Beast's compiled parts, once for the whole build.
//
// Every target of this tree that includes Asio or Beast is compiled with
// BOOST_ASIO_SEPARATE_COMPILATION and BOOST_BEAST_SEPARATE_COMPILATION (the
// ticktock_asio target in the top CMakeLists.txt), so their non-template code
// is compiled here instead of in each of them: a third off the compile time
// of each file that uses Beast. This object goes into ticktock_drivers and into
// the ticktock CLI. An installed ticktock exports neither macro: code built
// against it compiles Asio header-only as usual. Asio's SSL part is in
// asio_ssl_impl.cpp, in ticktock_drivers only: the CLI speaks plain HTTP and
// does not link OpenSSL.
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>
