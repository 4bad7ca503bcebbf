#include "ticktock/runtime/clock.hpp"

namespace ticktock {

clock::~clock() = default;

time_point system_clock::now() const {
  return std::chrono::time_point_cast<duration>(std::chrono::system_clock::now());
}

}  // namespace ticktock
