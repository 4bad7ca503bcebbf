// Fuzzes the HTTP API in process: the fuzz input is a request in HTTP/1.1
// text form ("METHOD TARGET\n", "name: value" header lines, an empty line,
// then the body), handed to drivers::router::handle against a node with two
// agents. Checks that every answer is a valid status with a JSON error body
// for errors.

#include <boost/json.hpp>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "fuzz_node.hpp"

using namespace ticktock;

namespace {

fuzz::fuzz_env* env = nullptr;

std::string_view next_line(std::string_view& s) {
  auto nl = s.find('\n');
  auto line = s.substr(0, nl);
  s = nl == std::string_view::npos ? std::string_view{} : s.substr(nl + 1);
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  return line;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  env = new fuzz::fuzz_env();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};
  drivers::request req;
  auto first = next_line(in);
  auto sp = first.find(' ');
  req.method = std::string{first.substr(0, sp)};
  req.target = sp == std::string_view::npos ? std::string{} : std::string{first.substr(sp + 1)};
  while (!in.empty()) {
    auto line = next_line(in);
    if (line.empty())
      break;
    auto colon = line.find(':');
    std::string name{line.substr(0, colon)};
    for (auto& c : name)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto value = colon == std::string_view::npos ? std::string_view{} : line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ')
      value.remove_prefix(1);
    req.headers[name] = std::string{value};
  }
  req.body = std::string{in};
  req.request_id = "fuzz";

  auto r = env->api->handle(req);
  if (r.status < 100 || r.status > 599) {
    std::fprintf(stderr, "router answered status %u\n", r.status);
    std::abort();
  }
  if (r.status >= 400 && r.stream == drivers::stream_kind::none) {
    // Every error is {"error":{"code","message",...}}.
    boost::system::error_code ec;
    auto v = boost::json::parse(r.body, ec);
    if (ec || !v.is_object() || !v.as_object().contains("error")
        || !v.at("error").is_object() || !v.at("error").as_object().contains("code")) {
      // Agents' own replies (/a/{id}) are theirs to shape.
      if (r.route != "/a/{id}" || r.status < 400) {
        std::fprintf(stderr, "error %u without an error body: %s\n", r.status, r.body.c_str());
        std::abort();
      }
    }
  }
  // The fixed agents come back if an input deleted them.
  for (auto id : {"a1", "a2"})
    if (auto st = env->n->status(id); !st || st->state == agent_state::terminated)
      (void)env->n->create(id, "fuzz", "{}");
  return 0;
}
