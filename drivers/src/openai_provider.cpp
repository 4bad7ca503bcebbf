// The OpenAI-compatible compute provider. Each attempt is one exchange of
// the shared outbound client (http_client.hpp: Beast + OpenSSL, deadlines,
// size limits, cancellation); this file builds the requests, reads the
// answers (a streamed one as SSE, piece by piece) and retries with backoff.

#include "ticktock/drivers/openai_provider.hpp"
#include "ticktock/runtime/text.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <optional>
#include <random>
#include <thread>

#include "http_client.hpp"

namespace json = boost::json;
using steady_clock = std::chrono::steady_clock;

namespace ticktock::drivers {

using compute::failure;
using compute::make_failure;
using compute::outcome;
namespace fc = compute::failure_code;

namespace {

// How often run() looks at the cancelled flag while it waits out a backoff.
constexpr std::chrono::milliseconds cancel_poll{20};

error invalid(std::string message) { return error{errc::invalid_argument, std::move(message)}; }

using detail::excerpt;

// What one attempt ended with.
struct attempt {
  std::optional<compute::result> ok;
  failure fail;
  std::optional<std::chrono::milliseconds> retry_after;
  bool delivered = false;  // some stream piece reached on_delta
  bool estimate_usage = false;  // a stream without a usage chunk
};

attempt failed(std::string_view code, std::string message, int status = 0) {
  attempt a;
  a.fail = make_failure(code, std::move(message), status);
  return a;
}

// -- answers -----------------------------------------------------------------

std::string_view sv(const json::string& s) { return {s.data(), s.size()}; }

// A token count field: a non-negative integer.
bool read_count(const json::object& o, std::string_view key, std::uint64_t& out) {
  auto* v = o.if_contains(key);
  if (!v)
    return false;
  if (v->is_uint64()) {
    out = v->as_uint64();
    return true;
  }
  if (v->is_int64() && v->as_int64() >= 0) {
    out = static_cast<std::uint64_t>(v->as_int64());
    return true;
  }
  return false;
}

// Reads {"prompt_tokens","completion_tokens"}; completion_tokens may be absent
// (embeddings).
bool read_usage(const json::value& v, compute::usage& u) {
  if (!v.is_object())
    return false;
  auto& o = v.as_object();
  if (!read_count(o, "prompt_tokens", u.prompt_tokens))
    return false;
  if (o.contains("completion_tokens") && !read_count(o, "completion_tokens", u.completion_tokens))
    return false;
  return true;
}

std::optional<json::value> parse_json(std::string_view text) {
  boost::system::error_code ec;
  auto v = json::parse(json::string_view{text.data(), text.size()}, ec);
  if (ec)
    return std::nullopt;
  return v;
}

// The provider's own error message: {"error":{"message":...}} or the body.
std::string provider_message(std::string_view body) {
  if (auto v = parse_json(body); v && v->is_object())
    if (auto* e = v->as_object().if_contains("error")) {
      if (e->is_object())
        if (auto* m = e->as_object().if_contains("message"); m && m->is_string())
          return excerpt(sv(m->as_string()), 1000);
      if (e->is_string())
        return excerpt(sv(e->as_string()), 1000);
    }
  return body.empty() ? std::string{"(empty body)"} : excerpt(body);
}

attempt malformed(std::string why) {
  return failed(fc::malformed_response, "malformed answer from the provider: " + why, 200);
}

attempt read_chat(std::string_view body) {
  auto v = parse_json(body);
  if (!v)
    return malformed("not valid JSON: " + excerpt(body, 100));
  if (!v->is_object())
    return malformed("not a JSON object");
  auto& o = v->as_object();
  auto* choices = o.if_contains("choices");
  if (!choices || !choices->is_array() || choices->as_array().empty()
      || !choices->as_array()[0].is_object())
    return malformed("choices[0] missing");
  auto& c0 = choices->as_array()[0].as_object();
  auto* msg = c0.if_contains("message");
  if (!msg || !msg->is_object())
    return malformed("choices[0].message missing");
  compute::result r;
  auto* content = msg->as_object().if_contains("content");
  if (!content || !(content->is_string() || content->is_null()))
    return malformed("choices[0].message.content missing or not a string");
  if (content->is_string())
    r.content = std::string{sv(content->as_string())};
  if (auto* f = c0.if_contains("finish_reason"); f && f->is_string())
    r.finish_reason = std::string{sv(f->as_string())};
  auto* u = o.if_contains("usage");
  if (!u || !read_usage(*u, r.used))
    return malformed("usage missing or not token counts");
  if (auto* m = o.if_contains("model"); m && m->is_string())
    r.model = std::string{sv(m->as_string())};
  attempt a;
  a.ok = std::move(r);
  return a;
}

attempt read_embeddings(std::string_view body, std::size_t inputs) {
  auto v = parse_json(body);
  if (!v)
    return malformed("not valid JSON: " + excerpt(body, 100));
  if (!v->is_object())
    return malformed("not a JSON object");
  auto& o = v->as_object();
  auto* data = o.if_contains("data");
  if (!data || !data->is_array())
    return malformed("data missing");
  auto& arr = data->as_array();
  if (arr.size() != inputs)
    return malformed(std::to_string(arr.size()) + " embeddings for " + std::to_string(inputs)
                     + " inputs");
  compute::result r;
  r.embeddings.resize(inputs);
  std::vector<bool> seen(inputs);
  for (std::size_t i = 0; i < arr.size(); ++i) {
    auto where = "data[" + std::to_string(i) + "]";
    if (!arr[i].is_object())
      return malformed(where + " not an object");
    auto& item = arr[i].as_object();
    std::size_t index = i;
    if (auto* ix = item.if_contains("index")) {
      if (!ix->is_int64() || ix->as_int64() < 0 || static_cast<std::uint64_t>(ix->as_int64()) >= inputs)
        return malformed(where + ".index out of range");
      index = static_cast<std::size_t>(ix->as_int64());
    }
    if (seen[index])
      return malformed(where + ".index repeats an earlier one");
    seen[index] = true;
    auto* e = item.if_contains("embedding");
    if (!e || !e->is_array())
      return malformed(where + ".embedding missing");
    auto& vec = r.embeddings[index];
    for (auto& x : e->as_array()) {
      if (!x.is_number())
        return malformed(where + ".embedding has a value that is not a number");
      vec.push_back(x.to_number<double>());
    }
  }
  auto* u = o.if_contains("usage");
  if (!u || !read_usage(*u, r.used))
    return malformed("usage missing or not token counts");
  if (auto* m = o.if_contains("model"); m && m->is_string())
    r.model = std::string{sv(m->as_string())};
  attempt a;
  a.ok = std::move(r);
  return a;
}

// Server-sent events of a streamed chat completion: "data: {json}" lines,
// events separated by blank lines, "data: [DONE]" at the end.
class sse_reader {
public:
  explicit sse_reader(const std::function<void(std::string_view)>& on_delta) : on_delta_(on_delta) {}

  // Feeds bytes; returns a failure message when the stream is malformed.
  std::optional<std::string> feed(std::string_view bytes) {
    pending_.append(bytes);
    std::size_t start = 0;
    for (;;) {
      auto nl = pending_.find('\n', start);
      if (nl == std::string::npos)
        break;
      std::string_view line{pending_.data() + start, nl - start};
      start = nl + 1;
      if (!line.empty() && line.back() == '\r')
        line.remove_suffix(1);
      if (auto err = on_line(line)) {
        pending_.clear();
        return err;
      }
      if (done_)
        break;
    }
    pending_.erase(0, start);
    return std::nullopt;
  }

  bool done() const { return done_; }
  bool delivered() const { return delivered_; }
  compute::result& result() { return result_; }
  bool has_usage() const { return has_usage_; }

private:
  std::optional<std::string> on_line(std::string_view line) {
    if (line.empty())
      return dispatch();
    if (line.front() == ':')
      return std::nullopt;  // a comment
    if (line.substr(0, 5) == "data:") {
      auto value = line.substr(5);
      if (!value.empty() && value.front() == ' ')
        value.remove_prefix(1);
      if (!data_.empty())
        data_ += '\n';
      data_.append(value);
    }
    return std::nullopt;  // event:, id:, retry: are of no use here
  }

  std::optional<std::string> dispatch() {
    if (data_.empty())
      return std::nullopt;
    std::string data = std::move(data_);
    data_.clear();
    if (data == "[DONE]") {
      done_ = true;
      return std::nullopt;
    }
    auto v = parse_json(data);
    if (!v || !v->is_object())
      return "a stream event is not a JSON object: " + excerpt(data, 100);
    auto& o = v->as_object();
    if (o.contains("error"))
      return "the provider reported an error in the stream: " + provider_message(data);
    if (auto* m = o.if_contains("model"); m && m->is_string())
      result_.model = std::string{sv(m->as_string())};
    if (auto* u = o.if_contains("usage"); u && !u->is_null()) {
      if (!read_usage(*u, result_.used))
        return std::string{"a stream event's usage is not token counts"};
      has_usage_ = true;
    }
    auto* choices = o.if_contains("choices");
    if (!choices)
      return std::nullopt;
    if (!choices->is_array())
      return std::string{"a stream event's choices is not an array"};
    if (choices->as_array().empty())
      return std::nullopt;  // the usage chunk
    auto& c0 = choices->as_array()[0];
    if (!c0.is_object())
      return std::string{"a stream event's choices[0] is not an object"};
    if (auto* f = c0.as_object().if_contains("finish_reason"); f && f->is_string())
      result_.finish_reason = std::string{sv(f->as_string())};
    auto* delta = c0.as_object().if_contains("delta");
    if (!delta)
      return std::nullopt;
    if (!delta->is_object())
      return std::string{"a stream event's choices[0].delta is not an object"};
    auto* content = delta->as_object().if_contains("content");
    if (!content || content->is_null())
      return std::nullopt;
    if (!content->is_string())
      return std::string{"a stream event's choices[0].delta.content is not a string"};
    auto piece = sv(content->as_string());
    if (piece.empty())
      return std::nullopt;
    result_.content.append(piece);
    delivered_ = true;
    if (on_delta_)
      on_delta_(piece);
    return std::nullopt;
  }

  const std::function<void(std::string_view)>& on_delta_;
  std::string pending_;
  std::string data_;
  compute::result result_;
  bool done_ = false;
  bool delivered_ = false;
  bool has_usage_ = false;
};

std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view v) {
  while (!v.empty() && v.front() == ' ')
    v.remove_prefix(1);
  while (!v.empty() && v.back() == ' ')
    v.remove_suffix(1);
  if (v.empty() || v.size() > 7 || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;  // an HTTP date, or nonsense: use the computed backoff
  return std::chrono::seconds{std::strtoul(std::string{v}.c_str(), nullptr, 10)};
}

std::chrono::milliseconds backoff_delay(const openai_options& o, unsigned retry,
                                        std::optional<std::chrono::milliseconds> retry_after) {
  if (retry_after)
    return std::min(*retry_after, o.max_backoff);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  auto base = o.backoff.count();
  long long full = base;
  for (unsigned i = 0; i < retry && full < o.max_backoff.count(); ++i)
    full *= 2;
  full = std::min<long long>(full, o.max_backoff.count());
  std::uniform_int_distribution<long long> jitter{full / 2, full};
  return std::chrono::milliseconds{jitter(rng)};
}

}  // namespace

// -- options -------------------------------------------------------------------

openai_options openai_options::from_env() {
  openai_options o;
  if (const char* url = std::getenv("OPENAI_BASE_URL"); url && *url)
    o.base_url = url;
  if (const char* key = std::getenv("OPENAI_API_KEY"); key && *key)
    o.api_key = key;
  return o;
}

// -- the provider ----------------------------------------------------------------

struct openai_provider::impl {
  openai_options o;
  fetch::url t;
  std::string prefix;  // the base URL's path, without a trailing '/'
  std::shared_ptr<detail::http_client> client;

  attempt exchange_once(const detail::http_client::request& req, bool streaming,
                        std::size_t inputs, const std::function<void(std::string_view)>& on_delta,
                        const std::atomic<bool>& cancelled);
};

attempt openai_provider::impl::exchange_once(const detail::http_client::request& req,
                                             bool streaming, std::size_t inputs,
                                             const std::function<void(std::string_view)>& on_delta,
                                             const std::atomic<bool>& cancelled) {
  using hc = detail::http_client;
  std::optional<sse_reader> events;
  std::optional<std::string> stream_error;
  hc::options opts;
  opts.timeout = o.timeout;
  opts.max_response_bytes = o.max_response_bytes;
  opts.stream_body = [&](const hc::head& h) {
    if (!streaming || h.status != 200)
      return false;
    events.emplace(on_delta);
    return true;
  };
  opts.on_piece = [&](std::string_view piece) {
    if (auto err = events->feed(piece)) {
      stream_error = std::move(*err);
      return hc::piece_result::fail;
    }
    return events->done() ? hc::piece_result::done : hc::piece_result::more;
  };
  auto r = client->exchange(t, req, opts, cancelled);
  bool delivered = events && events->delivered();
  int status = r.h.status;

  if (!r.code.empty()) {
    attempt a;
    if (stream_error) {
      a = malformed(*stream_error);
    } else {
      std::string message = r.code == fc::cancelled ? "the job was cancelled" : r.message;
      if (r.code == fc::response_too_large && status != 0)
        message = "the provider's answer exceeds " + std::to_string(o.max_response_bytes) + " bytes";
      a = failed(r.code, std::move(message),
                 r.code == fc::response_too_large || r.code == fc::malformed_response ? status : 0);
    }
    a.delivered = delivered;
    return a;
  }
  if (r.streamed) {
    if (!events->done()) {
      auto a = malformed(r.truncated ? "the stream was cut before data: [DONE]"
                                     : "the stream ended without data: [DONE]");
      a.delivered = delivered;
      return a;
    }
    attempt a;
    a.delivered = delivered;
    a.ok = std::move(events->result());
    a.estimate_usage = !events->has_usage();
    return a;
  }
  auto& body = r.body;
  if (r.truncated)
    return failed(fc::malformed_response, "the answer from " + t.host_header
                                            + " was cut off before the end of its body",
                  status);
  if (status == 429) {
    auto a = failed(fc::rate_limited, "HTTP 429 from the provider: " + provider_message(body), status);
    if (auto ra = r.h.get("retry-after"); !ra.empty())
      a.retry_after = parse_retry_after(ra);
    return a;
  }
  if (status >= 500)
    return failed(fc::provider_error, "HTTP " + std::to_string(status)
                                        + " from the provider: " + provider_message(body),
                  status);
  if (status >= 400)
    return failed(fc::bad_request, "HTTP " + std::to_string(status)
                                     + " from the provider: " + provider_message(body),
                  status);
  if (status < 200 || status >= 300)
    return failed(fc::malformed_response, "unexpected HTTP status " + std::to_string(status)
                                            + " from the provider",
                  status);
  auto a = inputs > 0 ? read_embeddings(body, inputs) : read_chat(body);
  a.fail.http_status = status;
  return a;
}

expected<std::unique_ptr<openai_provider>> openai_provider::make(openai_options options) {
  auto p = std::make_unique<impl>();
  p->o = std::move(options);
  auto& o = p->o;
  auto url = fetch::parse_url(o.base_url);
  if (!url) {
    auto why = url.error_value().message();
    if (why.find("scheme") != std::string::npos)
      return invalid("openai provider: base_url must start with http:// or https://");
    if (why.find("no host") != std::string::npos)
      return invalid("openai provider: base_url has no host");
    return invalid("openai provider: base_url '" + excerpt(o.base_url, 200)
                   + "' is not an absolute URL with a host (" + why + ")");
  }
  if (url->has_userinfo || url->has_query || url->has_fragment)
    return invalid("openai provider: base_url must not have user info, a query or a fragment");
  p->t = std::move(*url);
  p->prefix = p->t.path;
  while (!p->prefix.empty() && p->prefix.back() == '/')
    p->prefix.pop_back();
  if (o.name.empty())
    return invalid("openai provider: name must not be empty");
  if (o.timeout.count() <= 0)
    return invalid("openai provider: timeout must be positive");
  if (o.backoff.count() <= 0 || o.max_backoff.count() <= 0)
    return invalid("openai provider: backoff and max_backoff must be positive");
  if (o.max_response_bytes == 0)
    return invalid("openai provider: max_response_bytes must be positive");
  for (char c : o.api_key)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return invalid("openai provider: api_key contains a control character");
  auto client = detail::http_client::make(p->t.tls ? o.ca_file : std::string{});
  if (!client)
    return invalid("openai provider: " + client.error_value().message());
  p->client = std::move(*client);
  return std::unique_ptr<openai_provider>{new openai_provider{std::move(p)}};
}

openai_provider::openai_provider(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

openai_provider::~openai_provider() = default;

std::string_view openai_provider::name() const { return impl_->o.name; }

compute::outcome openai_provider::run(const compute::request& r,
                                      const std::function<void(std::string_view)>& on_delta,
                                      const std::atomic<bool>& cancelled) {
  auto& p = *impl_;
  bool chat = r.kind == compute::request_kind::chat;
  bool streaming = chat && r.stream;

  json::object body;
  body["model"] = r.model;
  if (chat) {
    json::array msgs;
    for (auto& m : r.messages)
      msgs.push_back(json::object{{"role", m.role}, {"content", m.content}});
    body["messages"] = std::move(msgs);
    body["max_tokens"] = r.max_tokens;
    body["temperature"] = r.temperature;
    body["stream"] = streaming;
    if (streaming)
      body["stream_options"] = json::object{{"include_usage", true}};
  } else {
    json::array in;
    for (auto& s : r.input)
      in.push_back(json::string(s));
    body["input"] = std::move(in);
  }

  detail::http_client::request req;
  req.method = "POST";
  req.target = p.prefix + (chat ? "/chat/completions" : "/embeddings");
  req.headers = {{"User-Agent", "ticktock"},
                 {"Content-Type", "application/json"},
                 {"Accept", streaming ? "text/event-stream" : "application/json"}};
  if (!p.o.api_key.empty())
    req.headers.emplace_back("Authorization", "Bearer " + p.o.api_key);
  req.body = json_text(body);

  std::size_t inputs = chat ? 0 : r.input.size();
  if (!chat && inputs == 0)
    return make_failure(fc::bad_request, "an embeddings request needs at least one input");

  for (unsigned retry = 0;; ++retry) {
    if (cancelled)
      return make_failure(fc::cancelled, "the job was cancelled");
    attempt a = p.exchange_once(req, streaming, inputs, on_delta, cancelled);
    if (a.ok) {
      if (a.ok->model.empty())
        a.ok->model = r.model;
      if (a.estimate_usage) {
        // A provider that ignores stream_options.include_usage: bill estimates.
        a.ok->used.prompt_tokens = compute::estimate_prompt_tokens(r);
        a.ok->used.completion_tokens = compute::estimate_tokens(a.ok->content);
      }
      return std::move(*a.ok);
    }
    if (!a.fail.retryable || a.delivered || retry >= p.o.max_retries) {
      if (a.fail.retryable && retry > 0)
        a.fail.message += " (after " + std::to_string(retry + 1) + " attempts)";
      return a.fail;
    }
    // Wait out the backoff, looking at the cancelled flag as we go.
    auto delay = backoff_delay(p.o, retry, a.retry_after);
    if (p.o.on_retry_wait)
      p.o.on_retry_wait(delay);
    auto until = steady_clock::now() + delay;
    while (steady_clock::now() < until) {
      if (cancelled)
        return make_failure(fc::cancelled, "the job was cancelled");
      std::this_thread::sleep_for(std::min<steady_clock::duration>(cancel_poll, until - steady_clock::now()));
    }
  }
}

}  // namespace ticktock::drivers
