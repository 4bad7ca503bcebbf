#pragma once

// How many CPUs the calling thread may run on (internal): its affinity mask,
// as set by `taskset` or a cgroup cpuset, not every CPU online. "One per
// core" means one per such CPU. At least 1.

#include <sched.h>

#include <cstddef>
#include <thread>

namespace ticktock::detail {

inline std::size_t usable_cpus() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return static_cast<std::size_t>(CPU_COUNT(&set));
  auto n = std::thread::hardware_concurrency();
  return n > 0 ? n : 1;
}

}  // namespace ticktock::detail
