#include "tests/support/fake_transport.hpp"

namespace shoal::tests {

using storage::error;
using storage::http_request;
using storage::http_response;

fake_transport& fake_transport::respond(int status,
                                        std::vector<std::pair<std::string, std::string>> headers,
                                        std::string body) {
  http_response r;
  r.status = status;
  r.headers = std::move(headers);
  r.body = std::move(body);
  return respond(std::move(r));
}

fake_transport& fake_transport::respond(http_response r) {
  std::lock_guard lock(mu_);
  script_.emplace_back(std::move(r));
  return *this;
}

fake_transport& fake_transport::fail(error e) {
  std::lock_guard lock(mu_);
  script_.emplace_back(std::move(e));
  return *this;
}

fake_transport& fake_transport::fail_timeout() {
  return fail(error{storage::errc::timeout, 0, {}, {}, true, 1, "curl: Timeout was reached (fake)"});
}

fake_transport& fake_transport::fail_connection_reset() {
  return fail(error{storage::errc::transport, 0, {}, {}, true, 1,
                    "curl: Failure when receiving data from the peer: Connection reset by peer "
                    "(fake)"});
}

fake_transport& fake_transport::otherwise(
    std::function<storage::result<http_response>(const http_request&)> handler) {
  std::lock_guard lock(mu_);
  otherwise_ = std::move(handler);
  return *this;
}

std::vector<http_request> fake_transport::requests() const {
  std::lock_guard lock(mu_);
  return received_;
}

std::size_t fake_transport::request_count() const {
  std::lock_guard lock(mu_);
  return received_.size();
}

std::size_t fake_transport::pending() const {
  std::lock_guard lock(mu_);
  return script_.size();
}

storage::result<http_response> fake_transport::send(const http_request& req) {
  std::function<storage::result<http_response>(const http_request&)> handler;
  {
    std::lock_guard lock(mu_);
    received_.push_back(req);
    if (!script_.empty()) {
      outcome next = std::move(script_.front());
      script_.pop_front();
      if (auto* r = std::get_if<http_response>(&next))
        return std::move(*r);
      return std::unexpected(std::get<error>(std::move(next)));
    }
    handler = otherwise_;
  }
  if (handler)
    return handler(req);
  return std::unexpected(
      error{storage::errc::bad_response, 0, {}, {}, false, 1, "fake_transport: script exhausted"});
}

} // namespace shoal::tests
