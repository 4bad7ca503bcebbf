#pragma once

// Names the calling thread (internal), so that `top -H`, `perf` and gdb tell
// ticktock's threads apart: tt-http, tt-commit, tt-alarms, ... The kernel
// keeps 15 bytes.

#include <pthread.h>

namespace ticktock::detail {

inline void name_this_thread(const char* name) noexcept { ::pthread_setname_np(::pthread_self(), name); }

}  // namespace ticktock::detail
