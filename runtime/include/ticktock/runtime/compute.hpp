#pragma once

// The compute service's provider layer: the request an agent writes to
// compute/new, the result or failure a provider answers with, the provider
// interface (an OpenAI-compatible client lives in ticktock::drivers, a
// deterministic local provider here), and the price table that turns token
// usage into micro-USD. docs/compute.md describes the formats.
//
// Everything here is pure logic: no sockets, no threads, no storage. Fallible
// calls return ticktock::expected with errc::invalid_argument (malformed
// input, naming the field) or errc::message_too_large (input above a size
// limit), and never throw.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ticktock/runtime/error.hpp"

namespace ticktock::compute {

// -- limits ------------------------------------------------------------------

/// The largest compute/new body parse_request accepts, in bytes.
inline constexpr std::size_t max_request_bytes = 4u << 20;
/// The most messages (chat) or inputs (embeddings) in one request.
inline constexpr std::size_t max_messages = 256;
/// The most text, summed over every message content and input, in bytes.
inline constexpr std::size_t max_text_bytes = 1u << 20;
/// The largest max_tokens a request may ask for.
inline constexpr std::uint32_t max_max_tokens = 32768;

// -- requests ----------------------------------------------------------------

/// One chat message; role is one of system, user, assistant, tool.
struct chat_message {
  std::string role;
  std::string content;
};

enum class request_kind { chat, embeddings };

/// "chat" or "embeddings".
std::string_view to_string(request_kind kind) noexcept;

/// A compute job's request, as written to an agent's compute/new file.
struct request {
  request_kind kind = request_kind::chat;
  /// Which provider runs it ("local", "openai", ...); resolved by the service.
  std::string provider = "local";
  std::string model;
  /// Chat only: the conversation, oldest first.
  std::vector<chat_message> messages;
  /// Embeddings only: the texts to embed.
  std::vector<std::string> input;
  /// Chat only: the most completion tokens the provider may produce.
  std::uint32_t max_tokens = 256;
  /// Chat only: sampling temperature, 0..2.
  double temperature = 0;
  /// Chat only: deliver the answer piece by piece (provider::run's on_delta).
  bool stream = false;
};

/// Parses and validates a compute/new body. Strict: a JSON object with the
/// fields "kind" ("chat" (default) | "embeddings"), "provider" (default
/// "local"; 1..64 of [a-z0-9._-]), "model" (required, 1..256 bytes),
/// "messages" (chat: 1..256 objects {"role","content"}, role one of
/// system|user|assistant|tool), "input" (embeddings: a string or an array of
/// 1..256 strings), "max_tokens" (integer 1..32768, default 256),
/// "temperature" (number 0..2, default 0), "stream" (boolean, default false).
/// Unknown fields, wrong types, fields of the other kind, and more than 1 MiB
/// of text in total are rejected with invalid_argument naming the field; a
/// body over max_request_bytes with message_too_large.
expected<request> parse_request(std::string_view json);

/// The request as JSON in the format parse_request reads (every field written).
std::string to_json(const request& r);

/// A rough token count of a text: ceil(bytes / 4). Providers count their own
/// way; this is what the local provider reports and what reservations assume.
std::uint64_t estimate_tokens(std::string_view text) noexcept;

/// The estimated prompt tokens of a request: chat, the sum over messages of
/// estimate_tokens(content) + 4, plus 3; embeddings, the sum over inputs of
/// estimate_tokens(input).
std::uint64_t estimate_prompt_tokens(const request& r) noexcept;

// -- results -----------------------------------------------------------------

/// Tokens a job used, as the provider reported them.
struct usage {
  std::uint64_t prompt_tokens = 0;
  std::uint64_t completion_tokens = 0;
};

/// A successful answer. Chat fills content and finish_reason ("stop",
/// "length", ...); embeddings fill embeddings, one vector per input, in order.
struct result {
  std::string content;
  std::vector<std::vector<double>> embeddings;
  usage used;
  std::string finish_reason;
  /// The model that answered, as the provider named it.
  std::string model;
};

/// {"model","content","finish_reason","usage":{"prompt_tokens","completion_tokens"}}
/// plus "embeddings":[[...],...] when there are any.
std::string to_json(const result& r);

/// The failure codes, as the strings failure::code holds.
namespace failure_code {
inline constexpr std::string_view timeout = "timeout";
inline constexpr std::string_view rate_limited = "rate_limited";
inline constexpr std::string_view provider_error = "provider_error";
inline constexpr std::string_view bad_request = "bad_request";
inline constexpr std::string_view malformed_response = "malformed_response";
inline constexpr std::string_view response_too_large = "response_too_large";
inline constexpr std::string_view network_error = "network_error";
inline constexpr std::string_view cancelled = "cancelled";
inline constexpr std::string_view unknown_model = "unknown_model";
inline constexpr std::string_view unknown_provider = "unknown_provider";
}  // namespace failure_code

/// A job that did not produce a result. code is one of failure_code;
/// http_status is the provider's last HTTP status (0 when none arrived);
/// retryable says whether the failure is of a transient kind (timeout,
/// rate_limited, provider_error, network_error) that a provider retries
/// itself before reporting it.
struct failure {
  std::string code;
  std::string message;
  int http_status = 0;
  bool retryable = false;
};

/// A failure with `retryable` set from the code.
failure make_failure(std::string_view code, std::string message, int http_status = 0);

/// {"code","message","http_status","retryable"}
std::string to_json(const failure& f);

using outcome = std::variant<result, failure>;

// -- providers ---------------------------------------------------------------

/// A compute backend. run() is blocking and is called on a service worker
/// thread; implementations must allow concurrent run() calls from several
/// threads on one provider object. run() never throws.
class provider {
public:
  virtual ~provider();

  /// The name requests use in their "provider" field.
  virtual std::string_view name() const = 0;

  /// Runs one request to its end. For a chat request with stream set, calls
  /// on_delta with each content piece as it arrives, on the calling thread,
  /// before returning; the pieces concatenate to the result's content.
  /// Returns failure{"cancelled"} soon after `cancelled` becomes true.
  virtual outcome run(const request& r, const std::function<void(std::string_view delta)>& on_delta,
                      const std::atomic<bool>& cancelled)
    = 0;
};

/// A deterministic provider for tests and demos: the same request gives the
/// same answer, usage and embeddings, on every machine.
///
/// - chat: content is "You said: " followed by the last user message's content
///   ("You said nothing." when there is none), cut at max_tokens * 4 bytes (on a
///   UTF-8 boundary; finish_reason "length") else whole (finish_reason "stop").
///   usage.prompt_tokens = estimate_prompt_tokens(r), completion_tokens =
///   estimate_tokens(content), so the real cost never exceeds max_cost.
///   With stream set, the content is delivered word by word (each piece is a
///   word with the space before it).
/// - embeddings: one vector of embedding_dimensions per input, from the
///   BLAKE2b-512 hash of the input text, scaled to unit length;
///   usage.prompt_tokens = sum of estimate_tokens(input).
/// - special models: "local-error" always fails with provider_error (HTTP
///   status 500); "local-rate-limited" always fails with rate_limited (429);
///   "local-wait" blocks until cancelled (then cancelled), or at most 30 s
///   (then timeout).
/// Thread-safe; holds no state.
class local_provider : public provider {
public:
  static constexpr std::size_t embedding_dimensions = 16;

  std::string_view name() const override;
  outcome run(const request& r, const std::function<void(std::string_view delta)>& on_delta,
              const std::atomic<bool>& cancelled) override;
};

// -- prices ------------------------------------------------------------------

/// A model's price in micro-USD per million tokens.
struct price {
  std::uint64_t input_per_mtok = 0;
  std::uint64_t output_per_mtok = 0;
};

/// Model name -> price, with an optional default for models not listed.
/// Format: {"models":{"gpt-4o-mini":{"input_per_mtok":150000,"output_per_mtok":600000}},
///          "default":{"input_per_mtok":1000000,"output_per_mtok":2000000}}
/// Immutable once built; safe to read from several threads.
class price_table {
public:
  /// An empty table: every model is unknown.
  price_table() = default;

  /// Parses a table. "models" is required (an object, possibly empty);
  /// "default" is optional; each price has exactly the two fields, each a
  /// non-negative integer that fits in 64 bits. Anything else (unknown
  /// fields, negative or fractional numbers, overflow, a non-object, an empty
  /// model name) fails with invalid_argument naming the place.
  static expected<price_table> parse(std::string_view json);

  /// The table as JSON, in the format parse reads.
  std::string to_json() const;

  /// The price of a model: its own entry, else the default; nullopt when
  /// neither exists.
  std::optional<price> find(const std::string& model) const;

  /// What a usage of a model costs in micro-USD, rounded up:
  /// ceil((prompt * input_per_mtok + completion * output_per_mtok) / 10^6).
  /// Fails with invalid_argument "unknown_model: ..." for a model without a
  /// price, and "cost overflows 64 bits" when the result does not fit.
  expected<std::uint64_t> cost(const std::string& model, const usage& u) const;

  /// The most a request can cost: estimate_prompt_tokens at the input price
  /// plus max_tokens at the output price (embeddings: no output). What a job
  /// reserves before it starts. Fails like cost().
  expected<std::uint64_t> max_cost(const request& r) const;

  /// The built-in table (OpenAI list prices for a few common models, and a
  /// default of 1 USD in / 2 USD out per million tokens for everything else,
  /// the local provider's models included). docs/compute.md lists it.
  static price_table defaults();

  const std::map<std::string, price>& models() const noexcept { return models_; }
  const std::optional<price>& default_price() const noexcept { return default_; }

private:
  std::map<std::string, price> models_;
  std::optional<price> default_;
};

}  // namespace ticktock::compute
