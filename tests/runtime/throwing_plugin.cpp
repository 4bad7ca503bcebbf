// A plugin whose entry point throws: load_plugin must refuse it with a
// reason, not let the exception end the program (runtime_tests).

#include <stdexcept>

#include "ticktock/runtime/plugin.hpp"

extern "C" __attribute__((visibility("default"))) int
ticktock_plugin_register(ticktock_registry*, int) {
  throw std::runtime_error("boom");
}
