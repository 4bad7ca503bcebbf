// The store under injected disk faults: write failure, fsync failure, disk
// full. A failed write reports storage_failure and commits nothing (not even
// after a restart); what was acknowledged before stays; the store recovers
// by itself once the disk takes writes again.

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../store_helpers.hpp"
#include "ticktock/storage/faults.hpp"
#include "ticktock/storage/store.hpp"

using namespace ticktock;
using namespace ticktock::storage;
using namespace std::chrono_literals;

namespace {

using test::make_agent;
using test::message;

std::unique_ptr<store> open_store(const test::temp_dir& dir, durability d,
                                  std::shared_ptr<fault_injector> faults = nullptr) {
  store_options o;
  o.durability = d;
  o.faults = std::move(faults);
  return test::open_store(dir, std::move(o));
}

op_result apply1(store& s, write_op op) {
  std::vector<write_op> ops;
  ops.push_back(std::move(op));
  return std::move(s.apply(ops).front());
}

// Applies `op` until it commits. Recovery backs off (up to 1 s) between
// attempts, so this retries for a bounded while.
op_result apply_until_ok(store& s, const write_op& op) {
  auto deadline = std::chrono::steady_clock::now() + 30s;
  op_result r;
  for (int i = 0; i < 3000 && std::chrono::steady_clock::now() < deadline; ++i) {
    r = apply1(s, op);
    if (!r.err)
      return r;
    std::this_thread::sleep_for(5ms);
  }
  FAIL("the store did not recover: " << r.err.to_string());
  return r;
}

std::vector<std::string> payloads(const store& s, const std::string& id) {
  std::vector<std::string> out;
  for (auto& e : s.read_inbox(id, 0, 1000))
    if (e.kind == trigger_kind::message)
      out.push_back(e.payload);
  return out;
}

struct fault_case {
  const char* name;
  fault kind;
  durability mode;
  const char* status_text;  // in RocksDB's status of the failed commit
};

const fault_case cases[] = {
  {"write failure", fault::write, durability::async, "injected write failure"},
  {"fsync failure", fault::sync, durability::sync, "injected fsync failure"},
  {"disk full", fault::disk_full, durability::async, "No space left on device"},
};

void switch_on(fault_injector& f, fault kind) {
  switch (kind) {
    case fault::write: f.fail_writes(); break;
    case fault::sync: f.fail_syncs(); break;
    case fault::disk_full: f.disk_full(); break;
    case fault::none: break;
  }
}

}  // namespace

TEST_CASE("under each disk fault a write fails with storage_failure, commits nothing, and the "
          "store recovers by itself") {
  for (auto& c : cases) {
    DYNAMIC_SECTION(c.name) {
      test::temp_dir dir;
      auto faults = std::make_shared<fault_injector>();
      auto s = open_store(dir, c.mode, faults);
      REQUIRE_FALSE(apply1(*s, make_agent("a")).err);
      for (auto p : {"m1", "m2", "m3"})
        REQUIRE_FALSE(apply1(*s, message("a", p)).err);

      switch_on(*faults, c.kind);
      auto failed = apply1(*s, message("a", "lost"));
      CHECK(failed.err.code() == errc::storage_failure);
      CHECK_THAT(failed.err.message(), Catch::Contains("commit of 1 operation failed"));
      CHECK_THAT(failed.err.message(), Catch::Contains(c.status_text));
      CHECK(faults->injected(c.kind) > 0);
      // While the fault lasts: writes keep failing, reads keep working.
      for (int i = 0; i < 3; ++i)
        CHECK(apply1(*s, message("a", "refused")).err.code() == errc::storage_failure);
      CHECK(payloads(*s, "a") == std::vector<std::string>{"m1", "m2", "m3"});
      CHECK(s->get_agent("a"));

      faults->clear();
      auto ok = apply_until_ok(*s, message("a", "m4"));
      CHECK(ok.seq == 5);  // init is 1, m1..m3 are 2..4: no seq was used up
      CHECK(payloads(*s, "a") == std::vector<std::string>{"m1", "m2", "m3", "m4"});
      REQUIRE_FALSE(apply1(*s, message("a", "m5")).err);

      // After a restart: every acknowledged write, none of the failed ones.
      s.reset();
      s = open_store(dir, c.mode);
      CHECK(payloads(*s, "a") == std::vector<std::string>{"m1", "m2", "m3", "m4", "m5"});
      CHECK(apply1(*s, message("a", "m6")).seq == 7);
    }
  }
}

TEST_CASE("a write whose fsync failed is not replayed from the WAL by a restart during the fault") {
  // The failed write's bytes reached the WAL (only its fsync failed); the
  // store cuts them off when it reopens, or a restart would commit a write
  // that was reported as failed.
  test::temp_dir dir;
  auto faults = std::make_shared<fault_injector>();
  {
    auto s = open_store(dir, durability::sync, faults);
    REQUIRE_FALSE(apply1(*s, make_agent("a")).err);
    REQUIRE_FALSE(apply1(*s, message("a", "kept")).err);
    faults->fail_next(fault::sync, 1);
    CHECK(apply1(*s, message("a", "failed")).err.code() == errc::storage_failure);
    CHECK(faults->injected(fault::sync) == 1);
    // The next write recovers (reopen, WAL cut back) and commits.
    auto r = apply_until_ok(*s, message("a", "after"));
    CHECK(r.seq == 3);
    CHECK(payloads(*s, "a") == std::vector<std::string>{"kept", "after"});
  }
  auto s = open_store(dir, durability::sync);
  CHECK(payloads(*s, "a") == std::vector<std::string>{"kept", "after"});
}

TEST_CASE("fail_next fails exactly the next n operations, and the counters count them") {
  fault_injector f;
  CHECK_FALSE(f.active());
  f.fail_next(fault::disk_full, 2);
  CHECK(f.active());
  CHECK(f.on_sync() == fault::none);
  CHECK(f.on_append() == fault::disk_full);
  CHECK(f.on_append() == fault::disk_full);
  CHECK(f.on_append() == fault::none);
  CHECK_FALSE(f.active());
  f.fail_next(fault::sync, 1);
  CHECK(f.on_append() == fault::none);
  CHECK(f.on_sync() == fault::sync);
  CHECK(f.on_sync() == fault::none);
  f.fail_writes();
  CHECK(f.on_append() == fault::write);
  f.clear();
  CHECK(f.on_append() == fault::none);
  CHECK(f.injected(fault::disk_full) == 2);
  CHECK(f.injected(fault::sync) == 1);
  CHECK(f.injected(fault::write) == 1);
  CHECK(f.injected() == 4);
}

TEST_CASE("a group whose commit fails reports storage_failure for every op and commits none") {
  test::temp_dir dir;
  auto faults = std::make_shared<fault_injector>();
  auto s = open_store(dir, durability::async, faults);
  REQUIRE_FALSE(apply1(*s, make_agent("a")).err);
  REQUIRE_FALSE(apply1(*s, make_agent("b")).err);
  faults->fail_writes();
  std::vector<write_op> ops;
  ops.push_back(message("a", "x"));
  ops.push_back(message("b", "y"));
  ops.push_back(message("nobody", "z"));
  auto results = s->apply(ops);
  REQUIRE(results.size() == 3);
  for (auto& r : results) {
    CHECK(r.err.code() == errc::storage_failure);
    CHECK(r.delivered.empty());
  }
  faults->clear();
  apply_until_ok(*s, message("a", "x2"));
  CHECK(payloads(*s, "a") == std::vector<std::string>{"x2"});
  CHECK(payloads(*s, "b").empty());
}
