#pragma once

// Records a node's tick events, from construction to destruction.

#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "ticktock/ticktock.hpp"

namespace ticktock::test {

class tick_log {
public:
  explicit tick_log(node& n) : n_(n) {}
  tick_log(const tick_log&) = delete;
  tick_log& operator=(const tick_log&) = delete;
  /// Removes the observer before the events go (it may be running on a CAF
  /// worker: remove_tick_observer waits for it).
  ~tick_log() { n_.remove_tick_observer(id_); }

  std::vector<tick_event> events() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return events_;
  }
  /// "agent:kind" of every tick whose trigger carries `request_id`.
  std::multiset<std::string> kinds_of(const std::string& request_id) const {
    std::multiset<std::string> kinds;
    for (auto& ev : events())
      if (ev.request_id == request_id)
        kinds.insert(ev.agent + ":" + std::string{to_string(ev.kind)});
    return kinds;
  }
  void clear() {
    std::lock_guard<std::mutex> guard{mtx_};
    events_.clear();
  }

private:
  node& n_;
  mutable std::mutex mtx_;
  std::vector<tick_event> events_;
  // Last: added once the members above exist.
  std::uint64_t id_ = n_.add_tick_observer([this](const tick_event& ev) {
    std::lock_guard<std::mutex> guard{mtx_};
    events_.push_back(ev);
  });
};

}  // namespace ticktock::test
