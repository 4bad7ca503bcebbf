// ticktock-test-relay: the tests' NIP-01 relay as a process, for end-to-end
// tests with the real ticktockd. It prints "port=N", then answers commands on
// stdin, one per line:
//   store <event json>   stores the event (and sends it to matching subscriptions)
//   dump                 prints "event <json>" per stored event, then "end"
// It exits at the end of stdin.

#include <iostream>
#include <string>

#include "test_relay.hpp"

int main() {
  ticktock::test::test_relay relay;
  std::cout << "port=" << relay.port() << std::endl;
  for (std::string line; std::getline(std::cin, line);) {
    if (line.rfind("store ", 0) == 0) {
      relay.store(line.substr(6));
      std::cout << "stored" << std::endl;
    } else if (line == "dump") {
      for (auto& ev : relay.stored_events())
        std::cout << "event " << ev << "\n";
      std::cout << "end" << std::endl;
    } else {
      std::cout << "error unknown command" << std::endl;
    }
  }
  return 0;
}
