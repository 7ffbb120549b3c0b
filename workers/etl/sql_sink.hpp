#pragma once
// SQL sinks of the ETL load step: SQLite (default) and PostgreSQL (libpqxx), both exactly once.
//
// Every load is ONE SQL transaction that holds, in this order:
//  1. the ledger row of the blob (`shoal_etl_ledger`, primary key = blob name). If it is
//     already there the transaction is rolled back and the load reports `already_loaded`:
//     a blob lands once even when two workers race (SQLite: BEGIN IMMEDIATE serializes the
//     writers; PostgreSQL: the second INSERT … ON CONFLICT DO NOTHING waits on the first
//     transaction's unique-index entry and then inserts nothing) or a worker died after commit;
//  2. per row, a message row (`shoal_etl_messages`, primary key = message id), inserted
//     with INSERT OR IGNORE / ON CONFLICT DO NOTHING; when it already existed the row is a
//     re-sent message and is skipped (counted in `duplicates`);
//  3. the dataset's own insert statement (from configuration) for every new row.
//     With `keyed_by_table` (dataset `message_key = "table"`) step 2 is skipped: the dataset's
//     table has a unique message-id column and its insert ends in `ON CONFLICT (…) DO NOTHING`,
//     so an insert that changes no row is the re-sent message (one B-tree insert per row
//     instead of two);
//  4. the quarantined records of the blob (`shoal_etl_quarantine`).
//
// Schema (both engines; TEXT timestamps are RFC 3339 UTC):
//   shoal_etl_ledger(blob TEXT PRIMARY KEY, dataset TEXT, rows_loaded INTEGER,
//                    duplicates INTEGER, quarantined INTEGER, owner TEXT, loaded_at TEXT)
//   shoal_etl_messages(message_id TEXT PRIMARY KEY, dataset TEXT, blob TEXT)
//   shoal_etl_quarantine(blob TEXT, record_index INTEGER, dataset TEXT, message_id TEXT,
//                        step TEXT, reason TEXT, raw TEXT, at TEXT,
//                        PRIMARY KEY (blob, record_index))
//   shoal_etl_records(message_id TEXT PRIMARY KEY, dest TEXT, event_time TEXT,
//                     payload TEXT, blob TEXT)        -- the generic dataset's table

#include "workers/error.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace shoal::workers::etl {

/// One SQL value: NULL, integer, real or text.
using sql_value = std::variant<std::monostate, std::int64_t, double, std::string>;

/// One row for the dataset's insert statement, with the message id that keys it.
struct load_row {
  std::size_t index = 0;         ///< the record's position in the blob
  std::string message_id;        ///< exactly-once key of the row
  std::vector<sql_value> values; ///< bound to the insert's parameters 1..n, in order
};

/// A record kept out of the dataset's table, with why.
struct quarantine_row {
  std::size_t index = 0;  ///< the record's position in the blob
  std::string message_id; ///< empty when the record had none
  std::string step;       ///< "extract", "validate" or "transform"
  std::string reason;     ///< for humans: the schema violation or the failed conversion
  std::string raw;        ///< the record's bytes as they were in the blob
};

/// Everything one blob loads, in one transaction.
struct load_batch {
  std::string blob;       ///< ledger key: the blob name
  std::string dataset;    ///< dataset name, recorded in the ledger
  std::string insert_sql; ///< the dataset's INSERT with `?` placeholders (PostgreSQL: rewritten to $n)
  std::vector<load_row> rows;
  std::vector<quarantine_row> quarantined;
  std::string owner;      ///< who loads (worker id), recorded in the ledger
  bool keyed_by_table = false; ///< the insert itself skips known message ids (see above)
  /// Optional: called just before COMMIT; returning false rolls the transaction back and load
  /// returns errc::lease_lost (the caller's claim ended: its new owner loads the blob).
  std::function<bool()> may_commit;
};

/// What a load did.
struct load_outcome {
  bool already_loaded = false;  ///< the ledger held the blob: nothing was written
  std::size_t inserted = 0;     ///< rows inserted into the dataset's table
  std::size_t duplicates = 0;   ///< rows skipped because their message id was loaded before
  std::size_t quarantined = 0;  ///< quarantine rows written
};

/// The ledger row of a loaded blob.
struct ledger_entry {
  std::string blob;
  std::string dataset;
  std::int64_t rows_loaded = 0;
  std::int64_t duplicates = 0;
  std::int64_t quarantined = 0;
  std::string owner;
  std::string loaded_at;
};

/// A SQL database the ETL loads into. Owner only (one connection; not thread-safe): give each
/// thread or actor its own sink. Never throws.
class sql_sink {
public:
  virtual ~sql_sink() = default;
  /// "sqlite" or "postgresql".
  virtual std::string_view engine() const noexcept = 0;
  /// Creates the ledger, messages, quarantine and generic tables if missing, then runs `ddl`
  /// (the dataset's CREATE statements; may be empty). Idempotent. Errors: io (SQL error).
  [[nodiscard]] virtual result<void> prepare(std::string_view ddl) = 0;
  /// Loads `b` exactly once (see the file comment). Errors: io (SQL error; the transaction was
  /// rolled back, nothing was written), invalid_argument (a row's value count does not match
  /// the insert's parameters), timeout (SQLite busy longer than busy_timeout), lease_lost
  /// (b.may_commit said no; rolled back).
  [[nodiscard]] virtual result<load_outcome> load(const load_batch& b) = 0;
  /// Loads several blobs in ONE transaction (a worker lane's claimed blobs of one dataset),
  /// each exactly once by its own ledger row as load() does for one, its rows keyed by message
  /// id as before. One result per batch, in order: a blob already in the ledger is
  /// `already_loaded` (its rows skipped, the others loaded); a batch whose may_commit says no
  /// just before COMMIT gets lease_lost and the transaction is redone without it; a batch
  /// refused as invalid_argument (rows that do not fit the insert) makes the others load one
  /// transaction each, so one bad blob holds back no other. Errors of the whole call (nothing
  /// written): io, timeout. The default runs load() per batch (one transaction each).
  [[nodiscard]] virtual result<std::vector<result<load_outcome>>> load_many(std::span<const load_batch* const> batches);
  /// The ledger row of `blob`, if loaded. Errors: io.
  [[nodiscard]] virtual result<std::optional<ledger_entry>> ledger(std::string_view blob) = 0;
  /// Runs a query returning one integer (e.g. `SELECT count(*) FROM t`). For tests and
  /// `shoal etl`. Errors: io.
  [[nodiscard]] virtual result<std::int64_t> scalar(std::string_view sql) = 0;
  /// Runs statements that return nothing. Errors: io.
  [[nodiscard]] virtual result<void> execute(std::string_view sql) = 0;
};

/// Settings of the SQLite sink.
struct sqlite_sink_options {
  std::string path = "./shoal.db";  ///< database file; ":memory:" for a private in-memory db
  std::uint32_t busy_timeout_ms = 30'000; ///< wait this long for another writer's lock
  /// PRAGMA synchronous: "NORMAL" (default with WAL: survives a process crash, not power loss),
  /// "FULL", or "OFF" (bench only).
  std::string synchronous = "NORMAL";
};

/// Opens (creating) a SQLite database in WAL mode. Errors: io.
[[nodiscard]] result<std::unique_ptr<sql_sink>> open_sqlite_sink(const sqlite_sink_options& o);

/// Connects to PostgreSQL with a libpq URL ("postgresql://user@host:port/db"). Errors: io.
[[nodiscard]] result<std::unique_ptr<sql_sink>> open_postgres_sink(const std::string& url);

/// `?` placeholders (outside quotes) rewritten to $1, $2, …, and how many there were.
std::pair<std::string, std::size_t> to_dollar_placeholders(std::string_view sql);

} // namespace shoal::workers::etl
