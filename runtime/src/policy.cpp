#include "ticktock/runtime/policy.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <exception>
#include <utility>

#include <boost/json.hpp>

#include "ticktock/runtime/detail/json_check.hpp"
#include "ticktock/runtime/nostr.hpp"
#include "ticktock/runtime/text.hpp"

namespace ticktock::policy {

namespace json = boost::json;
using detail::index_path;
using detail::member_path;
using detail::quoted;

namespace {

constexpr std::array<std::string_view, 5> kinds = {"compute", "container", "http",
                                                   "nostr_publish", "payment"};

constexpr std::string_view unknown_action_reason = "policy_unknown_action";

char fold(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Hosts and relay URLs are case-insensitive; provider/model names and
// programs are compared as written.
bool folds_case(std::string_view kind) noexcept {
  return kind == "http" || kind == "nostr_publish";
}

std::string rule_reason(decision d) { return "policy_" + std::string{to_string(d)}; }
std::string default_reason_for(decision d) {
  return "policy_default_" + std::string{to_string(d)};
}

// -- error messages -----------------------------------------------------------

error fail(const std::string& path, std::string_view what) {
  return error{errc::invalid_argument, path + ": " + std::string{what}};
}

std::string_view kind_of(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "a list";
    case json::kind::object: return "an object";
  }
  return "a value";
}

std::string not_a(std::string_view expected_what, const json::value& v) {
  return "must be " + std::string{expected_what} + ", not " + std::string{kind_of(v)};
}

error check_syntax(std::string_view text) {
  auto scan = detail::scan_json(text);
  if (!scan.duplicate.empty())
    return fail(scan.duplicate, "duplicate field");
  if (!scan.error.empty())
    return fail("policy", "not valid JSON (" + scan.error + ")");
  return {};
}

// -- values -------------------------------------------------------------------

expected<std::uint64_t> parse_cost(const json::value& v, const std::string& path) {
  if (const auto* i = v.if_int64()) {
    if (*i < 0)
      return fail(path, "must not be negative, got " + std::to_string(*i));
    return static_cast<std::uint64_t>(*i);
  }
  if (const auto* u = v.if_uint64())
    return *u;
  if (v.is_double()) {
    // Shortest form ("1.5"), not Boost.JSON's "1.5E0".
    char buf[32];
    auto end = std::to_chars(buf, buf + sizeof buf, v.get_double()).ptr;
    return fail(path, "must be a whole number of micro-USD, digits only, up to "
                        "18446744073709551615; got " + std::string{buf, end});
  }
  return fail(path, not_a("a whole number of micro-USD", v));
}

error check_kind(std::string_view s, const std::string& path) {
  if (is_action_kind(s))
    return {};
  return fail(path, "unknown action kind " + quoted(s) +
                        " (expected compute, container, http, nostr_publish or payment)");
}

error check_glob(std::string_view s, const std::string& path) {
  if (s.empty())
    return fail(path, "must not be an empty pattern");
  if (s.size() > max_glob_bytes)
    return fail(path, "pattern of " + std::to_string(s.size()) + " bytes, more than the " +
                          std::to_string(max_glob_bytes) + " allowed");
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return fail(path, "must not contain control characters");
  return {};
}

// A string or a non-empty list of strings, each checked by `check`.
template <class Check>
expected<std::vector<std::string>> parse_strings(const json::value& v, const std::string& path,
                                                 Check check) {
  std::vector<std::string> out;
  if (const auto* s = v.if_string()) {
    if (auto err = check(std::string_view{*s}, path))
      return err;
    out.emplace_back(*s);
    return out;
  }
  const auto* arr = v.if_array();
  if (arr == nullptr)
    return fail(path, not_a("a string or a list of strings", v));
  if (arr->empty())
    return fail(path, "must not be an empty list");
  for (std::size_t i = 0; i < arr->size(); ++i) {
    std::string p = index_path(path, i);
    const auto* s = (*arr)[i].if_string();
    if (s == nullptr)
      return fail(p, not_a("a string", (*arr)[i]));
    if (auto err = check(std::string_view{*s}, p))
      return err;
    out.emplace_back(*s);
  }
  return out;
}

expected<decision> parse_decision_value(const json::value& v, const std::string& path) {
  const auto* s = v.if_string();
  if (s == nullptr)
    return fail(path, not_a("a string", v));
  if (auto d = parse_decision(std::string_view{*s}))
    return *d;
  return fail(path, "unknown decision " + quoted(std::string_view{*s}) +
                        " (expected allow, deny or require_approval)");
}

expected<std::string> parse_reason(const json::value& v, const std::string& path) {
  const auto* s = v.if_string();
  if (s == nullptr)
    return fail(path, not_a("a string", v));
  if (!is_reason_code(std::string_view{*s}))
    return fail(path, "bad reason code " + quoted(std::string_view{*s}) +
                          " (expected 1 to 64 of a-z, 0-9 and _)");
  return std::string{*s};
}

// -- rules --------------------------------------------------------------------

error parse_when(const json::value& v, const std::string& path, rule& r) {
  const auto* obj = v.if_object();
  if (obj == nullptr)
    return fail(path, not_a("an object", v));
  for (const auto& [key, value] : *obj) {
    std::string_view k{key};
    std::string p = member_path(path, k);
    if (k == "action") {
      auto list = parse_strings(value, p, check_kind);
      if (!list)
        return list.error_value();
      r.actions = std::move(*list);
    } else if (k == "agent") {
      auto list = parse_strings(value, p, check_glob);
      if (!list)
        return list.error_value();
      r.agents = std::move(*list);
    } else if (k == "destination") {
      auto list = parse_strings(value, p, check_glob);
      if (!list)
        return list.error_value();
      r.destinations = std::move(*list);
    } else if (k == "cost_over" || k == "cost_at_most") {
      auto cost = parse_cost(value, p);
      if (!cost)
        return cost.error_value();
      (k == "cost_over" ? r.cost_over : r.cost_at_most) = *cost;
    } else {
      return fail(p, "unknown field (expected action, agent, destination, cost_over or "
                     "cost_at_most)");
    }
  }
  if (r.cost_over && r.cost_at_most && *r.cost_over >= *r.cost_at_most)
    return fail(path, "cost_over (" + std::to_string(*r.cost_over) +
                          ") must be less than cost_at_most (" +
                          std::to_string(*r.cost_at_most) + "), or the rule never matches");
  return {};
}

expected<rule> parse_rule(const json::value& v, const std::string& path) {
  const auto* obj = v.if_object();
  if (obj == nullptr)
    return fail(path, not_a("an object", v));
  rule r;
  bool has_decision = false;
  for (const auto& [key, value] : *obj) {
    std::string_view k{key};
    std::string p = member_path(path, k);
    if (k == "when") {
      if (auto err = parse_when(value, p, r))
        return err;
    } else if (k == "decision") {
      auto d = parse_decision_value(value, p);
      if (!d)
        return d.error_value();
      r.what = *d;
      has_decision = true;
    } else if (k == "reason") {
      auto reason = parse_reason(value, p);
      if (!reason)
        return reason.error_value();
      r.reason = std::move(*reason);
    } else if (k == "comment") {
      const auto* s = value.if_string();
      if (s == nullptr)
        return fail(p, not_a("a string", value));
      if (s->size() > max_comment_bytes)
        return fail(p, "comment of " + std::to_string(s->size()) + " bytes, more than the " +
                           std::to_string(max_comment_bytes) + " allowed");
      r.comment = std::string{*s};
    } else {
      return fail(p, "unknown field (expected when, decision, reason or comment)");
    }
  }
  if (!has_decision)
    return fail(member_path(path, "decision"), "missing (allow, deny or require_approval)");
  if (r.reason.empty())
    r.reason = rule_reason(r.what);
  return r;
}

// -- printing -----------------------------------------------------------------

json::value strings_value(const std::vector<std::string>& list) {
  if (list.size() == 1)
    return json::string{list.front()};
  json::array arr;
  for (const auto& s : list)
    arr.emplace_back(json::string{s});
  return arr;
}

}  // namespace

// -- free functions -------------------------------------------------------------

std::string_view to_string(decision d) noexcept {
  switch (d) {
    case decision::allow: return "allow";
    case decision::deny: return "deny";
    case decision::require_approval: return "require_approval";
  }
  return "deny";
}

std::optional<decision> parse_decision(std::string_view text) noexcept {
  if (text == "allow")
    return decision::allow;
  if (text == "deny")
    return decision::deny;
  if (text == "require_approval")
    return decision::require_approval;
  return std::nullopt;
}

std::span<const std::string_view> action_kinds() noexcept { return kinds; }

bool is_action_kind(std::string_view kind) noexcept {
  return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}

bool is_reason_code(std::string_view code) noexcept {
  return !code.empty() && code.size() <= 64 &&
         std::all_of(code.begin(), code.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
         });
}

bool glob_match(std::string_view glob, std::string_view text, bool ignore_case) noexcept {
  auto same = [ignore_case](char a, char b) {
    return ignore_case ? fold(a) == fold(b) : a == b;
  };
  // Greedy with backtracking to the last '*': each '*' only ever moves
  // forward, so this is O(|glob| * |text|) at worst and needs no memory.
  std::size_t g = 0, t = 0;
  std::size_t star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (g < glob.size() && glob[g] == '*') {
      star = g++;
      mark = t;
    } else if (g < glob.size() && (glob[g] == '?' || same(glob[g], text[t]))) {
      ++g;
      ++t;
    } else if (star != std::string_view::npos) {
      g = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (g < glob.size() && glob[g] == '*')
    ++g;
  return g == glob.size();
}

// -- rule -----------------------------------------------------------------------

bool rule::matches(const action& a) const {
  if (!actions.empty() && std::find(actions.begin(), actions.end(), a.kind) == actions.end())
    return false;
  if (cost_over && !(a.cost > *cost_over))
    return false;
  if (cost_at_most && !(a.cost <= *cost_at_most))
    return false;
  if (!agents.empty() &&
      std::none_of(agents.begin(), agents.end(),
                   [&](const std::string& g) { return glob_match(g, a.agent, false); }))
    return false;
  if (!destinations.empty()) {
    bool ignore_case = folds_case(a.kind);
    std::string_view dest = a.destination;
    // "api.github.com." names the same host as "api.github.com".
    if (a.kind == "http" && dest.size() > 1 && dest.back() == '.')
      dest.remove_suffix(1);
    // A relay without a path, "wss://r" (nostr::relay_policy_name of the pool's
    // "wss://r/"), is matched by a rule that writes it either way.
    std::string relay, with_slash;
    if (a.kind == "nostr_publish") {
      relay = nostr::relay_policy_name(dest);
      auto scheme = relay.find("://");
      if (scheme != std::string::npos && relay.find('/', scheme + 3) == std::string::npos)
        with_slash = relay + "/";
      dest = relay;
    }
    if (std::none_of(destinations.begin(), destinations.end(), [&](const std::string& g) {
          return glob_match(g, dest, ignore_case)
                 || (!with_slash.empty() && glob_match(g, with_slash, ignore_case));
        }))
      return false;
  }
  return true;
}

// -- rules ----------------------------------------------------------------------

expected<rules> rules::parse(std::string_view text) {
  if (text.size() > max_policy_bytes)
    return fail("policy", std::to_string(text.size()) + " bytes, more than the " +
                              std::to_string(max_policy_bytes) + " allowed");
  try {
    if (auto err = check_syntax(text))
      return err;
    json::error_code ec;
    json::value doc = json::parse(json::string_view{text.data(), text.size()}, ec);
    if (ec)
      return fail("policy", "not valid JSON (" + ec.message() + ")");
    const auto* obj = doc.if_object();
    if (obj == nullptr)
      return fail("policy", not_a("a JSON object", doc));

    rules out;
    bool has_default_reason = false;
    for (const auto& [key, value] : *obj) {
      std::string_view k{key};
      std::string p = member_path("", k);
      if (k == "rules") {
        const auto* arr = value.if_array();
        if (arr == nullptr)
          return fail(p, not_a("a list", value));
        if (arr->size() > max_rules)
          return fail(p, std::to_string(arr->size()) + " rules, more than the " +
                             std::to_string(max_rules) + " allowed");
        out.rules_.reserve(arr->size());
        for (std::size_t i = 0; i < arr->size(); ++i) {
          auto r = parse_rule((*arr)[i], index_path(p, i));
          if (!r)
            return r.error_value();
          out.rules_.push_back(std::move(*r));
        }
      } else if (k == "default") {
        if (value.is_string()) {
          auto d = parse_decision_value(value, p);
          if (!d)
            return d.error_value();
          out.default_ = *d;
          continue;
        }
        const auto* def = value.if_object();
        if (def == nullptr)
          return fail(p, not_a("a decision or an object with decision and reason", value));
        bool has_decision = false;
        for (const auto& [dkey, dvalue] : *def) {
          std::string_view dk{dkey};
          std::string dp = member_path(p, dk);
          if (dk == "decision") {
            auto d = parse_decision_value(dvalue, dp);
            if (!d)
              return d.error_value();
            out.default_ = *d;
            has_decision = true;
          } else if (dk == "reason") {
            auto reason = parse_reason(dvalue, dp);
            if (!reason)
              return reason.error_value();
            out.default_reason_ = std::move(*reason);
            has_default_reason = true;
          } else {
            return fail(dp, "unknown field (expected decision or reason)");
          }
        }
        if (!has_decision)
          return fail(member_path(p, "decision"), "missing (allow, deny or require_approval)");
      } else {
        return fail(p, "unknown field (expected rules or default)");
      }
    }
    if (!has_default_reason)
      out.default_reason_ = default_reason_for(out.default_);
    return out;
  } catch (const std::exception& e) {
    // Only allocation can throw here; a policy is at most 64 KiB.
    return fail("policy", std::string{"could not be parsed ("} + e.what() + ")");
  }
}

std::string rules::to_json() const {
  json::array list;
  list.reserve(rules_.size());
  for (const auto& r : rules_) {
    json::object when;
    if (!r.actions.empty())
      when["action"] = strings_value(r.actions);
    if (!r.agents.empty())
      when["agent"] = strings_value(r.agents);
    if (!r.destinations.empty())
      when["destination"] = strings_value(r.destinations);
    if (r.cost_over)
      when["cost_over"] = *r.cost_over;
    if (r.cost_at_most)
      when["cost_at_most"] = *r.cost_at_most;
    json::object o;
    o["when"] = std::move(when);
    o["decision"] = to_string(r.what);
    o["reason"] = r.reason;
    if (!r.comment.empty())
      o["comment"] = r.comment;
    list.emplace_back(std::move(o));
  }
  json::object doc;
  doc["rules"] = std::move(list);
  if (default_reason_ == default_reason_for(default_)) {
    doc["default"] = to_string(default_);
  } else {
    json::object def;
    def["decision"] = to_string(default_);
    def["reason"] = default_reason_;
    doc["default"] = std::move(def);
  }
  return json_text(doc);
}

verdict rules::evaluate(const action& a) const {
  if (!is_action_kind(a.kind))
    return verdict{decision::deny, std::string{unknown_action_reason}, -1};
  for (std::size_t i = 0; i < rules_.size(); ++i)
    if (rules_[i].matches(a))
      return verdict{rules_[i].what, rules_[i].reason, static_cast<int>(i)};
  return verdict{default_, default_reason_, -1};
}

verdict rules::evaluate_each(const action& a, std::span<const std::string> destinations) const {
  if (destinations.empty())
    return evaluate(a);
  auto rank = [](decision d) {
    switch (d) {
      case decision::deny: return 2;
      case decision::require_approval: return 1;
      case decision::allow: return 0;
    }
    return 2;
  };
  std::optional<verdict> worst;
  action each = a;
  for (const auto& d : destinations) {
    each.destination = d;
    verdict v = evaluate(each);
    if (!worst || rank(v.what) > rank(worst->what))
      worst = std::move(v);
    if (worst->what == decision::deny)
      break;
  }
  return *worst;
}

rules rules::allow_all() { return rules{}; }

}  // namespace ticktock::policy
