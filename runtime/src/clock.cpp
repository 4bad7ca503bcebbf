#include "ticktock/runtime/clock.hpp"

namespace ticktock {

clock::~clock() = default;

std::chrono::nanoseconds clock::elapsed() const {
  return std::chrono::steady_clock::now().time_since_epoch();
}

time_point system_clock::now() const {
  return std::chrono::time_point_cast<duration>(std::chrono::system_clock::now());
}

}  // namespace ticktock
