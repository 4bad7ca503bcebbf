#pragma once

// Encoding of agent bundles (schema Bundle in records.capnp).

#include <string>
#include <string_view>
#include <vector>

#include "ticktock/runtime/error.hpp"

namespace ticktock::storage {

struct bundle_entry {
  std::string column;
  std::string key;
  std::string value;
};

struct bundle {
  std::string agent;
  std::vector<bundle_entry> entries;
};

std::string encode_bundle(const bundle& b);
/// corrupt_record on anything malformed.
expected<bundle> decode_bundle(std::string_view bytes);

}  // namespace ticktock::storage
