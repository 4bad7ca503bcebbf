#include "gate.hpp"

#include <boost/json.hpp>

#include "ticktock/runtime/detail/json_check.hpp"

#include <algorithm>
#include <mutex>

namespace ticktock::detail {

namespace json = boost::json;

namespace {

policy::verdict stricter(policy::verdict a, policy::verdict b) {
  auto rank = [](policy::decision d) {
    return d == policy::decision::deny ? 2 : d == policy::decision::require_approval ? 1 : 0;
  };
  return rank(b.what) > rank(a.what) ? b : a;
}

policy::verdict kill_switch_verdict() {
  return {policy::decision::deny, "kill_switch", -1};
}

bool is_policy_key(std::string_view key) {
  return key == setting::global_policy || key.starts_with("policy/");
}

// An agent's policy file ("policy/<agent>/<service>") judges only its agent's
// actions of its service: a rule that can match nothing else would look in
// force and never be. Refused when written, naming the rule.
error check_agent_policy(std::string_view key, const policy::rules& r) {
  auto rest = key.substr(7);
  auto slash = rest.rfind('/');
  auto agent = rest.substr(0, slash);
  auto service = rest.substr(slash + 1);
  auto action = service == "containers" ? std::string_view{"container"} : service;
  for (std::size_t i = 0; i < r.list().size(); ++i) {
    auto& rule = r.list()[i];
    auto where = "rules[" + std::to_string(i) + "].when.";
    if (!rule.actions.empty()
        && std::find(rule.actions.begin(), rule.actions.end(), action) == rule.actions.end())
      return error{errc::invalid_argument,
                   where + "action: this is the agent's " + std::string{service}
                     + "/policy, which judges only " + std::string{action}
                     + " actions (write rules for others in their own file or in /v1/policy)"};
    if (!rule.agents.empty() && std::none_of(rule.agents.begin(), rule.agents.end(), [&](auto& g) {
          return policy::glob_match(g, agent, false);
        }))
      return error{errc::invalid_argument,
                   where + "agent: never matches: this policy judges agent '" + std::string{agent}
                     + "' alone (write rules for others in /v1/policy)"};
  }
  return {};
}

}  // namespace

gate::gate(storage::store& store, const node_options& options)
  : store_(store), options_(options) {
  killed_ = store_.get_setting(setting::kill_switch).value_or("") == "1";
  prices_ = std::make_shared<compute::price_table>(compute::price_table::defaults());
  if (auto p = store_.get_setting(setting::prices))
    if (auto t = compute::price_table::parse(*p))
      prices_ = std::make_shared<compute::price_table>(std::move(*t));
}

std::shared_ptr<const policy::rules> gate::rules_for(const std::string& key) const {
  std::uint64_t seen;
  {
    std::shared_lock<std::shared_mutex> lock{mtx_};
    if (auto i = policies_.find(key); i != policies_.end())
      return i->second;
    seen = version_.load(std::memory_order_relaxed);
  }
  std::shared_ptr<const policy::rules> rules;
  if (auto v = store_.get_setting(key)) {
    if (auto r = policy::rules::parse(*v))
      rules = std::make_shared<policy::rules>(std::move(*r));
    else  // validated on write; a corrupt record fails closed
      rules = std::make_shared<policy::rules>(
        *policy::rules::parse(R"({"rules":[],"default":"deny"})"));
  }
  if (after_read_for_test)
    after_read_for_test();
  std::unique_lock<std::shared_mutex> lock{mtx_};
  // A setting installed since the read may be newer than what was read:
  // use the read this once, but cache only what no install has overtaken.
  if (version_.load(std::memory_order_relaxed) != seen)
    return rules;
  return policies_.emplace(key, std::move(rules)).first->second;
}

policy::verdict gate::decide(const policy::action& a, const std::string& service_key) const {
  if (killed())
    return kill_switch_verdict();
  policy::verdict v{policy::decision::allow, "allowed", -1};
  if (auto global = rules_for(std::string{setting::global_policy}))
    v = global->evaluate(a);
  if (!service_key.empty())
    if (auto own = rules_for(service_key))
      v = stricter(v, own->evaluate(a));
  return v;
}

assessment gate::assess(const std::string& agent, const job_request& job) const {
  assessment out;
  if (job.service == "compute") {
    out.action = "compute";
    auto req = compute::parse_request(job.request);
    if (!req) {
      out.error = "compute request: " + req.error_value().message();
      return out;
    }
    out.destination = req->provider + "/" + req->model;
    auto cost = prices()->max_cost(*req);
    if (!cost) {
      out.error = "compute request: " + cost.error_value().message();
      return out;
    }
    out.cost = *cost;
    out.request = compute::to_json(*req);
    out.verdict = decide({"compute", agent, out.destination, out.cost},
                         setting::agent_policy(agent, "compute"));
  } else if (job.service == "containers") {
    out.action = "container";
    auto& svc = options_.services;
    auto spec = sandbox::parse_request(job.request, svc.container_maxima, svc.container_defaults);
    if (!spec) {
      out.error = "container request: " + spec.error_value().message();
      return out;
    }
    out.destination = spec->argv.front();
    auto secs = spec->lim.cpu_seconds;
    auto price = svc.container_price_per_cpu_second;
    out.cost = price != 0 && secs > UINT64_MAX / price ? UINT64_MAX : secs * price;
    out.request = std::string{job.request};
    out.verdict = decide({"container", agent, out.destination, out.cost},
                         setting::agent_policy(agent, "containers"));
  } else if (job.service == "http") {
    out.action = "http";
    auto& svc = options_.services;
    auto req = fetch::parse_request(job.request, svc.http_limits);
    if (!req) {
      out.error = "http request: " + req.error_value().message();
      return out;
    }
    out.destination = req->parts.host;
    out.cost = svc.http_price_per_request;
    out.request = fetch::to_json(*req);
    out.verdict = decide({"http", agent, out.destination, out.cost},
                         setting::agent_policy(agent, "http"));
  } else {
    out.error = "unknown service '" + job.service + "' (compute, containers or http)";
  }
  return out;
}

policy::verdict gate::assess_publish(const std::string& agent,
                                     const std::vector<std::string>& relays) const {
  if (killed())
    return kill_switch_verdict();
  auto global = rules_for(std::string{setting::global_policy});
  if (!global)
    return {policy::decision::allow, "allowed", -1};
  // The pool's normalized URLs; the rules match them with or without an empty
  // path's "/" (policy::rule::matches).
  return global->evaluate_each({"nostr_publish", agent, "relays", 0}, relays);
}

std::shared_ptr<const compute::price_table> gate::prices() const {
  std::shared_lock<std::shared_mutex> lock{mtx_};
  return prices_;
}

tick_limits gate::limits_for(const std::string& id) const {
  auto key = setting::agent_limits(id);
  std::uint64_t seen;
  {
    std::shared_lock<std::shared_mutex> lock{mtx_};
    if (auto i = limits_.find(key); i != limits_.end())
      return i->second ? *i->second : options_.limits;
    seen = version_.load(std::memory_order_relaxed);
  }
  std::optional<tick_limits> own;
  if (auto v = store_.get_setting(key))
    if (auto l = parse_limits(*v, options_.limits))
      own = *l;
  if (after_read_for_test)
    after_read_for_test();
  std::unique_lock<std::shared_mutex> lock{mtx_};
  if (version_.load(std::memory_order_relaxed) == seen)  // as rules_for
    limits_.emplace(key, own);
  return own ? *own : options_.limits;
}

std::string gate::limits_json(const std::string& id) const {
  return store_.get_setting(setting::agent_limits(id)).value_or("{}");
}

std::optional<std::string> gate::get(const std::string& key) const {
  if (key == setting::prices) {
    auto stored = store_.get_setting(key);
    return stored ? stored : std::optional<std::string>{prices()->to_json()};
  }
  return store_.get_setting(key);
}

expected<std::string> gate::validate(const std::string& key, std::string_view value) const {
  if (key == setting::kill_switch)
    return std::string{value == "1" ? "1" : "0"};
  if (key == setting::prices) {
    auto t = compute::price_table::parse(value);
    if (!t)
      return t.error_value();
    return t->to_json();
  }
  if (is_policy_key(key)) {
    auto r = policy::rules::parse(value);
    if (!r)
      return r.error_value();
    if (key != setting::global_policy)
      if (auto err = check_agent_policy(key, *r))
        return err;
    // What is stored (and served back) is written out in full, every rule
    // with its reason; it must load again, or the policy would fall back to
    // deny-all when next read.
    auto canonical = r->to_json();
    if (canonical.size() > policy::max_policy_bytes)
      return error{errc::invalid_argument,
                   "policy: written out in full (every rule with its reason, as GET returns "
                   "it) it is " + std::to_string(canonical.size()) + " bytes, more than the "
                   + std::to_string(policy::max_policy_bytes) + " allowed"};
    return canonical;
  }
  if (key.starts_with("limits/")) {
    // Refused when written, not when loaded: what is stored stays readable.
    if (auto scan = detail::scan_json(value); !scan.duplicate.empty())
      return error{errc::invalid_argument, scan.duplicate + ": duplicate field"};
    auto l = parse_limits(value, options_.limits);
    if (!l)
      return l.error_value();
    return std::string{value};
  }
  return error{errc::invalid_argument, "unknown setting '" + key + "'"};
}

void gate::install(const std::string& key, const std::optional<std::string>& value) {
  {
    std::unique_lock<std::shared_mutex> lock{mtx_};
    if (key == setting::kill_switch) {
      killed_.store(value && *value == "1", std::memory_order_release);
    } else if (key == setting::prices) {
      auto t = value ? compute::price_table::parse(*value) : compute::price_table::defaults();
      if (t)
        prices_ = std::make_shared<compute::price_table>(std::move(*t));
    } else if (is_policy_key(key)) {
      policies_.erase(key);  // re-read (and parsed) on next use
    } else if (key.starts_with("limits/")) {
      limits_.erase(key);
    }
    // Under the lock: a reader that read the store before this install sees
    // the version move, and does not cache what it read (rules_for).
    version_.fetch_add(1, std::memory_order_acq_rel);
  }
}

// -- limits ------------------------------------------------------------------

expected<tick_limits> parse_limits(std::string_view text, tick_limits base) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object())
    return error{errc::invalid_argument, "limits are a JSON object"};
  for (auto& [k, val] : v.as_object()) {
    if (!val.is_int64() && !val.is_uint64())
      return error{errc::invalid_argument, std::string{k} + ": a non-negative integer"};
    if (val.is_int64() && val.as_int64() < 0)
      return error{errc::invalid_argument, std::string{k} + ": a non-negative integer"};
    auto n = val.to_number<std::uint64_t>();
    if (k == "ticks_per_minute") {
      if (n > tick_limits::most_ticks_per_minute)
        return error{errc::invalid_argument, "ticks_per_minute: at most "
                                               + std::to_string(tick_limits::most_ticks_per_minute)};
      base.ticks_per_minute = static_cast<std::uint32_t>(n);
    } else if (k == "tick_wall_ms") {
      if (n > static_cast<std::uint64_t>(tick_limits::longest_tick_wall_time.count()))
        return error{errc::invalid_argument, "tick_wall_ms: at most one day"};
      base.tick_wall_time = std::chrono::milliseconds{n};
    } else if (k == "max_state_bytes") {
      base.max_state_bytes = n;
    } else if (k == "outbox_retention") {
      base.outbox_retention = n;
    } else if (k == "max_attempts") {
      if (n == 0 || n > tick_limits::most_attempts)
        return error{errc::invalid_argument,
                     "max_attempts: 1 to " + std::to_string(tick_limits::most_attempts)};
      base.max_attempts = static_cast<std::uint32_t>(n);
    } else if (k == "inbox_limit") {
      base.inbox_limit = n;
    } else {
      return error{errc::invalid_argument, std::string{k} + ": unknown field (ticks_per_minute, "
                   "tick_wall_ms, max_state_bytes, outbox_retention, max_attempts, inbox_limit)"};
    }
  }
  return base;
}

std::string limits_to_json(const tick_limits& l) {
  return json::serialize(json::object{{"ticks_per_minute", l.ticks_per_minute},
                                      {"tick_wall_ms", l.tick_wall_time.count()},
                                      {"max_state_bytes", l.max_state_bytes},
                                      {"outbox_retention", l.outbox_retention},
                                      {"max_attempts", l.max_attempts},
                                      {"inbox_limit", l.inbox_limit},
                                      {"max_message_bytes", l.max_message_bytes}});
}

}  // namespace ticktock::detail
