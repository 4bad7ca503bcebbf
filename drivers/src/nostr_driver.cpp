#include "ticktock/drivers/nostr_driver.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "ticktock/runtime/detail/thread_name.hpp"
#include "ticktock/runtime/nostr.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock::drivers {

namespace json = boost::json;

struct nostr_driver::impl {
  node& n;
  nostr_driver_options opts;

  struct watched {
    std::vector<std::string> relays;
    std::unique_ptr<relay_pool> pool;
    // Outbox events below this seq were handed to `pool` already. A new
    // agent's watch sends what its first ticks published, and those ticks'
    // own publishes may still be queued behind it: each goes out once.
    std::uint64_t published_below = 0;
  };
  mutable std::mutex mtx;
  std::map<std::string, watched> agents;
  std::set<std::string> unwatched;  // agents known to have no relays

  // Work the tick observer hands off (it must not block): publishing and
  // watching new agents.
  std::mutex queue_mtx;
  std::condition_variable queue_cv;
  std::deque<std::function<void()>> queue;
  bool stopping = false;
  std::thread worker;
  std::uint64_t observer = 0;

  // Shared with inbox writes still in flight when the driver goes.
  struct counters {
    std::atomic<std::uint64_t> received{0}, delivered{0}, duplicates{0}, malformed{0},
      bad_signature{0}, published{0}, unexpected{0};
    // Agents an inbox write found gone (terminated): unwatched on the next event.
    std::mutex gone_mtx;
    std::vector<std::string> gone;
  };
  std::shared_ptr<counters> stats = std::make_shared<counters>();

  impl(node& node, nostr_driver_options o) : n(node), opts(std::move(o)) {
    // Events are checked before the pool's deduplication remembers their id.
    opts.pool.accept = [stats = stats, max = opts.max_event_bytes](const std::string& json) {
      if (json.size() > max) {
        ++stats->malformed;
        return false;
      }
      auto e = nostr::event_from_json(json, nostr::nip59::max_layer_content_bytes);
      if (!e) {
        ++stats->malformed;
        return false;
      }
      if (nostr::verify_event(*e)) {
        ++stats->bad_signature;
        return false;
      }
      return true;
    };
  }

  void post(std::function<void()> f) {
    {
      std::lock_guard<std::mutex> guard{queue_mtx};
      if (stopping)
        return;
      queue.push_back(std::move(f));
    }
    queue_cv.notify_one();
  }

  void run_queue() {
    detail::name_this_thread("tt-nostr");
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock<std::mutex> lock{queue_mtx};
        queue_cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty())
          return;
        f = std::move(queue.front());
        queue.pop_front();
      }
      f();
    }
  }

  // An authentic event a relay delivered for agent `id` (Nostr key
  // `pub_hex`): into the agent's inbox once per event id, if it is what the
  // subscription asked for (a relay may send anything under its id).
  void on_event(const std::string& id, const std::string& pub_hex, const std::string& event_json) {
    {
      std::lock_guard<std::mutex> guard{stats->gone_mtx};
      for (auto& g : stats->gone)
        post([this, g] { (void)unwatch(g); });
      stats->gone.clear();
    }
    // The pool's accept hook checked it (size, shape, id, signature).
    auto e = nostr::event_from_json(event_json, nostr::nip59::max_layer_content_bytes);
    if (!e)
      return;
    bool tagged = std::any_of(e->tags.begin(), e->tags.end(), [&](auto& t) {
      return t.size() >= 2 && t[0] == "p" && t[1] == pub_hex;
    });
    if ((e->kind != 1 && e->kind != nostr::nip59::gift_wrap_kind) || !tagged) {
      ++stats->unexpected;
      return;
    }
    ++stats->received;
    send_options so;
    so.nostr = true;
    so.idempotency_key = "nostr:" + e->id;
    n.send_async(id, event_json, so, [stats = stats, id](expected<send_receipt> r) {
      if (r) {
        ++(r->duplicate ? stats->duplicates : stats->delivered);
      } else if (r.code() == errc::not_found) {
        std::lock_guard<std::mutex> guard{stats->gone_mtx};
        stats->gone.push_back(id);
      }
    });
  }

  error unwatch(const std::string& id) {
    std::unique_ptr<relay_pool> old;
    {
      std::lock_guard<std::mutex> guard{mtx};
      if (auto i = agents.find(id); i != agents.end()) {
        old = std::move(i->second.pool);
        agents.erase(i);
      }
      unwatched.insert(id);
    }
    return {};  // `old` closes its connections here, outside the lock
  }

  error watch(const std::string& id, const std::vector<std::string>& relays) {
    if (relays.empty())
      return unwatch(id);
    auto keys = n.public_keys(id);
    if (!keys)
      return keys.error_value();
    auto pool = relay_pool::create(opts.pool);
    if (!pool)
      return pool.error_value();
    for (auto& url : relays)
      if (auto added = (*pool)->add_relay(url); !added)
        return added.error_value();
    auto since = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                 - opts.lookback;
    auto filter = nostr::mentions_filter(keys->nostr, since.count(),
                                         {1, nostr::nip59::gift_wrap_kind});
    auto pub_hex = nostr::to_hex(keys->nostr);
    auto err = (*pool)->subscribe("ticktock-" + id, filter,
                                  [this, id, pub_hex](const std::string&, const std::string&,
                                                      const std::string& event_json) {
                                    on_event(id, pub_hex, event_json);
                                  });
    if (err)
      return err;
    std::unique_ptr<relay_pool> old;
    {
      std::lock_guard<std::mutex> guard{mtx};
      auto& w = agents[id];
      unwatched.erase(id);
      old = std::move(w.pool);
      w.relays = relays;
      w.pool = std::move(*pool);
      w.published_below = 0;  // a new pool has sent nothing
    }
    return {};
  }

  // Sends the agent's outbox events of topic "nostr" in [from, from + count).
  void publish_outbox(const std::string& id, std::uint64_t from, std::size_t count) {
    auto events = n.outbox(id, from, count);
    if (!events)
      return;
    std::lock_guard<std::mutex> guard{mtx};
    auto i = agents.find(id);
    if (i == agents.end())
      return;
    auto& w = i->second;
    for (auto& ev : *events) {
      if (ev.topic != "nostr" || ev.seq < w.published_below)
        continue;
      w.published_below = ev.seq + 1;
      if (auto e = nostr::event_from_json(ev.payload)) {
        if (!w.pool->publish(e->id, ev.payload))
          ++stats->published;
      }
    }
  }

  void watch_from_config(const std::string& id, bool republish) {
    auto meta = n.store().get_agent(id);
    if (!meta)
      return;
    auto relays = relays_in_config(meta->config);
    if (relays.empty() || watch(id, relays)) {
      std::lock_guard<std::mutex> guard{mtx};
      unwatched.insert(id);
      return;
    }
    if (republish && meta->outbox_next > 1) {
      auto from = meta->outbox_next > opts.republish_last ? meta->outbox_next - opts.republish_last : 1;
      publish_outbox(id, from, opts.republish_last);
    }
  }
};

nostr_driver::nostr_driver(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

nostr_driver::~nostr_driver() {
  impl_->n.remove_tick_observer(impl_->observer);
  {
    std::lock_guard<std::mutex> guard{impl_->queue_mtx};
    impl_->stopping = true;
  }
  impl_->queue_cv.notify_all();
  impl_->worker.join();
  std::map<std::string, impl::watched> agents;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    agents.swap(impl_->agents);
  }
  // The pools close their connections as `agents` goes.
}

expected<std::unique_ptr<nostr_driver>> nostr_driver::start(node& n, nostr_driver_options options) {
  auto p = std::make_unique<impl>(n, std::move(options));
  auto* raw = p.get();
  raw->worker = std::thread([raw] { raw->run_queue(); });
  raw->observer = n.add_tick_observer([raw](const tick_event& ev) {
    // Called on every tick: nothing is copied before it is known to be needed.
    if (ev.outcome != storage::outcome::ok)
      return;
    if (ev.kind == trigger_kind::init) {
      // Watch it (from its config) and send what its first tick published.
      raw->post([raw, id = ev.agent] { raw->watch_from_config(id, true); });
      return;
    }
    if (ev.outbox_count == 0)
      return;
    {
      std::lock_guard<std::mutex> guard{raw->mtx};
      if (raw->unwatched.count(ev.agent))
        return;
    }
    auto id = ev.agent;
    // Queued after the watch of a new agent, so it finds the agent watched.
    auto from = ev.outbox_next - ev.outbox_count;
    auto count = ev.outbox_count;
    raw->post([raw, id, from, count] { raw->publish_outbox(id, from, count); });
  });
  for (std::string after;;) {
    auto page = n.list(after, 1000);
    if (page.empty())
      break;
    for (auto& a : page)
      raw->watch_from_config(a.id, true);
    after = page.back().id;
  }
  return std::unique_ptr<nostr_driver>(new nostr_driver(std::move(p)));
}

error nostr_driver::watch(const std::string& id, const std::vector<std::string>& relays) {
  return impl_->watch(id, relays);
}

std::vector<std::string> nostr_driver::relays(const std::string& id) const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  auto i = impl_->agents.find(id);
  return i == impl_->agents.end() ? std::vector<std::string>{} : i->second.relays;
}

expected<std::string> nostr_driver::status_json(const std::string& id) const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  auto i = impl_->agents.find(id);
  if (i == impl_->agents.end())
    return error{errc::not_found, "agent '" + id + "' has no Nostr relays (create it with "
                                                    "{\"nostr\":{\"relays\":[...]}} in its config)"};
  return i->second.pool->status().to_json();
}

expected<std::string> nostr_driver::publish(const std::string& id, const nostr_note& note) {
  auto signed_event = impl_->n.nostr_sign(id, note);
  if (!signed_event)
    return signed_event.error_value();
  auto e = nostr::event_from_json(*signed_event);
  if (!e)
    return e.error_value();
  std::lock_guard<std::mutex> guard{impl_->mtx};
  auto i = impl_->agents.find(id);
  if (i == impl_->agents.end())
    return error{errc::not_found, "agent '" + id + "' has no Nostr relays to publish to"};
  if (auto err = i->second.pool->publish(e->id, *signed_event))
    return err;
  ++impl_->stats->published;
  return signed_event;
}

nostr_metrics nostr_driver::metrics() const {
  auto& s = *impl_->stats;
  return {s.received, s.delivered, s.duplicates, s.malformed, s.bad_signature, s.published,
          s.unexpected};
}

}  // namespace ticktock::drivers
