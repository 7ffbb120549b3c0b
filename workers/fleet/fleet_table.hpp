#pragma once
// The fleet table (`[fleet] table`, default "shoalfleet"; workers/claim/SCHEMA.md "The fleet table"):
// the coordinator lease row and one row per host.
//
// The coordinator lease: PartitionKey "coordinator", RowKey "lease". Acquired by insert when the
// row is absent, or by an ETag-conditional replace once `lease_until` (storage-server time) has
// passed or its holder released it; renewed by an ETag-conditional merge; released by a
// conditional merge that ends the lease at once (the row stays so its epoch keeps increasing).
// Two contenders can never both succeed: the second write's If-Match fails (412) or its insert
// conflicts (409).
//
// Times come from the storage server's clock (storage::server_clock, fed by every response's `Date`
// header and ETag), never from the local wall clock.

#include "storage/table_client.hpp"
#include "workers/error.hpp"
#include "storage/server_clock.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::workers::fleet {

/// The coordinator lease row.
struct coordinator_row {
  std::string host;                                ///< holder's host name
  std::string instance;                            ///< holder's process instance (random per start)
  std::string endpoint;                            ///< holder's host_endpoint ("" = not reachable)
  std::string public_key;                          ///< holder's CURVE public key (Z85; "" = none)
  std::int64_t epoch = 0;                          ///< +1 on every change of holder
  std::chrono::system_clock::time_point lease_until; ///< server time; epoch 0 = released
  std::string etag;                                ///< the row's ETag as read or written
};

/// Who wants the lease.
struct lease_candidate {
  std::string host;       ///< host name
  std::string instance;   ///< unique per process start
  std::string endpoint;   ///< its host_endpoint
  std::string public_key; ///< its CURVE public key
};

/// The outcome of fleet_table::acquire.
struct lease_outcome {
  bool held = false;                  ///< true: `row` is ours now
  std::optional<coordinator_row> row; ///< the current row (ours when held; nullopt: none)
  /// When held: the local steady instant after which we must assume the lease is gone (the
  /// request's send time + lease), so a slow renewal never keeps a stale holder believing.
  std::chrono::steady_clock::time_point valid_until{};
};

/// One host row: PartitionKey "host", RowKey = host name.
struct host_row {
  std::string host;            ///< host name
  std::string instance;        ///< process instance
  std::string endpoint;        ///< host_endpoint ("" = single host)
  std::string public_key;      ///< CURVE public key (Z85; "" = none)
  std::uint32_t workers = 0;   ///< worker processes
  std::chrono::system_clock::time_point heartbeat; ///< server time of the last write
};

/// The fleet table. Thread-safe; copies share the server clock estimate.
class fleet_table {
public:
  /// Opens `client`'s table, creating it if needed, and samples the server clock.
  /// Errors: storage.
  [[nodiscard]] static result<fleet_table> open(storage::table_client client);

  /// The coordinator row, or nullopt if there is none. Errors: storage.
  [[nodiscard]] result<std::optional<coordinator_row>> coordinator() const;
  /// Takes the lease for `me` if nobody holds it (absent, expired, released) or renews it if
  /// `me` (same instance) holds it; otherwise reports the holder. A lost race (409/412) is a
  /// normal outcome (held = false), not an error. Errors: storage.
  [[nodiscard]] result<lease_outcome> acquire(const lease_candidate& me, std::chrono::milliseconds lease) const;
  /// Extends the lease held as `held` (conditional merge on held.etag); returns the new row.
  /// Errors: lease_lost (412/404: someone else took it), storage.
  [[nodiscard]] result<lease_outcome> renew(const coordinator_row& held, std::chrono::milliseconds lease) const;
  /// Ends the lease held as `held` at once so another supervisor can take it over without
  /// waiting. Errors: lease_lost (it was no longer ours), storage.
  [[nodiscard]] result<void> release(const coordinator_row& held) const;
  /// True when `row`'s lease has certainly ended by the server clock.
  bool expired(const coordinator_row& row) const;

  /// Writes (upserts) this host's row with heartbeat = server now. Errors: storage.
  [[nodiscard]] result<void> put_host(const host_row& row) const;
  /// Every host row. Errors: storage.
  [[nodiscard]] result<std::vector<host_row>> hosts() const;
  /// Deletes a host row (absent is fine). Errors: storage.
  [[nodiscard]] result<void> remove_host(const std::string& host) const;

  /// Storage-server time estimate (lower bound), or the local clock before any sample.
  std::chrono::system_clock::time_point server_now() const;
  /// The table client.
  const storage::table_client& client() const noexcept { return client_; }

private:
  fleet_table(storage::table_client c, std::shared_ptr<storage::server_clock> clock)
      : client_(std::move(c)), clock_(std::move(clock)) {}
  std::chrono::system_clock::time_point lease_end(std::chrono::milliseconds lease) const;
  void observe(std::chrono::system_clock::time_point date, const std::string& etag,
               std::chrono::steady_clock::time_point sent) const;
  storage::table_client client_;
  std::shared_ptr<storage::server_clock> clock_;
};

} // namespace shoal::workers::fleet
