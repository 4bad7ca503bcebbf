#include "directory.hpp"

#include <caf/send.hpp>

#include <algorithm>
#include <chrono>

#include "messages.hpp"

namespace ticktock::detail {

directory::directory(spawn_fn spawn, std::size_t max_resident)
  : spawn_(std::move(spawn)), max_resident_(max_resident == 0 ? 1 : max_resident) {}

directory::shard& directory::shard_of(const std::string& id) const {
  return shards_[std::hash<std::string>{}(id) % shards_.size()];
}

void directory::add(const std::string& id, std::string type, bool errored, std::string error) {
  auto& s = shard_of(id);
  std::lock_guard<std::mutex> guard{s.mtx};
  auto& e = s.map[id];
  e.type = std::move(type);
  e.errored = errored;
  e.error = std::move(error);
}

caf::actor directory::remove(const std::string& id) {
  auto& s = shard_of(id);
  std::lock_guard<std::mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i == s.map.end())
    return {};
  auto actor = i->second.actor;
  if (actor)
    forget_actor(i->second);
  s.map.erase(i);
  return actor;
}

void directory::retire(const std::string& id) {
  auto& s = shard_of(id);
  std::lock_guard<std::mutex> guard{s.mtx};
  if (auto i = s.map.find(id); i != s.map.end()) {
    i->second.retiring = true;
    if (i->second.res)
      i->second.res->retired.store(true, std::memory_order_release);
  }
}

caf::actor directory::unretire(const std::string& id) {
  auto& s = shard_of(id);
  std::lock_guard<std::mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i == s.map.end())
    return {};
  i->second.retiring = false;
  auto actor = i->second.actor;
  if (actor)
    forget_actor(i->second);
  return actor;
}

bool directory::known(const std::string& id) const {
  auto& s = shard_of(id);
  std::lock_guard<std::mutex> guard{s.mtx};
  return s.map.count(id) != 0;
}

std::optional<directory::view> directory::lookup(const std::string& id) const {
  auto& s = shard_of(id);
  std::lock_guard<std::mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i == s.map.end())
    return std::nullopt;
  return view{i->second.type, static_cast<bool>(i->second.actor), i->second.errored,
              i->second.error, i->second.retiring};
}

void directory::set_errored(const std::string& id, std::string reason) {
  auto& s = shard_of(id);
  std::lock_guard<std::mutex> guard{s.mtx};
  if (auto i = s.map.find(id); i != s.map.end()) {
    i->second.errored = true;
    i->second.error = std::move(reason);
  }
}

bool directory::activate(const std::string& id, entry& e) {
  if (e.actor)
    return true;
  if (e.errored || e.retiring || closed_)
    return false;
  e.res = std::make_shared<residency>();
  e.res->last_active_ns = std::chrono::steady_clock::now().time_since_epoch().count();
  e.actor = spawn_(id, e.res);
  ++resident_;
  return true;
}

template <class F>
bool directory::with_active(const std::string& id, F&& f) {
  bool spawned = false;
  {
    auto& s = shard_of(id);
    std::lock_guard<std::mutex> guard{s.mtx};
    auto i = s.map.find(id);
    if (i == s.map.end())
      return false;
    spawned = !i->second.actor;
    if (!activate(id, i->second))
      return false;
    f(i->second);
  }
  if (spawned)
    enforce_max_resident();
  return true;
}

// The sends happen after the shard lock is released: a message to an actor
// that has just stopped is destroyed inside the send, and a direct trigger's
// destructor looks its agent up here.
bool directory::deliver(const std::string& id, std::uint64_t seq, entry_ptr entry) {
  caf::actor to;
  if (!with_active(id, [&](auto& e) {
        e.notified = std::max(e.notified, seq);
        to = e.actor;
      }))
    return false;
  caf::anon_send(to, notify_atom::value, seq, std::move(entry));
  return true;
}

bool directory::deliver_direct(const std::string& id, direct_ptr d) {
  caf::actor to;
  if (!with_active(id, [&](auto& e) {
        ++e.directs;
        to = e.actor;
        d->actor_retired = retired_flag(e.res);
      }))
    return false;
  caf::anon_send(to, direct_atom::value, std::move(d));
  return true;
}

bool directory::wake(const std::string& id) {
  return with_active(id, [](auto&) {});
}

caf::actor directory::actor_of(const std::string& id) {
  caf::actor result;
  with_active(id, [&](auto& e) { result = e.actor; });
  return result;
}

bool directory::request_hibernate(const std::string& id) {
  auto& s = shard_of(id);
  std::lock_guard<std::mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i == s.map.end() || !i->second.actor)
    return false;
  caf::anon_send(i->second.actor, ctl_atom::value, ctl_op::hibernate);
  return true;
}

bool directory::try_hibernate(const std::string& id, std::uint64_t last_seen,
                              std::uint64_t directs_seen, const residency* who) {
  auto& s = shard_of(id);
  std::lock_guard<std::mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i == s.map.end() || !i->second.actor || i->second.res.get() != who
      || i->second.notified > last_seen || i->second.directs > directs_seen)
    return false;
  forget_actor(i->second);
  return true;
}

void directory::actor_down(const std::string& id, const residency* who) {
  auto& s = shard_of(id);
  std::lock_guard<std::mutex> guard{s.mtx};
  auto i = s.map.find(id);
  if (i != s.map.end() && i->second.actor && i->second.res.get() == who)
    forget_actor(i->second);
}

void directory::enforce_max_resident() {
  // Agents already asked to hibernate count as gone.
  auto resident = resident_.load();
  auto evicting = evicting_.load();
  if (resident <= max_resident_ + evicting)
    return;
  std::unique_lock<std::mutex> scan{evict_mtx_, std::try_to_lock};
  if (!scan.owns_lock())
    return;
  // Least recently active first. Evict a little more than the excess so a
  // steady stream of activations does not rescan on every spawn.
  struct candidate {
    std::int64_t last_active;
    shard* s;
    std::string id;
  };
  std::vector<candidate> candidates;
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> guard{s.mtx};
    for (auto& [id, e] : s.map)
      if (e.actor && e.res && !e.evicting)
        candidates.push_back({e.res->last_active_ns.load(), &s, id});
  }
  auto excess = std::min(resident - evicting - max_resident_ + max_resident_ / 100,
                         candidates.size());
  std::nth_element(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(excess),
                   candidates.end(),
                   [](auto& a, auto& b) { return a.last_active < b.last_active; });
  for (std::size_t i = 0; i < excess; ++i) {
    auto& c = candidates[i];
    std::lock_guard<std::mutex> guard{c.s->mtx};
    auto it = c.s->map.find(c.id);
    if (it == c.s->map.end() || !it->second.actor || it->second.evicting)
      continue;
    it->second.evicting = true;
    ++evicting_;
    caf::anon_send(it->second.actor, ctl_atom::value, ctl_op::hibernate);
  }
}

void directory::forget_actor(entry& e) {
  e.actor = nullptr;
  // The next actor counts from zero. It reads its inbox from the store, so
  // the seqs its predecessor was notified of (consumed, when it hibernated;
  // else the agent is errored or gone) are not owed to it: had `notified`
  // stayed, an agent woken by a direct trigger or a wake, with no new inbox
  // entry, would never have seen up to it and never hibernated again.
  e.notified = 0;
  e.directs = 0;
  e.res.reset();
  --resident_;
  if (e.evicting) {
    e.evicting = false;
    --evicting_;
  }
}

std::size_t directory::size() const {
  std::size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> guard{s.mtx};
    n += s.map.size();
  }
  return n;
}

std::size_t directory::errored() const {
  std::size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> guard{s.mtx};
    for (auto& [id, e] : s.map)
      n += e.errored ? 1 : 0;
  }
  return n;
}

std::vector<std::string> directory::ids() const {
  std::vector<std::string> out;
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> guard{s.mtx};
    for (auto& [id, e] : s.map)
      out.push_back(id);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<caf::actor> directory::resident_actors() const {
  std::vector<caf::actor> out;
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> guard{s.mtx};
    for (auto& [id, e] : s.map)
      if (e.actor)
        out.push_back(e.actor);
  }
  return out;
}

void directory::sweep_idle(std::int64_t cutoff_ns) {
  for (auto& s : shards_) {
    std::lock_guard<std::mutex> guard{s.mtx};
    for (auto& [id, e] : s.map)
      if (e.actor && e.res && e.res->last_active_ns.load() < cutoff_ns)
        caf::anon_send(e.actor, ctl_atom::value, ctl_op::idle);
  }
}

void directory::close() { closed_ = true; }

}  // namespace ticktock::detail
