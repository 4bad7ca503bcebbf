#include "ticktock/runtime/detail/event_loop.hpp"

namespace ticktock::detail {

namespace {
thread_local event_loop* current = nullptr;
}  // namespace

event_loop* this_thread_loop() noexcept { return current; }

void set_this_thread_loop(event_loop* loop) noexcept { current = loop; }

}  // namespace ticktock::detail
