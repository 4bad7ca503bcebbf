#include "ticktock/runtime/compute.hpp"
#include "ticktock/runtime/detail/json_check.hpp"
#include "ticktock/runtime/text.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <utility>

#include <boost/json.hpp>
#include <sodium.h>

namespace ticktock::compute {

namespace json = boost::json;

namespace {

error invalid(std::string message) { return error{errc::invalid_argument, std::move(message)}; }

std::string_view kind_of(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "a value";
}

std::string_view sv(const json::string& s) { return {s.data(), s.size()}; }

// Parses text that must be one JSON object; `what`, if any, names it in
// errors (a caller that names it itself passes none).
expected<json::value> parse_object(std::string_view text, std::string_view what = {}) {
  std::string prefix = what.empty() ? "" : std::string{what} + ": ";
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view{text.data(), text.size()}, ec);
  if (ec)
    return invalid(prefix + "not valid JSON (" + ec.message() + ")");
  if (!v.is_object())
    return invalid(prefix + "must be a JSON object, not " + std::string{kind_of(v)});
  // Boost.JSON keeps the last of two equal keys: a reader of the text that
  // keeps the first would see another request than the one run.
  if (auto scan = detail::scan_json(text); !scan.duplicate.empty())
    return invalid(prefix + "names '" + scan.duplicate + "' twice");
  return v;
}

bool valid_provider_name(std::string_view s) {
  if (s.empty() || s.size() > 64)
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
}

}  // namespace

// -- requests ----------------------------------------------------------------

std::string_view to_string(request_kind kind) noexcept {
  return kind == request_kind::embeddings ? "embeddings" : "chat";
}

expected<request> parse_request(std::string_view text) {
  if (text.size() > max_request_bytes)
    return error{errc::message_too_large, std::to_string(text.size()) + " bytes, more than the limit of "
                                            + std::to_string(max_request_bytes)};
  // Callers name the request (the gate: "compute request: ..."), as for the
  // errors of its fields.
  auto parsed = parse_object(text);
  if (!parsed)
    return parsed.error_value();
  auto& obj = parsed->as_object();

  request r;
  // "kind" first: which fields are allowed depends on it.
  if (auto* k = obj.if_contains("kind")) {
    if (!k->is_string())
      return invalid("kind: must be a string (\"chat\" or \"embeddings\"), not "
                     + std::string{kind_of(*k)});
    if (k->as_string() == "chat")
      r.kind = request_kind::chat;
    else if (k->as_string() == "embeddings")
      r.kind = request_kind::embeddings;
    else
      return invalid("kind: must be \"chat\" or \"embeddings\", not \"" + std::string{sv(k->as_string())}
                     + "\"");
  }
  bool chat = r.kind == request_kind::chat;
  std::size_t text_bytes = 0;
  bool has_model = false, has_messages = false, has_input = false;

  for (auto& kv : obj) {
    // (Not a structured binding: clang 14 cannot capture one in a lambda.)
    std::string name{kv.key()};
    const auto& v = kv.value();
    auto wrong_type = [&](std::string_view want) {
      return invalid(name + ": must be " + std::string{want} + ", not " + std::string{kind_of(v)});
    };
    auto chat_only = [&]() {
      return invalid(name + ": only allowed in chat requests, this one is \"embeddings\"");
    };
    if (name == "kind") {
      continue;
    } else if (name == "provider") {
      if (!v.is_string())
        return wrong_type("a string");
      r.provider = std::string{sv(v.as_string())};
      if (!valid_provider_name(r.provider))
        return invalid("provider: must be 1 to 64 characters of [a-z0-9._-]");
    } else if (name == "model") {
      if (!v.is_string())
        return wrong_type("a string");
      r.model = std::string{sv(v.as_string())};
      if (r.model.empty() || r.model.size() > 256)
        return invalid("model: must be 1 to 256 bytes long");
      has_model = true;
    } else if (name == "messages") {
      if (!chat)
        return invalid("messages: not allowed in embeddings requests (use \"input\")");
      if (!v.is_array())
        return wrong_type("an array of {\"role\",\"content\"} objects");
      auto& arr = v.as_array();
      if (arr.empty())
        return invalid("messages: must not be empty");
      if (arr.size() > max_messages)
        return invalid("messages: " + std::to_string(arr.size()) + " messages, more than the limit of "
                       + std::to_string(max_messages));
      for (std::size_t i = 0; i < arr.size(); ++i) {
        auto where = "messages[" + std::to_string(i) + "]";
        if (!arr[i].is_object())
          return invalid(where + ": must be an object, not " + std::string{kind_of(arr[i])});
        chat_message m;
        bool has_role = false, has_content = false;
        for (auto& [mk, mv] : arr[i].as_object()) {
          if (mk == "role") {
            if (!mv.is_string())
              return invalid(where + ".role: must be a string, not " + std::string{kind_of(mv)});
            m.role = std::string{sv(mv.as_string())};
            if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool")
              return invalid(where + ".role: must be system, user, assistant or tool, not \""
                             + m.role.substr(0, 64) + "\"");
            has_role = true;
          } else if (mk == "content") {
            if (!mv.is_string())
              return invalid(where + ".content: must be a string, not " + std::string{kind_of(mv)});
            m.content = std::string{sv(mv.as_string())};
            text_bytes += m.content.size();
            has_content = true;
          } else {
            return invalid(where + ": unknown field \"" + std::string{mk}.substr(0, 64) + "\"");
          }
        }
        if (!has_role)
          return invalid(where + ".role: missing");
        if (!has_content)
          return invalid(where + ".content: missing");
        r.messages.push_back(std::move(m));
      }
      has_messages = true;
    } else if (name == "input") {
      if (chat)
        return invalid("input: only allowed in embeddings requests (chat uses \"messages\")");
      if (v.is_string()) {
        r.input.emplace_back(sv(v.as_string()));
        text_bytes += r.input.back().size();
      } else if (v.is_array()) {
        auto& arr = v.as_array();
        if (arr.empty())
          return invalid("input: must not be empty");
        if (arr.size() > max_messages)
          return invalid("input: " + std::to_string(arr.size()) + " texts, more than the limit of "
                         + std::to_string(max_messages));
        for (std::size_t i = 0; i < arr.size(); ++i) {
          if (!arr[i].is_string())
            return invalid("input[" + std::to_string(i) + "]: must be a string, not "
                           + std::string{kind_of(arr[i])});
          r.input.emplace_back(sv(arr[i].as_string()));
          text_bytes += r.input.back().size();
        }
      } else {
        return wrong_type("a string or an array of strings");
      }
      has_input = true;
    } else if (name == "max_tokens") {
      if (!chat)
        return chat_only();
      if (!v.is_int64() && !v.is_uint64())
        return wrong_type("an integer");
      bool in_range = v.is_int64() ? v.as_int64() >= 1 && v.as_int64() <= max_max_tokens
                                   : v.as_uint64() <= max_max_tokens;
      if (!in_range)
        return invalid("max_tokens: must be between 1 and " + std::to_string(max_max_tokens));
      r.max_tokens = static_cast<std::uint32_t>(v.to_number<std::int64_t>());
    } else if (name == "temperature") {
      if (!chat)
        return chat_only();
      if (!v.is_number())
        return wrong_type("a number");
      r.temperature = v.to_number<double>();
      if (!std::isfinite(r.temperature) || r.temperature < 0 || r.temperature > 2)
        return invalid("temperature: must be between 0 and 2");
    } else if (name == "stream") {
      if (!chat)
        return chat_only();
      if (!v.is_bool())
        return wrong_type("a boolean");
      r.stream = v.as_bool();
    } else {
      return invalid("unknown field \"" + name.substr(0, 64)
                     + "\" (allowed: kind, provider, model, messages, input, max_tokens, "
                       "temperature, stream)");
    }
  }
  if (!has_model)
    return invalid("model: missing");
  if (chat && !has_messages)
    return invalid("messages: missing (a chat request needs at least one message)");
  if (!chat && !has_input)
    return invalid("input: missing (an embeddings request needs at least one text)");
  if (text_bytes > max_text_bytes)
    return invalid((chat ? std::string{"messages"} : std::string{"input"}) + ": "
                   + std::to_string(text_bytes) + " bytes of text, more than the limit of "
                   + std::to_string(max_text_bytes));
  return r;
}

std::string to_json(const request& r) {
  json::object o;
  o["kind"] = to_string(r.kind);
  o["provider"] = r.provider;
  o["model"] = r.model;
  if (r.kind == request_kind::chat) {
    json::array msgs;
    for (auto& m : r.messages)
      msgs.push_back(json::object{{"role", m.role}, {"content", m.content}});
    o["messages"] = std::move(msgs);
    o["max_tokens"] = r.max_tokens;
    o["temperature"] = r.temperature;
    o["stream"] = r.stream;
  } else {
    json::array in;
    for (auto& s : r.input)
      in.push_back(json::string(s));
    o["input"] = std::move(in);
  }
  return json_text(o);
}

std::uint64_t estimate_tokens(std::string_view text) noexcept { return (text.size() + 3) / 4; }

std::uint64_t estimate_prompt_tokens(const request& r) noexcept {
  // Text is capped at 1 MiB by parse_request; sums cannot overflow for any
  // request that fits in memory.
  std::uint64_t n = 0;
  if (r.kind == request_kind::chat) {
    for (auto& m : r.messages)
      n += estimate_tokens(m.content) + 4;
    n += 3;  // the reply's priming, as OpenAI counts it
  } else {
    for (auto& s : r.input)
      n += estimate_tokens(s);
  }
  return n;
}

// -- results -----------------------------------------------------------------

std::string to_json(const result& r) {
  json::object o;
  o["model"] = r.model;
  o["content"] = r.content;
  o["finish_reason"] = r.finish_reason;
  o["usage"] = json::object{{"prompt_tokens", r.used.prompt_tokens},
                            {"completion_tokens", r.used.completion_tokens}};
  if (!r.embeddings.empty()) {
    json::array all;
    for (auto& e : r.embeddings) {
      json::array one;
      for (double d : e)
        one.push_back(d);
      all.push_back(std::move(one));
    }
    o["embeddings"] = std::move(all);
  }
  return json_text(o);
}

failure make_failure(std::string_view code, std::string message, int http_status) {
  bool retryable = code == failure_code::timeout || code == failure_code::rate_limited
                   || code == failure_code::provider_error || code == failure_code::network_error;
  return failure{std::string{code}, std::move(message), http_status, retryable};
}

std::string to_json(const failure& f) {
  return json::serialize(json::object{{"code", f.code},
                                      {"message", f.message},
                                      {"http_status", f.http_status},
                                      {"retryable", f.retryable}});
}

// -- providers ---------------------------------------------------------------

provider::~provider() = default;

std::string_view local_provider::name() const { return "local"; }

outcome local_provider::run(const request& r, const std::function<void(std::string_view)>& on_delta,
                            const std::atomic<bool>& cancelled) {
  if (cancelled)
    return make_failure(failure_code::cancelled, "the job was cancelled");
  if (r.model == "local-error")
    return make_failure(failure_code::provider_error,
                        "local-error: this model always fails (HTTP 500 from the provider)", 500);
  if (r.model == "local-rate-limited")
    return make_failure(failure_code::rate_limited, "local-rate-limited: this model is always rate limited",
                        429);
  if (r.model == "local-wait") {
    // Polls: the provider interface offers a flag, not a condition variable.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{30};
    while (!cancelled) {
      if (std::chrono::steady_clock::now() >= deadline)
        return make_failure(failure_code::timeout, "local-wait: not cancelled within 30 s");
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
    return make_failure(failure_code::cancelled, "the job was cancelled");
  }

  result out;
  out.model = r.model;
  if (r.kind == request_kind::embeddings) {
    if (sodium_init() < 0)
      return make_failure(failure_code::provider_error, "libsodium failed to initialize");
    for (auto& text : r.input) {
      unsigned char hash[crypto_generichash_BYTES_MAX];
      static_assert(sizeof hash >= embedding_dimensions * 4);
      crypto_generichash(hash, sizeof hash, reinterpret_cast<const unsigned char*>(text.data()),
                         text.size(), nullptr, 0);
      std::vector<double> vec(embedding_dimensions);
      double norm = 0;
      for (std::size_t i = 0; i < embedding_dimensions; ++i) {
        std::uint32_t word = 0;
        for (std::size_t b = 0; b < 4; ++b)
          word = (word << 8) | hash[i * 4 + b];
        // Map to [-1, 1).
        vec[i] = static_cast<double>(word) / 2147483648.0 - 1.0;
        norm += vec[i] * vec[i];
      }
      norm = std::sqrt(norm);
      if (norm > 0)
        for (auto& x : vec)
          x /= norm;
      out.embeddings.push_back(std::move(vec));
      out.used.prompt_tokens += estimate_tokens(text);
    }
    return out;
  }

  const chat_message* last_user = nullptr;
  for (auto& m : r.messages)
    if (m.role == "user")
      last_user = &m;
  std::string reply = last_user ? "You said: " + last_user->content : std::string{"You said nothing."};
  auto cap = static_cast<std::size_t>(r.max_tokens) * 4;
  auto kept = utf8_prefix(reply, cap);
  out.finish_reason = kept.size() < reply.size() ? "length" : "stop";
  out.content = std::string{kept};
  out.used.prompt_tokens = estimate_prompt_tokens(r);
  out.used.completion_tokens = estimate_tokens(out.content);
  if (r.stream && on_delta) {
    // Word by word: each piece is a run of spaces and the word after it.
    std::string_view rest = out.content;
    while (!rest.empty()) {
      if (cancelled)
        return make_failure(failure_code::cancelled, "the job was cancelled");
      auto start = rest.find_first_not_of(' ');
      auto end = start == std::string_view::npos ? rest.size() : rest.find(' ', start);
      if (end == std::string_view::npos)
        end = rest.size();
      on_delta(rest.substr(0, end));
      rest.remove_prefix(end);
    }
  }
  return out;
}

// -- prices ------------------------------------------------------------------

namespace {

expected<std::uint64_t> parse_price_field(const json::value& v, const std::string& where) {
  if (v.is_uint64())
    return v.as_uint64();
  if (v.is_int64()) {
    if (v.as_int64() < 0)
      return invalid(where + ": must not be negative");
    return static_cast<std::uint64_t>(v.as_int64());
  }
  if (v.is_double()) {
    double d = v.as_double();
    if (std::isfinite(d) && d >= 18446744073709551616.0)
      return invalid(where + ": too large (must fit in 64 bits)");
    if (d < 0)
      return invalid(where + ": must not be negative");
    return invalid(where + ": must be an integer (micro-USD per million tokens)");
  }
  return invalid(where + ": must be an integer, not " + std::string{kind_of(v)});
}

expected<price> parse_price(const json::value& v, const std::string& where) {
  if (!v.is_object())
    return invalid(where + ": must be an object {\"input_per_mtok\",\"output_per_mtok\"}, not "
                   + std::string{kind_of(v)});
  price p;
  bool has_in = false, has_out = false;
  for (auto& [k, fv] : v.as_object()) {
    if (k == "input_per_mtok") {
      auto n = parse_price_field(fv, where + ".input_per_mtok");
      if (!n)
        return n.error_value();
      p.input_per_mtok = *n;
      has_in = true;
    } else if (k == "output_per_mtok") {
      auto n = parse_price_field(fv, where + ".output_per_mtok");
      if (!n)
        return n.error_value();
      p.output_per_mtok = *n;
      has_out = true;
    } else {
      return invalid(where + ": unknown field \"" + std::string{k}.substr(0, 64)
                     + "\" (allowed: input_per_mtok, output_per_mtok)");
    }
  }
  if (!has_in)
    return invalid(where + ".input_per_mtok: missing");
  if (!has_out)
    return invalid(where + ".output_per_mtok: missing");
  return p;
}

json::object price_json(const price& p) {
  return json::object{{"input_per_mtok", p.input_per_mtok}, {"output_per_mtok", p.output_per_mtok}};
}

}  // namespace

expected<price_table> price_table::parse(std::string_view text) {
  if (text.size() > max_request_bytes)
    return error{errc::message_too_large, "price table: " + std::to_string(text.size())
                                            + " bytes, more than the limit of "
                                            + std::to_string(max_request_bytes)};
  auto parsed = parse_object(text, "price table");
  if (!parsed)
    return parsed.error_value();
  price_table t;
  bool has_models = false;
  for (auto& [k, v] : parsed->as_object()) {
    if (k == "models") {
      if (!v.is_object())
        return invalid("models: must be an object of model name -> price, not "
                       + std::string{kind_of(v)});
      for (auto& [model, pv] : v.as_object()) {
        std::string name{model};
        if (name.empty() || name.size() > 256)
          return invalid("models: a model name must be 1 to 256 bytes long");
        auto p = parse_price(pv, "models[\"" + name + "\"]");
        if (!p)
          return p.error_value();
        t.models_[name] = *p;
      }
      has_models = true;
    } else if (k == "default") {
      auto p = parse_price(v, "default");
      if (!p)
        return p.error_value();
      t.default_ = *p;
    } else {
      return invalid("price table: unknown field \"" + std::string{k}.substr(0, 64)
                     + "\" (allowed: models, default)");
    }
  }
  if (!has_models)
    return invalid("models: missing");
  return t;
}

std::string price_table::to_json() const {
  json::object models;
  for (auto& [name, p] : models_)
    models[name] = price_json(p);
  json::object o{{"models", std::move(models)}};
  if (default_)
    o["default"] = price_json(*default_);
  return json_text(o);
}

std::optional<price> price_table::find(const std::string& model) const {
  if (auto i = models_.find(model); i != models_.end())
    return i->second;
  return default_;
}

namespace {

// ceil((a * pa + b * pb) / 10^6) without overflow: each product fits in 128
// bits; their quotients and remainders are summed separately.
expected<std::uint64_t> micro_usd(std::uint64_t a, std::uint64_t pa, std::uint64_t b, std::uint64_t pb) {
  using u128 = unsigned __int128;
  constexpr u128 million = 1'000'000;
  u128 x = static_cast<u128>(a) * pa;
  u128 y = static_cast<u128>(b) * pb;
  u128 whole = x / million + y / million;  // each < 2^109: no overflow
  u128 rest = x % million + y % million;   // < 2 * 10^6
  whole += (rest + million - 1) / million;
  if (whole > std::numeric_limits<std::uint64_t>::max())
    return invalid("cost overflows 64 bits of micro-USD");
  return static_cast<std::uint64_t>(whole);
}

error unknown_model(const std::string& model) {
  return invalid("unknown_model: model \"" + model.substr(0, 256)
                 + "\" has no price in the price table and the table has no default");
}

}  // namespace

expected<std::uint64_t> price_table::cost(const std::string& model, const usage& u) const {
  auto p = find(model);
  if (!p)
    return unknown_model(model);
  return micro_usd(u.prompt_tokens, p->input_per_mtok, u.completion_tokens, p->output_per_mtok);
}

expected<std::uint64_t> price_table::max_cost(const request& r) const {
  usage u;
  u.prompt_tokens = estimate_prompt_tokens(r);
  u.completion_tokens = r.kind == request_kind::chat ? r.max_tokens : 0;
  return cost(r.model, u);
}

price_table price_table::defaults() {
  price_table t;
  // OpenAI list prices (USD per million tokens x 10^6).
  t.models_["gpt-4o"] = {2'500'000, 10'000'000};
  t.models_["gpt-4o-mini"] = {150'000, 600'000};
  t.models_["gpt-4.1"] = {2'000'000, 8'000'000};
  t.models_["gpt-4.1-mini"] = {400'000, 1'600'000};
  t.models_["gpt-4.1-nano"] = {100'000, 400'000};
  t.models_["text-embedding-3-small"] = {20'000, 0};
  t.models_["text-embedding-3-large"] = {130'000, 0};
  t.default_ = price{1'000'000, 2'000'000};
  return t;
}

}  // namespace ticktock::compute
