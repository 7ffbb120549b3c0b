#pragma once
// The storage fault proxy (issue 16): an HTTP/1.1 proxy in front of Azurite's three services that
// injects what real Azure Storage and real networks do, by configurable rates and schedules, and
// counts what it injected. Test equipment for the chaos suite (tests/system/chaos).
//
// It forwards each request byte for byte (method, path, Host, headers, body), so SharedKey
// signatures made for the proxy's endpoints still verify upstream: a client gets the connection
// string of connection_string(), whose Blob/Queue/TableEndpoint point at the proxy's ports, and
// the proxy relays to the matching Azurite port. What it injects, per request (fault_kind):
//
//   server_busy                503 ServerBusy, no Retry-After; not forwarded
//   server_busy_retry_after    503 ServerBusy with Retry-After: retry_after_s; not forwarded
//   operation_timed_out        500 OperationTimedOut; not forwarded
//   operation_timed_out_after  forwarded and executed, then answered 500 OperationTimedOut
//                              ("may or may not have succeeded on the server side")
//   reset_before_response      forwarded and executed, then the connection is reset (RST)
//                              before the first response byte
//   reset_mid_body             forwarded and executed, the response head and half its body
//                              relayed, then reset
//   latency                    forwarded after delay_ms
//   stall                      held for delay_ms (longer than the client's request timeout),
//                              then the connection is closed; never forwarded
//   outage                     every request and every new connection reset for the rule's window
//
// Error bodies are the services' own: XML <Error><Code>…</Code><Message>…</Message></Error> for
// blob and queue, {"odata.error":{"code":…,"message":{"lang":"en-US","value":…}}} for tables,
// with x-ms-error-code and x-ms-request-id (REST "Status and error codes", "Table service error
// codes"; shared/reference/azure-storage-rest.md §3, §8).
//
// Control, over plain HTTP on control_port():
//   GET  /stats   {"requests":{"blob":n,"queue":n,"table":n,"total":n},"injected":{kind:n,…},
//                  "connections":n,"plan_age_ms":n}
//   PUT  /plan    a plan (fault_plan::from_json) replaces the current one; its clock restarts
//   POST /reset   counters to zero
// A plan is JSON: {"seed": 1, "rules": [{"kind": "server_busy", "rate": 0.01,
//   "services": ["table"], "methods": ["POST"], "from_ms": 0, "to_ms": 60000, "period_ms": 10000, "active_ms": 2000,
//   "delay_ms": 0, "retry_after_s": 1}, …]}. A rule applies while now - plan start is within
//   [from_ms, to_ms) and, with period_ms > 0, within the first active_ms of each period; then
//   with probability `rate` (outage: always). Rules are tried in order; the first that fires wins.

#include "workers/error.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::tests {

/// One kind of injected fault (see the file comment).
enum class fault_kind : std::uint8_t {
  server_busy,
  server_busy_retry_after,
  operation_timed_out,
  operation_timed_out_after,
  reset_before_response,
  reset_mid_body,
  latency,
  stall,
  outage,
};

/// Every fault kind, in declaration order.
inline constexpr std::array<fault_kind, 9> all_fault_kinds{
    fault_kind::server_busy,           fault_kind::server_busy_retry_after, fault_kind::operation_timed_out,
    fault_kind::operation_timed_out_after, fault_kind::reset_before_response, fault_kind::reset_mid_body,
    fault_kind::latency,               fault_kind::stall,                   fault_kind::outage};

/// "server_busy", "server_busy_retry_after", … (the names plans and stats use).
std::string_view to_string(fault_kind k) noexcept;
/// Inverse of to_string. nullopt for an unknown name.
std::optional<fault_kind> parse_fault_kind(std::string_view name) noexcept;

/// One rule of a plan. Times are relative to the moment the plan was set.
struct fault_rule {
  fault_kind kind = fault_kind::server_busy;
  double rate = 1.0;                    ///< probability per request, [0, 1]; outage ignores it
  std::vector<std::string> services;    ///< "blob" | "queue" | "table"; empty = all three
  std::vector<std::string> methods;     ///< HTTP methods ("GET", "POST", …) it applies to; empty = all
  std::chrono::milliseconds from{0};    ///< active from this offset …
  std::chrono::milliseconds to{std::chrono::milliseconds::max()}; ///< … until this one
  std::chrono::milliseconds period{0};  ///< > 0: active only in the first `active` of each period
  std::chrono::milliseconds active{0};  ///< see period
  std::chrono::milliseconds delay{0};   ///< latency and stall: how long
  int retry_after_s = 1;                ///< server_busy_retry_after: the Retry-After value (s)
};

/// What the proxy injects: rules tried in order per request, with a seeded PRNG.
struct fault_plan {
  std::uint64_t seed = 1;
  std::vector<fault_rule> rules;

  /// Parses the JSON form (file comment). Errors: invalid_argument naming the bad rule or key.
  [[nodiscard]] static workers::result<fault_plan> from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
};

/// Where the proxy listens and what it relays to.
struct fault_proxy_options {
  std::string upstream_connection_string; ///< Azurite's (explicit Blob/Queue/TableEndpoint, http)
  std::string listen_host = "127.0.0.1";  ///< the three service ports and the control port
};

/// The proxy. Move-only; the destructor stops it. start()/stop() owner only; set_plan(),
/// stats() and reset() are thread-safe.
class fault_proxy {
public:
  /// Binds four free ports on listen_host (blob, queue, table, control) without serving yet, so
  /// a launcher can fork before start(). Errors: invalid_argument (a connection string without
  /// explicit http endpoints), io (socket/bind/listen failed).
  [[nodiscard]] static workers::result<fault_proxy> listen(const fault_proxy_options& opts);

  fault_proxy(fault_proxy&&) noexcept;
  fault_proxy& operator=(fault_proxy&&) noexcept;
  fault_proxy(const fault_proxy&) = delete;
  fault_proxy& operator=(const fault_proxy&) = delete;
  ~fault_proxy();

  /// Starts the accept threads (one connection = one thread). Idempotent.
  void start();
  /// Closes the listeners and every connection, joins every thread. Idempotent.
  void stop();

  /// The service ports (blob, queue, table) and the control port.
  std::array<int, 3> ports() const noexcept;
  int control_port() const noexcept;
  /// The upstream connection string with its endpoints moved to the proxy's ports.
  std::string connection_string() const;

  /// Replaces the plan; its schedule clock restarts now. Thread-safe.
  void set_plan(fault_plan plan);
  /// Counters since start or the last reset(), as GET /stats returns them. Thread-safe.
  nlohmann::json stats() const;
  /// Zeroes the counters. Thread-safe.
  void reset();

private:
  struct impl;
  explicit fault_proxy(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// A client of a proxy's control port (its own process, or this one's).
class fault_proxy_client {
public:
  explicit fault_proxy_client(int control_port, std::string host = "127.0.0.1")
      : port_(control_port), host_(std::move(host)) {}
  /// PUT /plan. Errors: io (no answer), invalid_argument (the proxy refused the plan).
  [[nodiscard]] workers::result<void> set_plan(const fault_plan& plan) const;
  /// GET /stats. Errors: io, parse.
  [[nodiscard]] workers::result<nlohmann::json> stats() const;
  /// POST /reset. Errors: io.
  [[nodiscard]] workers::result<void> reset() const;

private:
  int port_;
  std::string host_;
};

/// One HTTP/1.0 exchange on host:port with a plain socket (Connection: close): the status code
/// and the body. Errors: io (connect, send, receive; 10 s bound), parse (no status line).
[[nodiscard]] workers::result<std::pair<int, std::string>>
http_exchange(const std::string& host, int port, std::string_view method, std::string_view path,
              std::string_view body = {});

} // namespace shoal::tests
