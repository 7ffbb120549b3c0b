#pragma once
// Errors of shoal::storage: values, never exceptions (STYLE.md §2.1).

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace shoal::storage {

/// Stable error codes. Logged and carried in envelopes: append new values, never renumber.
enum class errc : std::uint8_t {
  invalid_argument = 1,    ///< caller input rejected before sending (bad key, name, size, config)
  timeout = 2,             ///< connect or request timeout (transport level, or HTTP 408 / 500 OperationTimedOut)
  transport = 3,           ///< connection refused/reset, DNS, TLS failure: no HTTP response
  not_found = 4,           ///< HTTP 404
  conflict = 5,            ///< HTTP 409 (EntityAlreadyExists, BlobAlreadyExists, ...)
  precondition_failed = 6, ///< HTTP 412 (If-Match / If-None-Match / append position not met)
  throttled = 7,           ///< HTTP 429 / 503 ServerBusy
  server = 8,              ///< other HTTP 5xx
  auth = 9,                ///< HTTP 401 / 403
  limit_exceeded = 10,     ///< an Azure limit would be or was exceeded (413, EntityTooLarge, ...)
  bad_request = 11,        ///< other HTTP 4xx
  bad_response = 12,       ///< the service answered something we could not parse
};

/// Name of `c`, e.g. "precondition_failed". Never empty.
std::string_view to_string(errc c) noexcept;

/// What failed, with enough context to decide on a retry and to log it.
/// Never contains an account key or a SAS signature.
struct error {
  errc code = errc::invalid_argument;
  int http_status = 0;      ///< 0 when no HTTP response was received
  std::string service_code; ///< x-ms-error-code, e.g. "UpdateConditionNotSatisfied"
  std::string request_id;   ///< x-ms-request-id, for support tickets
  bool retryable = false;   ///< whether the retry policy treats it as transient
  int attempts = 1;         ///< HTTP attempts made; > 1 means an earlier attempt may have landed
  std::string message;      ///< for humans; never parse it

  /// A caller-side error (no request was sent).
  static error invalid(std::string msg) {
    return error{errc::invalid_argument, 0, {}, {}, false, 0, std::move(msg)};
  }
  /// A caller-side error that an Azure limit would be exceeded (no request was sent).
  static error exceeded(std::string msg) {
    return error{errc::limit_exceeded, 0, {}, {}, false, 0, std::move(msg)};
  }
  /// The service answered something that could not be parsed (one attempt made).
  static error malformed_response(std::string msg) {
    return error{errc::bad_response, 0, {}, {}, false, 1, std::move(msg)};
  }
  /// One line for logs: "precondition_failed (412 UpdateConditionNotSatisfied): msg [req ...]".
  std::string describe() const;
};

template <class T> using result = std::expected<T, error>;

/// `e` with what the caller was doing put in front of its message ("what: message", or just
/// "what" when the message is empty); code, status, ids and attempts are kept. Thread-safe (pure).
error with_context(error e, std::string_view what);

/// Maps an HTTP status (and x-ms-error-code) to an errc. 2xx/3xx are not errors; callers
/// only pass failures. Thread-safe (pure).
errc errc_from_http(int status, std::string_view service_code) noexcept;

} // namespace shoal::storage
