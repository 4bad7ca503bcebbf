#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ticktock/runtime/agent.hpp"
#include "ticktock/runtime/error.hpp"

namespace ticktock {

/// Maps agent type names to factories. Fill it before opening a node; it is
/// read concurrently afterwards and must not change then.
class agent_registry {
public:
  using factory = std::function<std::unique_ptr<agent_base>()>;

  /// Registers `f` under `name`. Fails with invalid_argument for an empty or
  /// over-long name and already_exists for a duplicate.
  error add(std::string name, factory f);

  /// Registers agent class A (default-constructible) under `name`.
  template <class A>
  error add(std::string name) {
    return add(std::move(name), [] { return std::unique_ptr<agent_base>(new A()); });
  }

  /// Creates an agent of type `name`, or nullptr if the name is unknown.
  std::unique_ptr<agent_base> make(std::string_view name) const;
  bool contains(std::string_view name) const;
  std::vector<std::string> names() const;

  /// Returns unknown_type naming the registered types if `name` is unknown.
  error check(std::string_view name) const;

private:
  std::map<std::string, factory, std::less<>> factories_;
};

}  // namespace ticktock
