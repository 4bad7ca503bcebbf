#pragma once

#include <string>
#include <string_view>
#include <typeinfo>

#include "ticktock/runtime/serializer.hpp"

namespace ticktock {

class context;
struct trigger;

/// Type-erased base of every agent. Users derive from agent<State> instead.
/// An instance is driven by one tick at a time and is not thread-safe.
class agent_base {
public:
  virtual ~agent_base();

  /// THINK: handles one trigger. Stage effects on `ctx`. Throwing or calling
  /// ctx.fail() makes the tick commit nothing (the state is rolled back).
  virtual void on_trigger(context& ctx, const trigger& trig) = 0;

  /// Serializes the current state.
  virtual std::string save_state() const = 0;
  /// Replaces the state from bytes written by save_state. Returns false on
  /// malformed bytes and leaves the state unchanged.
  virtual bool load_state(std::string_view bytes) = 0;
  /// Resets the state to its default value (before the first tick).
  virtual void reset_state() = 0;

  /// A short JSON object describing the state for status views (e.g.
  /// {"count":3}); stored with the agent's meta after every committed tick.
  /// Empty by default.
  virtual std::string summary() const { return {}; }

  virtual void* state_address() noexcept = 0;
  virtual const std::type_info& state_typeid() const noexcept = 0;
};

/// Base class for user agents with typed state. State must be serializable by
/// ticktock::serializer<State> (aggregates are, by default).
///
///     struct counter_state { std::uint64_t count = 0; };
///     struct counter : ticktock::agent<counter_state> {
///       void on_trigger(ticktock::context&, const ticktock::trigger&) override {
///         ++state().count;
///       }
///     };
template <class State>
class agent : public agent_base {
public:
  using state_type = State;

  State& state() noexcept { return state_; }
  const State& state() const noexcept { return state_; }

  std::string save_state() const override { return to_bytes(state_); }
  bool load_state(std::string_view bytes) override {
    State loaded{};
    if (!from_bytes(bytes, loaded))
      return false;
    state_ = std::move(loaded);
    return true;
  }
  void reset_state() override { state_ = State{}; }
  void* state_address() noexcept override { return &state_; }
  const std::type_info& state_typeid() const noexcept override { return typeid(State); }

private:
  State state_{};
};

}  // namespace ticktock
