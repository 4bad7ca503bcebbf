#include "ticktock/runtime/http.hpp"

#include <strings.h>

#include <stdexcept>

#include "ticktock/runtime/serializer.hpp"
#include "ticktock/runtime/trigger.hpp"

namespace ticktock {

namespace {

// The wire form of http_request (the default serializer of an aggregate).
struct wire_request {
  std::string method;
  std::string path;
  std::string query;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

}  // namespace

bool is_http_token(std::string_view s) noexcept {
  if (s.empty())
    return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        && std::string_view{"!#$%&'*+-.^_`|~"}.find(c) == std::string_view::npos)
      return false;
  return true;
}

bool is_http_field_value(std::string_view s) noexcept {
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return false;
  return true;
}

bool is_framing_field(std::string_view name) noexcept {
  static constexpr std::string_view framing[] = {"content-length", "transfer-encoding", "connection",
                                                 "keep-alive",     "upgrade",           "te",
                                                 "trailer",        "proxy-connection"};
  for (auto f : framing)
    if (name.size() == f.size() && strncasecmp(name.data(), f.data(), f.size()) == 0)
      return true;
  return false;
}

void check_reply(std::uint16_t status, const http_headers& headers) {
  if (status < 200 || status > 599)
    throw std::invalid_argument("reply: status " + std::to_string(status)
                                + " is not a final HTTP status (200 to 599)");
  for (auto& [name, value] : headers) {
    if (!is_http_token(name))
      throw std::invalid_argument("reply: header name '" + name + "' is not an HTTP token");
    if (is_framing_field(name))
      throw std::invalid_argument("reply: the server sets " + name + " itself");
    if (!is_http_field_value(value))
      throw std::invalid_argument("reply: the value of header " + name
                                  + " has a control character");
  }
}

template <class A, class B>
struct serializer<std::pair<A, B>> {
  static void save(encoder& e, const std::pair<A, B>& p) {
    save_value(e, p.first);
    save_value(e, p.second);
  }
  static bool load(decoder& d, std::pair<A, B>& p) {
    return load_value(d, p.first) && load_value(d, p.second);
  }
};

std::string http_request::encode() const {
  return to_bytes(wire_request{method, path, query, headers, body});
}

std::optional<http_request> http_request::from(const trigger& t) {
  if (t.kind != trigger_kind::http)
    return std::nullopt;
  wire_request w;
  if (!from_bytes(t.payload, w))
    return std::nullopt;
  return http_request{std::move(w.method), std::move(w.path), std::move(w.query),
                      std::move(w.headers), std::move(w.body)};
}

std::optional<std::string_view> http_request::header(std::string_view name) const {
  for (auto& [k, v] : headers)
    if (k.size() == name.size() && strncasecmp(k.data(), name.data(), k.size()) == 0)
      return std::string_view{v};
  return std::nullopt;
}

std::string ws_event::encode() const {
  encoder e;
  save_value(e, static_cast<std::uint8_t>(event));
  save_value(e, connection);
  save_value(e, data);
  save_value(e, binary);
  return e.take();
}

std::optional<ws_event> ws_event::head(std::string_view payload) {
  decoder d{payload};
  ws_event ev;
  std::uint8_t k = 0;
  if (!load_value(d, k) || k > 2 || !load_value(d, ev.connection))
    return std::nullopt;
  ev.event = static_cast<kind>(k);
  return ev;
}

std::optional<ws_event> ws_event::from(const trigger& t) {
  if (t.kind != trigger_kind::ws)
    return std::nullopt;
  decoder d{t.payload};
  ws_event ev;
  std::uint8_t k = 0;
  if (!load_value(d, k) || k > 2 || !load_value(d, ev.connection) || !load_value(d, ev.data)
      || !load_value(d, ev.binary) || !d.at_end())
    return std::nullopt;
  ev.event = static_cast<kind>(k);
  return ev;
}

}  // namespace ticktock
