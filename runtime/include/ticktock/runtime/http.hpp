#pragma once

// HTTP requests as triggers and replies as tick effects. A request to
// /a/{id}/{rest} becomes an `http` trigger whose payload is an encoded
// http_request; the agent answers with ctx.reply(...), and the reply is sent
// once the tick has committed.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ticktock {

struct trigger;

using http_headers = std::vector<std::pair<std::string, std::string>>;

/// An HTTP request delivered to an agent.
struct http_request {
  std::string method;   ///< "GET", "POST", ...
  std::string path;     ///< the part after /a/{id}, starting with '/'
  std::string query;    ///< without the '?'
  http_headers headers;
  std::string body;

  /// Encodes the request as a trigger payload.
  std::string encode() const;
  /// Decodes the payload of an `http` trigger; nullopt if `t` is not one or
  /// its payload is malformed.
  static std::optional<http_request> from(const trigger& t);
  /// The first header named `name` (case-insensitive).
  std::optional<std::string_view> header(std::string_view name) const;
};

/// An agent's answer to an http trigger.
struct http_reply {
  std::uint16_t status = 200;
  http_headers headers;
  std::string body;
};

/// Whether `s` is an HTTP token (RFC 9110, 5.6.2), as a field name is.
bool is_http_token(std::string_view s) noexcept;
/// Whether `s` may be an HTTP field value: no control characters but HTAB
/// (so no CR, LF or NUL, which could end the head or forge a field).
bool is_http_field_value(std::string_view s) noexcept;
/// Whether the field named `name` (any case) frames a message or its
/// connection: Content-Length, Transfer-Encoding, Connection, Keep-Alive,
/// Upgrade, TE, Trailer, Proxy-Connection. The server or the HTTP executor
/// sets those, never an agent's reply or request.
bool is_framing_field(std::string_view name) noexcept;

/// Throws std::invalid_argument unless `status` is a final status (200 to
/// 599) and every header is one an agent may send: a token for a name that
/// is not a framing field, and a field value (see above). ctx.reply and
/// ctx.reply_to check their reply with it.
void check_reply(std::uint16_t status, const http_headers& headers);

/// A WebSocket event delivered to an agent as a `ws` trigger. Connections
/// belong to the driver, not to the agent's actor: they stay open while the
/// agent hibernates, and a frame wakes it.
struct ws_event {
  enum class kind : std::uint8_t { open = 0, frame = 1, close = 2 };
  ws_event::kind event = kind::frame;
  std::string connection;  ///< the connection's id, for ctx.ws_send
  std::string data;        ///< frame payload
  bool binary = false;

  std::string encode() const;
  /// Decodes the payload of a `ws` trigger; nullopt if `t` is not one.
  static std::optional<ws_event> from(const trigger& t);
  /// The event and connection of a `ws` trigger's payload, without copying
  /// its data (left empty); nullopt if it is not one.
  static std::optional<ws_event> head(std::string_view payload);
};

/// A frame (or a close) a tick sends to a WebSocket connection; sent after
/// the commit.
struct ws_message {
  std::string connection;
  std::string data;
  bool binary = false;
  bool close = false;
};

}  // namespace ticktock
