#pragma once
// The request pipeline shared by the table, blob and queue clients:
// endpoint + path + query → x-ms-date/x-ms-version → SharedKey/SharedKeyLite/SAS → transport,
// retried per retry_options (re-stamped and re-signed on every attempt).

#include "storage/connection_string.hpp"
#include "storage/error.hpp"
#include "storage/http.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace shoal::storage {

/// Which service a request goes to; picks the endpoint, the signing scheme and the API version.
enum class service : std::uint8_t { blob, queue, table };

/// Table requests can be signed either way (REST "Authorize with Shared Key").
enum class table_auth_scheme : std::uint8_t { shared_key, shared_key_lite };

/// Exponential backoff with jitter (defaults: 4 attempts, 200 ms doubling, ±20 %; README "Configuration", storage.max_attempts).
/// Retried: 408, 429, 500, 502, 503, 504 and transport errors; never another 4xx.
/// A server delay (x-ms-retry-after-ms / retry-after-ms in ms, Retry-After in seconds)
/// replaces the computed one, still capped at `max_delay`.
struct retry_options {
  int max_attempts = 4;                         ///< counts the first try; 1 = no retries
  std::chrono::milliseconds base_delay{200};    ///< delay before the 2nd attempt
  std::chrono::milliseconds max_delay{30'000};  ///< cap on any one delay
  double jitter = 0.2;                          ///< delay × uniform[1-jitter, 1+jitter]
};

/// Hooks for tests: a manual clock and a fixed jitter make the schedule deterministic.
struct pipeline_hooks {
  std::function<std::chrono::system_clock::time_point()> now; ///< x-ms-date; default system clock
  std::function<double()> random_unit;                        ///< uniform [0,1); default a PRNG
  std::function<void(std::chrono::milliseconds)> sleep;       ///< default this_thread::sleep_for
};

/// Fixed at construction. Every field has a safe default.
struct pipeline_options {
  curl_transport_options http;
  retry_options retry;
  table_auth_scheme table_auth = table_auth_scheme::shared_key;
  std::string blob_api_version = "2023-11-03";
  std::string queue_api_version = "2023-11-03";
  std::string table_api_version = "2019-02-02";
  pipeline_hooks hooks;
};

/// A request relative to a service endpoint.
struct storage_request {
  http_method method = http_method::get;
  std::string path;  ///< after the endpoint, starts with '/', already percent-encoded
  std::vector<std::pair<std::string, std::string>> query;   ///< raw names/values; encoded by send()
  std::vector<std::pair<std::string, std::string>> headers; ///< If-Match, Content-Type, x-ms-*, ...
  std::string body;
  std::chrono::milliseconds timeout{0}; ///< 0 = the transport's request_timeout
  std::uint64_t max_body_bytes = 0;     ///< largest response body accepted (http_request's); 0 = any
};

// -- request counts -------------------------------------------------------------------------------

/// How many requests of one kind every pipeline of this process sent (shoal run's cost summary,
/// the supervisor's /metrics): each HTTP attempt counts, retries included, whatever its answer.
struct request_count {
  service svc = service::table;
  std::string op;       ///< operation kind: request_kind()
  std::string resource; ///< table, container or queue name ("" for account-level requests)
  std::uint64_t count = 0;
};

/// The operation kind of `req` for `svc`, a short stable name: table `insert`, `get` (one entity
/// by keys), `query`, `merge`, `update` (PUT: replace or insert-or-replace), `delete`, `batch`
/// (entity group transaction), `create_table`, `delete_table`, `list_tables`; blob `put`,
/// `get`, `properties`, `delete`, `put_block`, `put_block_list`, `append_block`,
/// `set_metadata`, `list`, `create_container`, `delete_container`; queue `put_message`,
/// `get_messages`, `peek_messages`, `delete_message`, `update_message`, `create_queue`,
/// `delete_queue`, `properties`; `other` for anything else. Thread-safe (pure).
std::string_view request_kind(service svc, const storage_request& req) noexcept;

/// The table, container or queue `req` addresses: the first segment of its path (up to '(' for
/// tables); for a table `$batch`, the table named by the body's first inner request. Pure.
std::string request_resource(service svc, const storage_request& req);

/// Every request kind counted so far in this process, sorted by service, resource, op.
/// Thread-safe.
std::vector<request_count> process_request_counts();

/// "blob", "queue" or "table".
std::string_view to_string(service svc) noexcept;

/// Signs and sends storage requests with retries. Thread-safe; copies share the transport.
class pipeline {
public:
  /// `transport` defaults to a libcurl transport built from `opts.http`; tests pass a fake.
  /// Errors: invalid_argument (no endpoint for a service is fine: send() then fails).
  [[nodiscard]] static result<pipeline> make(storage_account account, pipeline_options opts = {},
                                             std::shared_ptr<http_transport> transport = nullptr);

  /// Sends `req` to `svc`. 2xx and 3xx responses are returned as values, with
  /// http_response::attempts set (> 1 when retried); every other status
  /// becomes an error carrying http_status, x-ms-error-code, x-ms-request-id, the service's
  /// message, `retryable` and `attempts` (> 1 when retried: a 409 or 412 then may stem from
  /// this same request's earlier attempt, which callers resolve by re-reading).
  /// Authorization: the account's SAS when it has one (appended to the URL, no Authorization
  /// header), else SharedKey (SharedKeyLite for tables if configured), else anonymous.
  /// Errors: invalid_argument (no endpoint for `svc`, path not starting with '/'; nothing
  /// sent); timeout / transport (no response, retried unless a TLS or URL problem);
  /// errc_from_http() of the status otherwise (408, 429, 500, 502, 503, 504 retried).
  /// Blocks for the retries' delays (hooks.sleep). Thread-safe.
  [[nodiscard]] result<http_response> send(service svc, const storage_request& req) const;
  /// As send(svc, req), taking the request's body instead of copying it (a blob put of a few
  /// MiB then costs no whole-body copy in the pipeline). `req` is left with an empty body.
  [[nodiscard]] result<http_response> send(service svc, storage_request&& req) const;

  /// The account this pipeline signs for (its key is never logged).
  const storage_account& account() const noexcept;
  /// The endpoint base of `svc`, e.g. "http://127.0.0.1:10002/devstoreaccount1".
  const std::string& endpoint(service svc) const noexcept;
  /// The options in force, with the default hooks filled in.
  const pipeline_options& options() const noexcept;

private:
  result<http_response> send_with_body(service svc, const storage_request& req, std::string body) const;
  struct impl;
  explicit pipeline(std::shared_ptr<const impl> p) : impl_(std::move(p)) {}
  std::shared_ptr<const impl> impl_;
};

} // namespace shoal::storage
