// ticktock-test-openai: the tests' OpenAI-compatible server as a process, for
// end-to-end tests with the real ticktockd.
//
//   ticktock-test-openai [--port N] [--tls-ca-out FILE]
//
// --port 0 (the default) takes a free port. --tls-ca-out serves HTTPS with a
// certificate for 127.0.0.1 and localhost signed by a CA made at start, whose
// PEM is written to FILE (point the client's ca_file at it). Prints
// "listening on 127.0.0.1:PORT" once it accepts connections, then serves until
// SIGINT or SIGTERM. Models "test-error-500", "test-error-400" and
// "test-rate-limited" misbehave; see openai_test_server.hpp.

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "openai_test_server.hpp"

int main(int argc, char** argv) {
  ticktock::test::openai_test_server_options options;
  std::string ca_out;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--port" && i + 1 < argc) {
      char* end = nullptr;
      long port = std::strtol(argv[++i], &end, 10);
      if (*end != '\0' || port < 0 || port > 65535) {
        std::cerr << "ticktock-test-openai: --port wants 0..65535\n";
        return 2;
      }
      options.port = static_cast<std::uint16_t>(port);
    } else if (arg == "--tls-ca-out" && i + 1 < argc) {
      ca_out = argv[++i];
    } else {
      std::cerr << "usage: ticktock-test-openai [--port N] [--tls-ca-out FILE]\n";
      return 2;
    }
  }

  // Block the signals before any thread starts, so that only sigwait sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  try {
    if (!ca_out.empty()) {
      options.tls = ticktock::test::make_test_tls({"localhost"}, {"127.0.0.1"});
      std::ofstream out{ca_out, std::ios::trunc};
      out << options.tls->ca_cert_pem;
      if (!out.flush()) {
        std::cerr << "ticktock-test-openai: cannot write " << ca_out << "\n";
        return 1;
      }
    }
    ticktock::test::openai_test_server server{std::move(options)};
    std::cout << "listening on 127.0.0.1:" << server.port() << std::endl;
    int sig = 0;
    sigwait(&stop_signals, &sig);
  } catch (const std::exception& e) {
    std::cerr << "ticktock-test-openai: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
