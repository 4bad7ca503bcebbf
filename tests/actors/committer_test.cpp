// The committer against a real store: every op committed once, in
// submission order per submitter, callbacks that submit more work, and
// stop() writing what is queued; with the committer thread leading, and with
// submitters leading on their own threads (async durability).

#include <catch2/catch.hpp>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include "../../actors/src/committer.hpp"
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
