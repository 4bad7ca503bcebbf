// The http service's executor: one fetch::request, one exchange of the
// shared client, its answer as a fetch::response whatever the status.

#include "ticktock/drivers/http_fetch.hpp"

#include <algorithm>

#include "http_client.hpp"

namespace ticktock::drivers {

namespace {

namespace fc = fetch::failure_code;

bool has_header(const fetch::request& r, std::string_view lower_name) {
  return std::any_of(r.headers.begin(), r.headers.end(), [&](const auto& h) {
    if (h.first.size() != lower_name.size())
      return false;
    for (std::size_t i = 0; i < lower_name.size(); ++i) {
      char c = h.first[i];
      if (c >= 'A' && c <= 'Z')
        c = static_cast<char>(c - 'A' + 'a');
      if (c != lower_name[i])
        return false;
    }
    return true;
  });
}

class http_fetch final : public fetch::executor {
public:
  http_fetch(std::shared_ptr<detail::http_client> client, http_fetch_options o)
    : client_(std::move(client)), o_(std::move(o)) {}

  fetch::outcome run(const fetch::request& r, const std::atomic<bool>& cancelled) override {
    detail::http_client::request req;
    req.method = r.method;
    req.target = r.parts.target;
    req.headers = r.headers;
    if (!has_header(r, "user-agent") && !o_.user_agent.empty())
      req.headers.emplace_back("User-Agent", o_.user_agent);
    // The tick's request id goes along, so a ticktockd (or any service that
    // keeps X-Request-Id) at the other end logs the same id.
    if (!r.request_id.empty() && !has_header(r, "x-request-id"))
      req.headers.emplace_back("X-Request-Id", r.request_id);
    req.body = r.body;
    detail::http_client::options opts;
    opts.timeout = r.timeout;
    opts.max_response_bytes = r.max_response_bytes;
    opts.head_request = r.method == "HEAD";
    opts.public_only = !o_.allow_private;
    auto a = client_->exchange(r.parts, req, opts, cancelled);
    if (a.code == fc::address_not_allowed)
      return fetch::failure{a.code, "refused: " + a.message
                                      + "; ticktockd --http-fetch-private allows private addresses"};
    if (!a.code.empty())
      return fetch::failure{a.code, a.message};
    if (a.truncated)
      return fetch::failure{std::string{fc::malformed_response},
                            "the answer from " + r.parts.host_header
                              + " was cut off before the end of its body"};
    fetch::response out;
    out.status = a.h.status;
    out.headers = std::move(a.h.headers);
    out.body = std::move(a.body);
    return out;
  }

private:
  std::shared_ptr<detail::http_client> client_;
  http_fetch_options o_;
};

}  // namespace

expected<std::shared_ptr<fetch::executor>> make_http_fetch(http_fetch_options options) {
  for (char c : options.user_agent)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return error{errc::invalid_argument, "http fetch: user_agent contains a control character"};
  auto client = detail::http_client::make(options.ca_file);
  if (!client)
    return error{errc::invalid_argument, "http fetch: " + client.error_value().message()};
  return std::shared_ptr<fetch::executor>{std::make_shared<http_fetch>(std::move(*client), std::move(options))};
}

}  // namespace ticktock::drivers
