#pragma once
// A scriptable http_transport for fault tests (the Azure SDK's TestTransportPolicy idea):
// queue canned responses or transport errors, send requests through a pipeline, then inspect
// every request the "server" received.

#include "storage/http.hpp"

#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace shoal::tests {

/// Answers each send() with the next scripted outcome, in order, and records the request.
/// When the script is empty it answers with the `otherwise` handler if set, else a
/// non-retryable errc::bad_response error ("fake_transport: script exhausted").
/// Thread-safe.
class fake_transport final : public storage::http_transport {
public:
  using outcome = std::variant<storage::http_response, storage::error>;

  // -- scripting ----------------------------------------------------------------------------

  /// Queues a response with `status`, optional headers (names lower-case) and body.
  fake_transport& respond(int status,
                          std::vector<std::pair<std::string, std::string>> headers = {},
                          std::string body = {});
  /// Queues a full response.
  fake_transport& respond(storage::http_response r);
  /// Queues a transport failure.
  fake_transport& fail(storage::error e);
  /// Queues a curl-like timeout (errc::timeout, retryable, status 0).
  fake_transport& fail_timeout();
  /// Queues a curl-like connection reset (errc::transport, retryable, status 0).
  fake_transport& fail_connection_reset();
  /// Answers every request after the script runs out (e.g. "503 forever").
  fake_transport& otherwise(std::function<storage::result<storage::http_response>(
                                const storage::http_request&)> handler);

  // -- inspection ---------------------------------------------------------------------------

  /// Copies of every request received, in order.
  std::vector<storage::http_request> requests() const;
  /// Number of requests received.
  std::size_t request_count() const;
  /// Scripted outcomes not consumed yet.
  std::size_t pending() const;

  // -- http_transport -----------------------------------------------------------------------

  storage::result<storage::http_response> send(const storage::http_request& req) override;

private:
  mutable std::mutex mu_;
  std::deque<outcome> script_;                 // guarded by mu_
  std::vector<storage::http_request> received_; // guarded by mu_
  std::function<storage::result<storage::http_response>(const storage::http_request&)>
      otherwise_; // guarded by mu_
};

} // namespace shoal::tests
