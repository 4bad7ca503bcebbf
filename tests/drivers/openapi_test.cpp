// docs/openapi.yaml and the router agree: every route the server serves is
// documented, and every documented operation is served.

#include <catch2/catch.hpp>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "router.hpp"

namespace {

using route_set = std::set<std::string>;

std::string upper(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::size_t indent_of(const std::string& line) {
  return line.find_first_not_of(' ');
}

// The key of a "key:" or "'key':" line, without indent and quotes; empty if
// the line is not a bare mapping key.
std::string key_of(const std::string& line) {
  auto begin = indent_of(line);
  if (begin == std::string::npos || line.back() != ':')
    return {};
  auto key = line.substr(begin, line.size() - begin - 1);
  if (key.size() >= 2 && (key.front() == '\'' || key.front() == '"') && key.back() == key.front())
    key = key.substr(1, key.size() - 2);
  return key;
}

// "METHOD /path" for each operation under `paths:`: path keys at two spaces,
// methods at four (the layout docs/openapi.yaml keeps).
route_set documented_routes(const std::string& file) {
  static const route_set methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"};
  std::ifstream in{file};
  REQUIRE(in);
  route_set out;
  bool in_paths = false;
  std::string path;
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r'))
      line.pop_back();
    auto indent = indent_of(line);
    if (line.empty() || indent == std::string::npos || line[indent] == '#')
      continue;
    if (indent == 0) {
      in_paths = line == "paths:";
      continue;
    }
    if (!in_paths)
      continue;
    auto key = key_of(line);
    if (indent == 2) {
      INFO("path key: " << line);
      REQUIRE(!key.empty());
      REQUIRE(key.front() == '/');
      path = key;
    } else if (indent == 4 && methods.count(key)) {
      auto route = upper(key) + " " + path;
      INFO("operation listed twice: " << route);
      CHECK(out.insert(route).second);
    }
  }
  // The file says once (info.description) that every GET route answers HEAD.
  route_set heads;
  for (auto& r : out)
    if (r.starts_with("GET "))
      heads.insert("HEAD " + r.substr(4));
  out.insert(heads.begin(), heads.end());
  return out;
}

std::string show(const route_set& s) {
  std::ostringstream out;
  for (auto& r : s)
    out << "\n  " << r;
  return out.str();
}

}  // namespace

TEST_CASE("the router lists each route once") {
  auto list = ticktock::drivers::router::routes();
  route_set served{list.begin(), list.end()};
  CHECK(served.size() == list.size());
}

TEST_CASE("docs/openapi.yaml documents exactly the routes the server serves") {
  auto list = ticktock::drivers::router::routes();
  route_set served{list.begin(), list.end()};
  auto documented = documented_routes(OPENAPI_YAML);
  REQUIRE(!documented.empty());

  route_set undocumented, unserved;
  for (auto& r : served)
    if (!documented.count(r))
      undocumented.insert(r);
  for (auto& r : documented)
    if (!served.count(r))
      unserved.insert(r);
  INFO("served but missing from " OPENAPI_YAML ":" << show(undocumented));
  INFO("in " OPENAPI_YAML " but not in router::routes():" << show(unserved));
  CHECK(undocumented.empty());
  CHECK(unserved.empty());
}
