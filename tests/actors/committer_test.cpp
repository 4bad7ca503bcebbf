// The committer against a real store: every op committed once, in
// submission order per submitter, callbacks that submit more work, and
// stop() writing what is queued; with the committer thread leading, with
// submitters leading on their own threads (async durability), and with their
// writes deferred to the end of their event loop's queue.

#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "../../actors/src/committer.hpp"
#include "ticktock/runtime/detail/event_loop.hpp"
#include "../store_helpers.hpp"

using namespace ticktock;
using namespace ticktock::storage;
using ticktock::detail::committer;
using test::make_agent;
using test::message;
using test::open_store;

namespace {

// Creates agent `id` through the committer and waits for it.
void create(committer& c, const std::string& id, bool may_lead = false) {
  std::promise<void> created;
  REQUIRE(c.submit(
    make_agent(id),
    [&](op_result& r) {
      CHECK_FALSE(r.err);
      created.set_value();
    },
    may_lead));
  created.get_future().get();
}

}  // namespace

TEST_CASE("committer: concurrent submitters each get every op committed once, in order") {
  bool inline_leaders = GENERATE(false, true);
  CAPTURE(inline_leaders);
  test::temp_dir dir;
  auto s = open_store(dir);
  committer c{*s, 16, inline_leaders};
  constexpr int threads = 4, per_thread = 300;
  for (int t = 0; t < threads; ++t)
    create(c, "a" + std::to_string(t));
  std::mutex mtx;
  std::map<int, std::vector<std::uint64_t>> seqs;  // per thread, in callback order
  std::atomic<int> calls{0};
  std::vector<std::thread> submitters;
  for (int t = 0; t < threads; ++t)
    submitters.emplace_back([&, t] {
      // Half of the submitters may lead.
      for (int i = 0; i < per_thread; ++i)
        REQUIRE(c.submit(
          message("a" + std::to_string(t), std::to_string(i)),
          [&, t](op_result& r) {
            CHECK_FALSE(r.err);
            ++calls;
            std::lock_guard<std::mutex> guard{mtx};
            seqs[t].push_back(r.seq);
          },
          t % 2 == 0));
    });
  for (auto& th : submitters)
    th.join();
  c.stop();  // writes whatever is still queued
  CHECK(calls == threads * per_thread);
  for (int t = 0; t < threads; ++t) {
    auto& v = seqs[t];
    REQUIRE(v.size() == per_thread);
    // The init entry is seq 1; the messages follow in submission order.
    for (int i = 0; i < per_thread; ++i)
      CHECK(v[static_cast<std::size_t>(i)] == static_cast<std::uint64_t>(i + 2));
    auto inbox = s->read_inbox("a" + std::to_string(t), 0, 1000);
    CHECK(inbox.size() == per_thread + 1);
  }
  // Stopped: nothing more is taken, and the callback is never called.
  bool called = false;
  CHECK_FALSE(c.submit(message("a0", "late"), [&](op_result&) { called = true; }));
  CHECK_FALSE(called);
}

TEST_CASE("committer: a callback may submit more work without waiting for itself") {
  bool inline_leaders = GENERATE(false, true);
  CAPTURE(inline_leaders);
  test::temp_dir dir;
  auto s = open_store(dir);
  committer c{*s, 8, inline_leaders};
  create(c, "a");
  // A chain of 50 ops, each submitted from the previous one's callback.
  std::promise<std::uint64_t> last;
  std::function<void(int)> chain = [&](int n) {
    c.submit(
      message("a", std::to_string(n)),
      [&, n](op_result& r) {
        REQUIRE_FALSE(r.err);
        if (n == 50)
          last.set_value(r.seq);
        else
          chain(n + 1);
      },
      true);
  };
  chain(1);
  auto f = last.get_future();
  REQUIRE(f.wait_for(std::chrono::seconds{30}) == std::future_status::ready);
  CHECK(f.get() == 51);
}

TEST_CASE("committer: a submitter that may lead writes on its own thread only with inline leaders") {
  bool inline_leaders = GENERATE(false, true);
  CAPTURE(inline_leaders);
  test::temp_dir dir;
  auto s = open_store(dir);
  committer c{*s, 8, inline_leaders};
  // Led here too with inline leaders: so no group is being written when
  // the next submit comes (the committer thread never had one).
  create(c, "a", true);
  std::promise<std::thread::id> ran_on;
  REQUIRE(c.submit(
    message("a", "x"), [&](op_result& r) {
      CHECK_FALSE(r.err);
      ran_on.set_value(std::this_thread::get_id());
    },
    true));
  auto f = ran_on.get_future();
  if (inline_leaders) {
    // Written and called back before submit returned, here.
    REQUIRE(f.wait_for(std::chrono::seconds{0}) == std::future_status::ready);
    CHECK(f.get() == std::this_thread::get_id());
  } else {
    REQUIRE(f.wait_for(std::chrono::seconds{30}) == std::future_status::ready);
    CHECK(f.get() != std::this_thread::get_id());  // the committer thread
  }
  // Without may_lead, the committer thread writes either way.
  std::promise<std::thread::id> queued_on;
  REQUIRE(c.submit(message("a", "y"), [&](op_result&) {
    queued_on.set_value(std::this_thread::get_id());
  }));
  auto g = queued_on.get_future();
  REQUIRE(g.wait_for(std::chrono::seconds{30}) == std::future_status::ready);
  CHECK(g.get() != std::this_thread::get_id());
  c.stop();
  CHECK(s->read_inbox("a", 0, 10).size() == 3);
}

namespace {

// An event loop that runs what is posted to it only when asked.
struct manual_loop final : ticktock::detail::event_loop {
  std::mutex mtx;
  std::vector<std::function<void()>> posted;
  void post(std::function<void()> fn) override {
    std::lock_guard<std::mutex> guard{mtx};
    posted.push_back(std::move(fn));
  }
  std::size_t size() {
    std::lock_guard<std::mutex> guard{mtx};
    return posted.size();
  }
  void run() {
    std::vector<std::function<void()>> now;
    {
      std::lock_guard<std::mutex> guard{mtx};
      now.swap(posted);
    }
    for (auto& fn : now)
      fn();
  }
};

// Registers `l` as this thread's event loop for the scope.
struct on_loop {
  explicit on_loop(ticktock::detail::event_loop& l) { ticktock::detail::set_this_thread_loop(&l); }
  ~on_loop() { ticktock::detail::set_this_thread_loop(nullptr); }
};

}  // namespace

TEST_CASE("committer: on an event loop, a submitter's write waits at the end of the loop's queue and takes what queued meanwhile") {
  test::temp_dir dir;
  auto s = open_store(dir);
  committer c{*s, 64, true};
  // Led here, off the loop: so no group is being written when the next
  // submit comes (a group the committer thread led could still be).
  create(c, "a", true);
  create(c, "b", true);
  manual_loop loop;
  std::vector<std::string> done;  // callbacks, in order (all on this thread)
  auto record = [&](std::string what) {
    return [&done, what, self = std::this_thread::get_id()](op_result& r) {
      CHECK_FALSE(r.err);
      CHECK(std::this_thread::get_id() == self);
      done.push_back(what);
    };
  };
  {
    on_loop here{loop};
    REQUIRE(c.submit(message("a", "1"), record("a1"), true));
    // Posted, not written: the committer thread leaves it to the loop.
    CHECK(loop.size() == 1);
    // Queued behind it, whether they may lead or not.
    REQUIRE(c.submit(message("b", "1"), record("b1"), true));
    REQUIRE(c.submit(message("a", "2"), record("a2")));
    CHECK(loop.size() == 1);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds{50});
  CHECK(done.empty());
  CHECK(s->read_inbox("a", 0, 10).size() == 1);  // its init entry alone
  loop.run();  // one write of all three
  CHECK(done == std::vector<std::string>{"a1", "b1", "a2"});
  CHECK(s->read_inbox("a", 0, 10).size() == 3);
  CHECK(s->read_inbox("b", 0, 10).size() == 2);
  // Written: the next submit off the loop leads on its own thread again.
  REQUIRE(c.submit(message("b", "2"), record("b2"), true));
  CHECK(done.back() == "b2");
  c.stop();
}

TEST_CASE("committer: stop waits for a write posted to a loop, and writes it") {
  test::temp_dir dir;
  auto s = open_store(dir);
  committer c{*s, 64, true};
  create(c, "a", true);  // led here, as above
  manual_loop loop;
  std::atomic<int> calls{0};
  {
    on_loop here{loop};
    for (int i = 0; i < 3; ++i)
      REQUIRE(c.submit(message("a", std::to_string(i)), [&](op_result& r) {
        CHECK_FALSE(r.err);
        ++calls;
      }, true));
  }
  REQUIRE(loop.size() == 1);
  auto stopped = std::async(std::launch::async, [&] { c.stop(); });
  CHECK(stopped.wait_for(std::chrono::milliseconds{100}) == std::future_status::timeout);
  // Until stop() begins, more ops join the posted write; then they are
  // refused.
  std::size_t accepted = 0;
  while (accepted < 50000 && c.submit(message("a", "late"), nullptr)) {
    ++accepted;
    std::this_thread::yield();
  }
  CHECK(loop.size() == 1);
  loop.run();
  REQUIRE(stopped.wait_for(std::chrono::seconds{30}) == std::future_status::ready);
  CHECK(calls == 3);
  CHECK(s->read_inbox("a", 0, 100000).size() == 1 + 3 + accepted);
}
