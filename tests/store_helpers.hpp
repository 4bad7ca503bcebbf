#pragma once

// Helpers of the tests that drive a storage::store directly.

#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "temp_dir.hpp"
#include "ticktock/storage/store.hpp"

namespace ticktock::test {

/// Opens a store in `dir` with options `o` (its dir is set here).
inline std::unique_ptr<storage::store> open_store(const temp_dir& dir,
                                                  storage::store_options o = {}) {
  o.dir = dir.path();
  auto s = storage::store::open(o);
  REQUIRE(s);
  return std::move(*s);
}

/// Creates agent `id` of type "t" with its init trigger.
inline storage::create_op make_agent(const std::string& id) {
  storage::create_op op;
  op.meta.id = id;
  op.meta.type = std::string(1, 't');  // not = "t": GCC 12 warns falsely (-Wrestrict)
  op.init.kind = trigger_kind::init;
  return op;
}

/// A message to `id`, deduplicated by `key` if not empty.
inline storage::enqueue_op message(const std::string& id, std::string payload,
                                   std::string key = {}) {
  storage::inbox_entry e;
  e.payload = std::move(payload);
  e.idempotency_key = std::move(key);
  return storage::enqueue_op{id, std::move(e), 0};
}

}  // namespace ticktock::test
