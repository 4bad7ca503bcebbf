#include "ticktock/runtime/detail/json_check.hpp"

#include <algorithm>
#include <set>
#include <vector>

#include <boost/json.hpp>
#include <boost/json/basic_parser_impl.hpp>


namespace ticktock::detail {

namespace json = boost::json;

std::string quoted(std::string_view s) {
  constexpr std::size_t max = 64;
  bool cut = s.size() > max;
  std::string out = json::serialize(json::string_view{s.data(), cut ? max : s.size()});
  if (cut)
    out += "...";
  return out;
}

std::string member_path(const std::string& path, std::string_view key) {
  bool plain = !key.empty() && key.size() <= 64 &&
               std::all_of(key.begin(), key.end(), [](char c) {
                 return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '_' || c == '-';
               });
  if (!plain)
    return path + "[" + quoted(key) + "]";
  return path.empty() ? std::string{key} : path + "." + std::string{key};
}

std::string index_path(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

namespace {

// A SAX handler that finds the first duplicate key and its path.
struct duplicate_finder {
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);

  struct frame {
    bool array = false;
    std::size_t index = 0;
    std::string key;
    std::set<std::string, std::less<>> keys;
  };
  std::vector<frame> stack;
  std::string key_buf;
  std::string duplicate_path;  // set when a duplicate was found

  void value_done() {
    if (!stack.empty() && stack.back().array)
      ++stack.back().index;
  }

  std::string path_of_top() const {
    std::string path;
    for (std::size_t i = 0; i + 1 < stack.size(); ++i)
      path = stack[i].array ? index_path(path, stack[i].index) : member_path(path, stack[i].key);
    return path;
  }

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_array_begin(json::error_code&) {
    stack.push_back(frame{true, 0, {}, {}});
    return true;
  }
  bool on_array_end(std::size_t, json::error_code&) {
    stack.pop_back();
    value_done();
    return true;
  }
  bool on_object_begin(json::error_code&) {
    stack.push_back(frame{});
    return true;
  }
  bool on_object_end(std::size_t, json::error_code&) {
    stack.pop_back();
    value_done();
    return true;
  }
  bool on_string_part(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_string(json::string_view, std::size_t, json::error_code&) {
    value_done();
    return true;
  }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    key_buf.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code& ec) {
    key_buf.append(s.data(), s.size());
    frame& top = stack.back();
    if (!top.keys.insert(key_buf).second) {
      duplicate_path = member_path(path_of_top(), key_buf);
      ec = boost::system::errc::make_error_code(boost::system::errc::invalid_argument);
      return false;
    }
    top.key = std::move(key_buf);
    key_buf.clear();
    return true;
  }
  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(std::int64_t, json::string_view, json::error_code&) {
    value_done();
    return true;
  }
  bool on_uint64(std::uint64_t, json::string_view, json::error_code&) {
    value_done();
    return true;
  }
  bool on_double(double, json::string_view, json::error_code&) {
    value_done();
    return true;
  }
  bool on_bool(bool, json::error_code&) {
    value_done();
    return true;
  }
  bool on_null(json::error_code&) {
    value_done();
    return true;
  }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }
};

}  // namespace

json_scan scan_json(std::string_view text) {
  json::basic_parser<duplicate_finder> p{json::parse_options{}};
  json::error_code ec;
  std::size_t used = p.write_some(false, text.data(), text.size(), ec);
  json_scan r;
  r.duplicate = std::move(p.handler().duplicate_path);
  if (ec && r.duplicate.empty())
    r.error = ec.message() + " at byte " + std::to_string(used);
  return r;
}

}  // namespace ticktock::detail
