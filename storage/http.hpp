#pragma once
// The HTTP layer under the storage clients: plain request/response values and a transport
// interface. libcurl stays behind make_curl_transport(); tests pass a fake transport.

#include "storage/error.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal::storage {

/// HTTP verbs the Azure Storage REST API uses (MERGE is the Table service's partial update).
enum class http_method : std::uint8_t { get, head, put, post, merge, del };

/// "GET", "PUT", ..., "DELETE".
std::string_view to_string(http_method m) noexcept;

/// One request as it goes on the wire. The transport sends exactly these headers (plus
/// Content-Length, computed from `body`); it adds no Content-Type, Expect or Date of its own.
struct http_request {
  http_method method = http_method::get;
  std::string url;                                          ///< absolute, path percent-encoded, query included
  std::vector<std::pair<std::string, std::string>> headers; ///< in send order, names as given
  std::string body;                                         ///< raw bytes; empty = no body
  std::chrono::milliseconds timeout{0};                     ///< whole request; 0 = transport default
  /// Largest response body accepted, in bytes; 0 = no limit. A response announcing more
  /// (Content-Length) is abandoned before its body is read, one that grows past it as soon as
  /// it does: errc::limit_exceeded, not retryable. Bounds the memory one response can take.
  std::uint64_t max_body_bytes = 0;
};

/// One response. Header names are lower-cased; a header sent twice appears twice.
struct http_response {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// HTTP attempts pipeline::send made to get this response, counting the first; > 1 means an
  /// earlier attempt may have landed (a 2xx batch answer can still hold a 409 caused by it).
  /// Transports leave it 1.
  int attempts = 1;

  /// First value of header `lower_name` (which must be lower-case), if present.
  std::optional<std::string_view> header(std::string_view lower_name) const noexcept {
    for (const auto& [k, v] : headers)
      if (k == lower_name)
        return std::string_view(v);
    return std::nullopt;
  }
};

/// Sends one HTTP request. An HTTP error status is NOT an error here: any response that
/// arrived is returned as a value; only transport failures come back as `error`
/// (errc::timeout or errc::transport, with `retryable = true`; the curl transport sets
/// `retryable = false` for failures that cannot heal: a TLS certificate not verified, a bad
/// CA file, a malformed URL or unsupported scheme, out of memory).
/// Implementations must be thread-safe.
class http_transport {
public:
  virtual ~http_transport() = default;
  [[nodiscard]] virtual result<http_response> send(const http_request& req) = 0;
};

/// Settings of the libcurl transport. Fixed at construction.
struct curl_transport_options {
  std::chrono::milliseconds connect_timeout{2'000};
  std::chrono::milliseconds request_timeout{30'000}; ///< default when the request gives none
  bool verify_peer = true;                           ///< TLS peer and host verification
  std::string ca_file;                               ///< PEM bundle; empty = system default
  std::size_t max_idle_connections = 16;             ///< kept-alive connections per transport
  /// An idle handle (and its kept-alive connections) unused this long is closed (at the next
  /// request, or by the transport's reaper thread within another max_idle_time): the pool follows the recent concurrency instead of keeping its all-time peak
  /// (issue 16: a worker's descriptors grew 34 → 85 over a 30-minute soak while slow storage
  /// raised the number of requests in flight now and then).
  std::chrono::milliseconds max_idle_time{15'000};
};

/// The libcurl transport: keep-alive connection reuse, no per-request handle churn (a pool
/// of easy handles, each keeping its connection; at most `max_idle_connections` are kept, none
/// idle for longer than `max_idle_time`; one reaper thread per transport closes those).
/// Sends an explicit Content-Length (0 for a bodyless PUT/POST/MERGE/DELETE), an empty
/// `Expect:`, and no Content-Type of its own. Thread-safe.
/// Errors: invalid_argument if `opts` is unusable (non-positive timeout, unreadable ca_file).
[[nodiscard]] result<std::shared_ptr<http_transport>>
make_curl_transport(const curl_transport_options& opts = {});

} // namespace shoal::storage
