#include "ticktock/runtime/fetch.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <charconv>
#include <array>
#include <exception>

#include <boost/json.hpp>
#include <boost/url/parse.hpp>
// Boost.URL header-only, compiled here once for every module: Debian packages
// no libboost_url for 1.81's -dev.
#include <boost/url/src.hpp>

#include "ticktock/runtime/identity.hpp"  // to_base64, from_base64
#include "ticktock/runtime/detail/json_check.hpp"
#include "ticktock/runtime/http.hpp"  // is_http_token, is_http_field_value, is_framing_field
#include "ticktock/runtime/text.hpp"

namespace ticktock::fetch {

namespace json = boost::json;

namespace {

error invalid(std::string message) { return error{errc::invalid_argument, std::move(message)}; }

char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowered(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    c = lower(c);
  return out;
}

// Printable, bounded text of untrusted input for an error message.
std::string excerpt(std::string_view s, std::size_t n = 100) {
  std::string out;
  for (char c : s.substr(0, n))
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  if (s.size() > n)
    out += "...";
  return to_valid_utf8(out);
}

constexpr std::array<std::string_view, 7> methods = {"GET",    "HEAD",  "POST",   "PUT",
                                                     "PATCH",  "DELETE", "OPTIONS"};

// Headers whose value the executor owns: a request that sets them could
// smuggle a second request or lie about its body.
bool reserved_header(std::string_view name) noexcept {
  auto lower = lowered(name);
  return is_framing_field(lower) || lower == "host" || lower.starts_with("proxy-");
}

expected<std::uint64_t> positive(const json::value& v, std::string_view field, std::uint64_t max) {
  std::uint64_t n = 0;
  if (v.is_uint64())
    n = v.as_uint64();
  else if (v.is_int64() && v.as_int64() > 0)
    n = static_cast<std::uint64_t>(v.as_int64());
  else
    return invalid(std::string{field} + ": an integer from 1 to " + std::to_string(max));
  if (n == 0 || n > max)
    return invalid(std::string{field} + ": an integer from 1 to " + std::to_string(max) + ", not "
                   + std::to_string(n));
  return n;
}

std::string_view sv(const json::string& s) { return {s.data(), s.size()}; }

}  // namespace

executor::~executor() = default;

// -- URLs ----------------------------------------------------------------------

expected<url> parse_url(std::string_view text) {
  if (text.size() > max_url_bytes)
    return invalid("url: more than " + std::to_string(max_url_bytes) + " bytes");
  auto parsed = boost::urls::parse_uri(boost::core::string_view{text.data(), text.size()});
  if (!parsed)
    return invalid("url: '" + excerpt(text) + "' is not an absolute URL");
  auto& u = *parsed;
  url out;
  auto scheme = lowered(std::string_view{u.scheme().data(), u.scheme().size()});
  if (scheme == "https")
    out.tls = true;
  else if (scheme != "http")
    return invalid("url: the scheme is '" + excerpt(scheme, 20) + "'; only http and https are fetched");
  if (!u.has_authority() || u.encoded_host().empty())
    return invalid("url: '" + excerpt(text) + "' names no host");
  auto host = std::string{u.host_address()};
  auto type = u.host_type();
  if (type == boost::urls::host_type::name) {
    std::string_view encoded{u.encoded_host().data(), u.encoded_host().size()};
    if (encoded.find('%') != std::string_view::npos)
      return invalid("url: the host '" + excerpt(encoded) + "' is not a host name (no percent escapes)");
    for (char c : host)
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
            || c == '.' || c == '_'))
        return invalid("url: the host '" + excerpt(host) + "' is not a host name");
    // The resolver reads 2130706433, 0x7f.1, 0177.0.0.1 or 127.1 as an IPv4
    // address (inet_aton), which a policy's destination globs would not
    // recognize: such a host is refused, an address is written a.b.c.d.
    in_addr as_ipv4{};
    if (::inet_aton(host.c_str(), &as_ipv4) != 0)
      return invalid("url: the host '" + excerpt(host) + "' is an IPv4 address not written as a.b.c.d");
  } else if (type == boost::urls::host_type::ipv6) {
    // One spelling per address, as policies match it: ::1, not 0:0:0:0:0:0:0:1;
    // an IPv4-mapped address as its IPv4 address.
    auto v6 = u.host_ipv6_address();
    if (v6.is_v4_mapped()) {
      auto b = v6.to_bytes();
      host = std::to_string(b[12]) + "." + std::to_string(b[13]) + "." + std::to_string(b[14]) + "."
             + std::to_string(b[15]);
    } else {
      host = v6.to_string();
    }
  } else if (type != boost::urls::host_type::ipv4) {
    return invalid("url: the host '" + excerpt(host) + "' is not a host name or an IP address");
  }
  out.host = lowered(host);
  if (u.has_port()) {
    out.port = std::string{u.port()};
    unsigned port = 0;
    auto [end, ec] = std::from_chars(out.port.data(), out.port.data() + out.port.size(), port);
    if (out.port.empty() || ec != std::errc{} || end != out.port.data() + out.port.size() || port == 0
        || port > 65535)
      return invalid("url: the port must be 1 to 65535");
  } else {
    out.port = out.tls ? "443" : "80";
  }
  out.host_header = std::string{u.encoded_host_and_port()};
  out.path = std::string{u.encoded_path()};
  out.has_userinfo = u.has_userinfo();
  out.has_query = u.has_query();
  out.has_fragment = u.has_fragment();
  out.target = out.path.empty() ? "/" : out.path;
  if (out.target.front() != '/')
    return invalid("url: the path must start with '/'");
  if (out.has_query)
    out.target += "?" + std::string{u.encoded_query()};
  return out;
}

// -- requests --------------------------------------------------------------------

expected<request> parse_request(std::string_view text, const limits& lim) {
  // A generous bound before parsing: the body (base64 grows it by a third)
  // plus the headers and the URL.
  auto max_text = lim.max_body_bytes / 3 * 4 + 4 + max_headers * (max_header_name_bytes + max_header_value_bytes + 16)
                  + max_url_bytes + 4096;
  if (text.size() > max_text)
    return error{errc::message_too_large, "the fetch request is " + std::to_string(text.size())
                                            + " bytes, more than the " + std::to_string(max_text)
                                            + " allowed"};
  try {
    boost::system::error_code ec;
    auto v = json::parse(json::string_view{text.data(), text.size()}, ec);
    if (ec)
      return invalid("the fetch request is not valid JSON (" + ec.message() + ")");
    if (auto scan = detail::scan_json(text); !scan.duplicate.empty())
      return invalid("the fetch request names '" + scan.duplicate + "' twice");
    if (!v.is_object())
      return invalid("the fetch request is a JSON object {\"url\",\"method\"?,\"headers\"?,\"body\"?,"
                     "\"timeout_ms\"?,\"max_response_bytes\"?}");
    request r;
    r.timeout = lim.default_timeout;
    r.max_response_bytes = lim.default_response_bytes;
    bool has_url = false, has_body = false;
    for (auto& [key, val] : v.as_object()) {
      std::string_view k{key.data(), key.size()};
      if (k == "url") {
        if (!val.is_string())
          return invalid("url: a string");
        auto u = parse_url(sv(val.as_string()));
        if (!u)
          return u.error_value();
        if (u->has_userinfo)
          return invalid("url: user info (user:password@) is not allowed; send an Authorization "
                         "header instead");
        r.url = std::string{sv(val.as_string())};
        if (auto hash = r.url.find('#'); hash != std::string::npos)
          r.url.resize(hash);
        r.parts = std::move(*u);
        has_url = true;
      } else if (k == "method") {
        if (!val.is_string())
          return invalid("method: a string");
        auto m = std::string{sv(val.as_string())};
        if (std::find(methods.begin(), methods.end(), m) == methods.end())
          return invalid("method: '" + excerpt(m, 20)
                         + "' is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        r.method = std::move(m);
      } else if (k == "headers") {
        if (!val.is_object())
          return invalid("headers: an object of header names to string values");
        auto& hs = val.as_object();
        if (hs.size() > max_headers)
          return invalid("headers: more than " + std::to_string(max_headers));
        for (auto& [hk, hv] : hs) {
          std::string_view name{hk.data(), hk.size()};
          auto where = "headers[\"" + excerpt(name, 40) + "\"]";
          if (name.size() > max_header_name_bytes || !is_http_token(name))
            return invalid(where + ": not a valid header name");
          if (reserved_header(name))
            return invalid(where + ": set by the executor, not by the request");
          if (!hv.is_string())
            return invalid(where + ": a string");
          auto value = sv(hv.as_string());
          if (value.size() > max_header_value_bytes)
            return invalid(where + ": more than " + std::to_string(max_header_value_bytes) + " bytes");
          if (!is_http_field_value(value))
            return invalid(where + ": control characters (CR, LF, NUL, ...) are not allowed");
          r.headers.emplace_back(std::string{name}, std::string{value});
        }
      } else if (k == "body" || k == "body_base64") {
        if (has_body)
          return invalid(std::string{k} + ": give body or body_base64, not both");
        if (!val.is_string())
          return invalid(std::string{k} + ": a string");
        has_body = true;
        if (k == "body") {
          r.body = std::string{sv(val.as_string())};
        } else {
          auto bytes = identity::from_base64(sv(val.as_string()));
          if (!bytes)
            return invalid("body_base64: not valid base64");
          r.body = std::move(*bytes);
        }
        if (r.body.size() > lim.max_body_bytes)
          return error{errc::message_too_large,
                       std::string{k} + ": " + std::to_string(r.body.size()) + " bytes, more than the "
                         + std::to_string(lim.max_body_bytes) + " allowed"};
      } else if (k == "timeout_ms") {
        auto n = positive(val, k, static_cast<std::uint64_t>(lim.max_timeout.count()));
        if (!n)
          return n.error_value();
        r.timeout = std::chrono::milliseconds{*n};
      } else if (k == "max_response_bytes") {
        auto n = positive(val, k, lim.max_response_bytes);
        if (!n)
          return n.error_value();
        r.max_response_bytes = static_cast<std::size_t>(*n);
      } else {
        return invalid(excerpt(k, 40) + ": unknown field (url, method, headers, body, body_base64, "
                                        "timeout_ms, max_response_bytes)");
      }
    }
    if (!has_url)
      return invalid("url: missing");
    return r;
  } catch (const std::exception& e) {
    return invalid(std::string{"the fetch request could not be read ("} + e.what() + ")");
  }
}

namespace {

// A body as text when it is UTF-8, else as base64 (JSON strings are text).
void put_body(json::object& o, const std::string& body) {
  if (is_valid_utf8(body))
    o["body"] = body;
  else
    o["body_base64"] = identity::to_base64(body);
}

}  // namespace

std::string to_json(const request& r) {
  json::object hs;
  for (auto& [k, v] : r.headers)
    hs[k] = v;
  json::object o{{"method", r.method},
                 {"url", r.url},
                 {"headers", std::move(hs)},
                 {"timeout_ms", r.timeout.count()},
                 {"max_response_bytes", r.max_response_bytes}};
  put_body(o, r.body);
  return json_text(o);
}

// -- results -----------------------------------------------------------------------

std::string to_json(const response& r) {
  json::object hs;
  for (auto& [k, v] : r.headers) {
    auto name = to_valid_utf8(k);
    auto value = to_valid_utf8(v);
    if (auto* prev = hs.if_contains(name); prev && prev->is_string())
      *prev = std::string{sv(prev->as_string())} + ", " + value;
    else
      hs[name] = value;
  }
  json::object o{{"status", r.status}, {"headers", std::move(hs)}};
  put_body(o, r.body);
  return json_text(o);
}

std::string to_json(const failure& f) {
  return json::serialize(json::object{{"code", f.code}, {"message", to_valid_utf8(f.message)}});
}

}  // namespace ticktock::fetch
