#include "ticktock/runtime/agent.hpp"

#include <algorithm>
#include <stdexcept>

#include "ticktock/runtime/context.hpp"
#include "ticktock/runtime/registry.hpp"
#include "ticktock/runtime/serializer.hpp"
#include "ticktock/runtime/text.hpp"
#include "ticktock/runtime/trigger.hpp"

namespace ticktock {

agent_base::~agent_base() = default;
record_reader::~record_reader() = default;

// -- context ----------------------------------------------------------------

void* context::state_ptr(const std::type_info& type) {
  if (type != agent_.state_typeid())
    throw std::logic_error(std::string{"ctx.state<T>(): T is not this agent's state type ("}
                           + agent_.state_typeid().name() + ")");
  return agent_.state_address();
}

namespace {

// Latest staged edit of (space, key), if any.
const kv_change* find_staged(const std::vector<kv_change>& edits, std::string_view space,
                             std::string_view key) {
  for (auto i = edits.rbegin(); i != edits.rend(); ++i)
    if (i->space == space && i->key == key)
      return &*i;
  return nullptr;
}

}  // namespace

std::optional<std::string> context::goal(std::string_view key) const {
  if (auto* c = find_staged(effects_.goals, {}, key))
    return c->value;
  return reader_ ? reader_->read_goal(key) : std::nullopt;
}

std::optional<std::string> context::memory(std::string_view space, std::string_view key) const {
  if (auto* c = find_staged(effects_.memory, space, key))
    return c->value;
  return reader_ ? reader_->read_memory(space, key) : std::nullopt;
}

namespace {

const identity::agent_keys& keys_of(const record_reader* reader) {
  const identity::agent_keys* k = reader ? reader->keys() : nullptr;
  if (!k)
    throw std::logic_error("this agent has no keys here (its host gives it no identity)");
  return *k;
}

}  // namespace

const identity::public_keys& context::public_keys() const { return keys_of(reader_).pub; }

std::optional<identity::public_keys> context::public_keys_of(std::string_view agent) const {
  if (agent == self_ && reader_ && reader_->keys())
    return reader_->keys()->pub;
  return reader_ ? reader_->public_keys_of(agent) : std::nullopt;
}

identity::signature context::sign(std::string_view bytes) const {
  if (identity::reserved_signing_domain(bytes))
    throw std::invalid_argument("sign: bytes starting with \"ticktock/\" are ticktock's own to sign");
  return identity::sign(keys_of(reader_), bytes);
}

expected<std::string> context::decrypt(std::string_view ciphertext) const {
  return identity::decrypt(keys_of(reader_), ciphertext);
}

// -- goal changes -------------------------------------------------------------

std::string goal_change::encode() const {
  encoder e;
  save_value(e, key);
  save_value(e, value);
  return e.take();
}

std::optional<goal_change> goal_change::from(const trigger& t) {
  if (t.kind != trigger_kind::goal_changed)
    return std::nullopt;
  goal_change g;
  decoder d{t.payload};
  if (!load_value(d, g.key) || !load_value(d, g.value) || !d.at_end() || g.key.empty())
    return std::nullopt;
  return g;
}

// -- trigger kinds ----------------------------------------------------------

namespace {

constexpr std::string_view kind_names[] = {
  "init", "message", "http", "ws", "alarm", "ctl", "compute_result", "container_result",
  "approval_decision", "goal_changed", "http_result",
};

}  // namespace

std::string_view to_string(trigger_kind kind) noexcept {
  auto i = static_cast<std::size_t>(kind);
  return i < std::size(kind_names) ? kind_names[i] : "unknown";
}

std::optional<trigger_kind> parse_trigger_kind(std::string_view name) noexcept {
  for (std::size_t i = 0; i < std::size(kind_names); ++i)
    if (kind_names[i] == name)
      return static_cast<trigger_kind>(i);
  return std::nullopt;
}

// -- registry ---------------------------------------------------------------

error agent_registry::add(std::string name, factory f) {
  // A type name goes into logs, the API's JSON and file names of no one's
  // choosing: letters, digits and -_.: only.
  auto plain = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
           || c == '_' || c == '.' || c == ':';
  };
  if (name.empty() || name.size() > 64 || !std::all_of(name.begin(), name.end(), plain) || !f)
    return error{errc::invalid_argument,
                 "agent type names are 1 to 64 letters, digits and -_.: with a factory (got "
                   + log_value(name.substr(0, 80)) + ")"};
  if (factories_.count(name) != 0)
    return error{errc::already_exists, "agent type '" + name + "' is already registered"};
  factories_.emplace(std::move(name), std::move(f));
  return {};
}

std::unique_ptr<agent_base> agent_registry::make(std::string_view name) const {
  auto i = factories_.find(name);
  return i == factories_.end() ? nullptr : i->second();
}

bool agent_registry::contains(std::string_view name) const {
  return factories_.find(name) != factories_.end();
}

std::vector<std::string> agent_registry::names() const {
  std::vector<std::string> out;
  for (auto& [name, f] : factories_)
    out.push_back(name);
  return out;
}

error agent_registry::check(std::string_view name) const {
  if (contains(name))
    return {};
  std::string known;
  for (auto& [n, f] : factories_)
    known += (known.empty() ? "" : ", ") + n;
  return error{errc::unknown_type,
               "unknown agent type '" + std::string{name.substr(0, 64)} + "' (known: " + known + ")"};
}

}  // namespace ticktock
