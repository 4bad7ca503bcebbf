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

/// Throws std::invalid_argument unless `status` is a final status (200 to
/// 599) and every header is one an agent may send: a token for a name
/// (RFC 9110, 5.1) that is not one the server sets to frame the response or
/// the connection (Content-Length, Transfer-Encoding, Connection, Keep-Alive,
/// Upgrade, TE, Trailer, Proxy-Connection), and a value without control
/// characters other than HTAB (so no CR or LF: it could not end the head).
/// ctx.reply and ctx.reply_to check their reply with it.
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
