// json_text: Boost.JSON's serializer, but for how doubles are written.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <utility>

#include <boost/json.hpp>

#include "ticktock/runtime/text.hpp"

namespace ticktock {

namespace {

namespace json = boost::json;

bool holds_double(const json::value& v) {
  switch (v.kind()) {
    case json::kind::double_: return true;
    case json::kind::array:
      return std::any_of(v.get_array().begin(), v.get_array().end(), holds_double);
    case json::kind::object:
      return std::any_of(v.get_object().begin(), v.get_object().end(),
                         [](const json::key_value_pair& kv) { return holds_double(kv.value()); });
    default: return false;
  }
}

void append(std::string& out, const json::value& v) {
  switch (v.kind()) {
    case json::kind::double_: {
      // As Python's repr: plain digits from 1e-4 up to 1e16, else an exponent.
      double d = v.get_double();
      double mag = std::fabs(d);
      bool plain = mag == 0 || (mag >= 1e-4 && mag < 1e16);
      char buf[64];
      auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d,
                                     plain ? std::chars_format::fixed : std::chars_format::scientific);
      if (!std::isfinite(d) || ec != std::errc{}) {
        out += json::serialize(v);  // not a JSON number: as Boost writes it
        return;
      }
      std::string_view text{buf, static_cast<std::size_t>(end - buf)};
      out += text;
      if (plain && text.find('.') == std::string_view::npos)
        out += ".0";
      return;
    }
    case json::kind::array: {
      out += '[';
      bool first = true;
      for (auto& e : v.get_array()) {
        if (!std::exchange(first, false))
          out += ',';
        append(out, e);
      }
      out += ']';
      return;
    }
    case json::kind::object: {
      out += '{';
      bool first = true;
      for (auto& kv : v.get_object()) {
        if (!std::exchange(first, false))
          out += ',';
        out += json::serialize(kv.key());
        out += ':';
        append(out, kv.value());
      }
      out += '}';
      return;
    }
    default: out += json::serialize(v);
  }
}

}  // namespace

std::string json_text(const json::value& v) {
  if (!holds_double(v))
    return json::serialize(v);
  std::string out;
  append(out, v);
  return out;
}

}  // namespace ticktock
