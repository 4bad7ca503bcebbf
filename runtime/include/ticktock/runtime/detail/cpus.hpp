#pragma once

// The CPUs a thread may run on (internal): its affinity mask, as set by
// `taskset` or a cgroup cpuset, not every CPU online. "One per core" means
// one per such CPU.

#include <pthread.h>
#include <sched.h>

#include <cstddef>
#include <thread>
#include <vector>

namespace ticktock::detail {

/// The CPUs the calling thread may run on, in order (empty if unknown).
inline std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (::sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set))
        cpus.push_back(c);
  return cpus;
}

/// How many: at least 1.
inline std::size_t usable_cpus() {
  if (auto n = allowed_cpus().size(); n > 0)
    return n;
  auto n = std::thread::hardware_concurrency();
  return n > 0 ? n : 1;
}

/// Keeps the calling thread on `cpu` (best effort).
inline void pin_this_thread(int cpu) noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
}

}  // namespace ticktock::detail
