#pragma once
// Errors of shoal::workers (the roles: claimer, worker, persistor, ETL, supervisor).

#include "storage/error.hpp"

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace shoal::workers {

/// Stable error codes. Logged and carried in envelopes: append new values, never renumber.
enum class errc : std::uint8_t {
  invalid_argument = 1, ///< bad input or configuration, rejected before any I/O
  storage = 2,          ///< a storage call failed; `storage_code` says how
  lease_lost = 3,       ///< the record was re-claimed by another owner (its ETag/gen moved on)
  not_found = 4,        ///< no such record, blob or process
  conflict = 5,         ///< a concurrent writer won and the operation cannot be resolved
  io = 6,               ///< local file or process I/O failed (spawn, read, write, disk full)
  timeout = 7,          ///< a deadline passed
  parse = 8,            ///< malformed input data (JSON, CSV, TOML, envelope body)
  cancelled = 9,        ///< stopped by a drain or shutdown
  limit_exceeded = 10,  ///< a configured or Azure limit would be exceeded
  /// A service we depend on cannot serve now, whatever the input: the SQL database's disk is
  /// full, its server is down or restarting. Retry later; never the record's fault.
  unavailable = 11,
};

/// Name of `c`, e.g. "lease_lost". Never empty.
std::string_view to_string(errc c) noexcept;

/// What failed, for logs and for the caller's decision. Never holds a secret.
struct error {
  errc code = errc::invalid_argument;
  std::string message; ///< for humans; never parse it
  /// The storage error behind an errc::storage (or lease_lost/conflict derived from one).
  storage::errc storage_code = storage::errc::invalid_argument;
  int http_status = 0; ///< from the storage error, 0 if none

  /// Wraps a storage error, keeping its code and status; `what` says what was being done.
  static error from_storage(const storage::error& e, std::string_view what);
  /// "lease_lost: record abc is now owned by w2 (gen 7)".
  std::string describe() const;
};

template <class T> using result = std::expected<T, error>;

/// Shorthand: `return fail(errc::parse, "line 3: ...");`
inline std::unexpected<error> fail(errc c, std::string msg) {
  return std::unexpected(error{c, std::move(msg), storage::errc::invalid_argument, 0});
}

} // namespace shoal::workers
