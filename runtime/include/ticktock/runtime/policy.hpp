#pragma once

// The policy gate's rule language: an ordered list of rules, first match
// wins, plus a default. Every effect that leaves the runtime (a compute job, a
// container session, outbound HTTP, a relay publish, a payment) is described
// as an `action` and evaluated to allow, deny or require_approval with a
// reason code the agent sees. This file is pure logic: it parses, prints and
// evaluates policies; parking actions, approvals and the kill switch belong to
// the caller. The language is documented in docs/policy.md.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ticktock/runtime/error.hpp"

namespace ticktock::policy {

/// What the gate says about an action.
enum class decision : std::uint8_t { allow = 0, deny = 1, require_approval = 2 };

/// "allow", "deny" or "require_approval".
std::string_view to_string(decision d) noexcept;

/// The decision named `text` (exactly as to_string prints it); nullopt for
/// anything else.
std::optional<decision> parse_decision(std::string_view text) noexcept;

/// The action kinds the language knows, in a stable order:
/// compute, container, http, nostr_publish, payment.
std::span<const std::string_view> action_kinds() noexcept;

/// True if `kind` is one of action_kinds().
bool is_action_kind(std::string_view kind) noexcept;

/// True if `code` is a valid reason code: [a-z0-9_]{1,64}.
bool is_reason_code(std::string_view code) noexcept;

/// An effect about to leave the runtime, as the gate sees it.
struct action {
  /// compute | container | http | nostr_publish | payment. An unknown kind is
  /// denied (reason `policy_unknown_action`) whatever the rules say.
  std::string kind;
  /// The id of the agent that asks.
  std::string agent;
  /// compute: "provider/model"; http: the URL's host; nostr_publish: one relay
  /// URL (evaluate each relay, see rules::evaluate_each) or "relays";
  /// container: the command's program. For http and nostr_publish it is
  /// matched case-insensitively and one trailing '.' of a host is ignored.
  std::string destination;
  /// The reservation in micro-USD.
  std::uint64_t cost = 0;
};

/// The gate's answer for one action.
struct verdict {
  decision what = decision::allow;
  /// A code matching [a-z0-9_]{1,64}: the matching rule's reason, or the
  /// default's.
  std::string reason;
  /// Index of the matching rule in the policy; -1 when the default (or the
  /// unknown-kind denial) decided.
  int rule = -1;

  friend bool operator==(const verdict&, const verdict&) = default;
};

/// One rule: all of its conditions must hold for it to match. An empty list
/// or an absent bound is no condition.
struct rule {
  std::vector<std::string> actions;       ///< action kinds; any one matches
  std::vector<std::string> agents;        ///< agent id globs; any one matches
  std::vector<std::string> destinations;  ///< destination globs; any one matches
  std::optional<std::uint64_t> cost_over;     ///< matches when cost > value
  std::optional<std::uint64_t> cost_at_most;  ///< matches when cost <= value
  decision what = decision::deny;
  std::string reason;   ///< always set; parse fills in the derived default
  std::string comment;  ///< free text for humans; never evaluated

  /// True if every condition of this rule holds for `a`.
  bool matches(const action& a) const;

  friend bool operator==(const rule&, const rule&) = default;
};

/// Limits of the language; a policy beyond them is rejected by parse.
inline constexpr std::size_t max_policy_bytes = 64 * 1024;
inline constexpr std::size_t max_rules = 1000;
inline constexpr std::size_t max_glob_bytes = 256;
inline constexpr std::size_t max_comment_bytes = 1024;

/// `*` matches any run of characters (dots and slashes included), `?` exactly
/// one; every other character matches itself (ASCII case folded when
/// `ignore_case`). There is no escape. Linear in memory, O(|glob|*|text|) at
/// worst in time.
bool glob_match(std::string_view glob, std::string_view text, bool ignore_case) noexcept;

/// A parsed, validated policy. Immutable after parse; evaluate and to_json
/// are const and safe to call from any number of threads.
class rules {
public:
  /// Parses a policy document (see docs/policy.md). Strict: unknown fields,
  /// wrong types, unknown decisions or action kinds, malformed reason codes,
  /// empty globs or lists, negative or non-integer costs, an empty cost range,
  /// more than max_rules rules or more than max_policy_bytes bytes fail with
  /// errc::invalid_argument and a message that starts with the path of the
  /// offending value, e.g. "rules[2].when.cost_ovr: unknown field". Never
  /// throws and never crashes, whatever the input.
  static expected<rules> parse(std::string_view json);

  /// The policy as canonical JSON, which parse accepts and which evaluates
  /// exactly like this policy. Comments are kept; every rule's reason is
  /// written out.
  std::string to_json() const;

  /// The first matching rule's decision and reason, else the default's.
  /// Actions of an unknown kind are denied with reason
  /// `policy_unknown_action`, so a misspelt kind fails closed.
  verdict evaluate(const action& a) const;

  /// Evaluates `a` once per destination (e.g. each relay of a publish) and
  /// returns the most restrictive verdict: the first deny if any, else the
  /// first require_approval, else the first allow. With no destinations it
  /// evaluates `a` as it is.
  verdict evaluate_each(const action& a, std::span<const std::string> destinations) const;

  /// A policy with no rules whose default is allow.
  static rules allow_all();

  /// The rules in order.
  const std::vector<rule>& list() const noexcept { return rules_; }
  /// The decision and reason when no rule matches.
  decision default_decision() const noexcept { return default_; }
  const std::string& default_reason() const noexcept { return default_reason_; }

  friend bool operator==(const rules&, const rules&) = default;

private:
  std::vector<rule> rules_;
  decision default_ = decision::allow;
  std::string default_reason_ = "policy_default_allow";
};

}  // namespace ticktock::policy
