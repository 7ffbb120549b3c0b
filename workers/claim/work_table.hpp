#pragma once
// The work table (the schema and protocol: workers/claim/SCHEMA.md): records of named
// queues, sharded over partitions, claimed by many independent processes with optimistic ETag
// updates and no broker. Enqueue, claim, renew, complete, fail, release, the operator views
// (get, list, counts, requeue, purge) and housekeeping (sweep, migrate, check).
//
// Layout 2 (SCHEMA.md "Keys"): each record is a record row (RowKey = the escaped id) plus, while
// it is pending or claimed, a *ticket* row in the same partition whose RowKey starts with the
// time it became claimable (`%|{due}|{id}`). A claim is a key-range query over the tickets that
// are due, so its cost does not grow with the number of done records; every change of a record
// and its ticket is ONE entity group transaction, so the two never disagree.
//
// Guarantees (see SCHEMA.md "Protocol"):
//  - Every state change of a claimed record is conditional on the ETag of its ticket as the
//    claim or its latest renewal left it. A claim sets owner, gen + 1 (the fencing token) and
//    attempts + 1; a holder whose record moved on (other owner or gen) gets errc::lease_lost.
//  - Leases are computed from the storage server's clock (storage::server_clock), never the local one.
//  - Enqueue is idempotent: an id already present is left untouched (done records: while they
//    are kept, [work] done_retention_ms).
//
// REST pages followed: Insert/Merge/Delete Entity, Query Entities, Performing entity group
// transactions (reference §3–§5), Put/Get/Delete Blob for oversized payloads (§6).

#include "storage/blob_client.hpp"
#include "storage/table_client.hpp"
#include "workers/claim/claim_counters.hpp"
#include "workers/config.hpp"
#include "workers/error.hpp"
#include "storage/server_clock.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers {

// -- values ---------------------------------------------------------------------------------------

/// The life cycle of a record: pending → claimed → done, or back to pending (fail, release),
/// or dead after max_attempts.
enum class record_status : std::uint8_t { pending, claimed, done, dead };

/// "pending", "claimed", "done", "dead".
std::string_view to_string(record_status s) noexcept;
/// Parses a status name. Errors: invalid_argument.
[[nodiscard]] result<record_status> parse_record_status(std::string_view s);

/// One record to enqueue.
struct new_record {
  std::string id;      ///< any UTF-8 text; escaped into the RowKey (key_escape.hpp)
  std::string payload; ///< any bytes; > inline_payload_max_bytes or not UTF-8 → stored as a blob
  std::chrono::milliseconds delay{0}; ///< not claimable before server now + delay
};

/// Outcome of enqueue.
struct enqueue_result {
  std::size_t inserted = 0;        ///< new records
  std::size_t already_present = 0; ///< ids that existed; left unchanged (whatever their status)
};

/// A record held by a claimer: what complete/renew/fail/release need. Owner only: keep one
/// per claim and pass it back; the calls update `etag`, `lease_until` and `deadline` in place.
struct claimed_record {
  std::string queue;
  std::string id;            ///< the unescaped record id
  std::uint32_t shard = 0;
  std::string partition_key;
  std::string row_key;       ///< the escaped id (the record row)
  std::string ticket;        ///< RowKey of the record's ticket row (layout 2), which holds the claim
  std::string etag;          ///< ETag of the ticket after our last write (claim or renew)
  std::string owner;         ///< our owner string
  std::int64_t gen = 0;      ///< fencing token of this claim
  std::int32_t attempts = 0; ///< including this claim
  std::string payload;       ///< resolved (blob payloads are read at claim time)
  std::string payload_blob;  ///< "container/blob" when the payload lives in a blob, else empty
  std::int64_t payload_bytes = 0; ///< size of the payload in bytes
  std::string last_error;    ///< of the previous attempt, if any
  std::chrono::system_clock::time_point lease_until; ///< server clock, as written
  /// Local steady time after which the lease may have expired on the server (computed from
  /// when the claim/renew request was SENT, minus the clock uncertainty and a safety margin).
  /// Work on the record must stop before it.
  std::chrono::steady_clock::time_point deadline;
};

/// Everything stored about a record, for get/list and the CLI.
struct record_view {
  std::string queue;
  std::string id;
  std::uint32_t shard = 0;
  std::string partition_key;
  std::string row_key;
  record_status status = record_status::pending;
  std::string owner;      ///< last claimer; empty if never claimed
  std::int64_t gen = 0;
  std::int32_t attempts = 0;
  std::chrono::system_clock::time_point not_before;
  std::chrono::system_clock::time_point lease_until;
  std::string last_error;
  std::string payload;      ///< resolved when requested, else inline payload only
  std::string payload_blob; ///< "container/blob" when the payload lives in a blob
  std::int64_t payload_bytes = 0;
  std::chrono::system_clock::time_point created; ///< server clock estimate at enqueue
  std::chrono::system_clock::time_point updated; ///< server clock estimate at the last change
  std::optional<std::chrono::system_clock::time_point> timestamp; ///< the service's Timestamp
  std::string etag;
};

/// Record counts of one queue, by status and by shard. Done records removed by sweep() are
/// still counted (as done): their number is kept in each partition's meta row.
struct record_counts {
  std::map<record_status, std::size_t> by_status;
  std::map<std::uint32_t, std::map<record_status, std::size_t>> by_shard;
  std::size_t total = 0;
  std::size_t swept = 0; ///< of the done ones, how many were removed by sweeps (not readable any more)
};

/// What sweep() did.
struct sweep_result {
  std::size_t removed = 0;  ///< done records deleted from the work table (counted in the meta rows)
  std::size_t archived = 0; ///< of them, copied to the history table first
  std::size_t partitions = 0; ///< partitions visited
};

/// What migrate() did.
struct migrate_result {
  std::size_t partitions = 0;       ///< partitions visited
  std::size_t migrated = 0;         ///< layout-1 pending/claimed records given a ticket
  std::size_t already = 0;          ///< partitions already on layout 2 (meta row present)
  std::vector<std::string> skipped; ///< ids that could not be migrated, each with the reason
};

/// What check() found: the layout-2 invariants of SCHEMA.md "Invariants".
struct check_result {
  std::size_t records = 0;  ///< record rows read
  std::size_t tickets = 0;  ///< ticket rows read
  std::size_t open = 0;     ///< records that are pending or claimed
  std::vector<std::string> problems; ///< one line per broken invariant; empty = consistent
};

/// Which records requeue/purge act on. Empty ids and statuses = none (nothing is implied).
struct record_selector {
  std::vector<std::string> ids;      ///< these records (any status)
  std::set<record_status> statuses;  ///< plus every record in one of these statuses
  bool stuck = false;                ///< plus claimed records whose lease has expired
};

/// Settings of a work_table. Every field has a safe default.
struct work_table_options {
  work_config work;                               ///< shards, lease, batch, attempts, backoff
  std::string payload_container = "shoal";        ///< blobs of oversized payloads
  std::size_t inline_payload_max_bytes = 32 * 1024; ///< larger payloads go to a blob
  /// Subtracted from every local lease deadline on top of the clock uncertainty;
  /// 0 = max(200 ms, lease_ms / 10).
  std::chrono::milliseconds lease_safety_margin{0};
  /// After this many 412s in a row, single-claim fallback gives up on the rest of a batch.
  int max_consecutive_contention = 3;
  std::function<std::chrono::steady_clock::time_point()> steady_now; ///< tests; default steady_clock
  std::function<double()> random_unit;            ///< uniform [0,1) for jitter/shuffles; default PRNG
  /// Completions: after this many 412s in one complete_many group, the rest of the group is
  /// completed with single conditional writes instead of resubmitted transactions.
  int complete_singles_after_412 = 2;
};

// -- work_table -----------------------------------------------------------------------------------

/// The work table. Thread-safe: all methods are const and copies share the clients, the
/// server clock estimate and the counters. Every call blocks on storage I/O.
class work_table {
public:
  /// A work table over `table` (and `blobs` for oversized payloads; without it such payloads
  /// are refused with limit_exceeded). Errors: invalid_argument (bad options).
  [[nodiscard]] static result<work_table> make(storage::table_client table,
                                               std::optional<storage::blob_client> blobs,
                                               work_table_options opts = {});

  /// Creates the table (and the payload container) unless they exist. Errors: storage.
  [[nodiscard]] result<void> create_if_missing() const;

  // -- producing ---------------------------------------------------------------------------
  /// Adds `records` to `queue` as pending: per record its record row and its ticket, in entity
  /// group transactions of ≤ 50 records per partition (≤ ~3.5 MiB each). Idempotent: an id
  /// already present (in any status; done ones while kept, see sweep) is left as it is and
  /// counted in already_present; a transaction that meets 409 drops the id it names and is
  /// resubmitted (after three rounds, which ids exist is read instead). Duplicate ids within one
  /// call count once. Errors: invalid_argument (queue name, an id that cannot be a key:
  /// empty, not UTF-8), limit_exceeded (escaped id over 481 characters, payload too large
  /// without blobs), storage. Records before a storage error may have been inserted; enqueue
  /// again to finish.
  [[nodiscard]] result<enqueue_result> enqueue(std::string_view queue,
                                               std::span<const new_record> records) const;

  // -- claiming ----------------------------------------------------------------------------
  /// Claims up to `max` claimable records of `queue` from `shards` (tickets due before server
  /// now whose lease_until is past: pending, or claimed with an expired lease), visiting the
  /// shards from a random start: per partition one key-range query of its due tickets (never
  /// reading done records), a random subset of the candidates, and one transaction of
  /// ≤ claim_batch conditional ticket merges. A transaction that meets 412 falls back to single
  /// conditional merges for the rest (giving up after max_consecutive_contention 412s in a
  /// row). Records lost to others are counted as contention and skipped. A partition still on
  /// layout 1 is migrated the first time (see migrate). `owner` must be unique per claimer
  /// (name + process nonce). Errors: invalid_argument, storage (only when nothing could be
  /// claimed).
  [[nodiscard]] result<std::vector<claimed_record>> claim(std::string_view queue,
                                                          std::span<const std::uint32_t> shards,
                                                          std::string_view owner,
                                                          std::size_t max) const;

  /// Extends the lease to server now + lease_ms (a merge of the ticket, conditional on its
  /// ETag). Errors: lease_lost (the record moved on: message names the new owner and gen),
  /// not_found, storage.
  [[nodiscard]] result<void> renew(claimed_record& r) const;
  /// Renews many records, one transaction per partition; one result per record, in order.
  std::vector<result<void>> renew_many(std::span<claimed_record* const> records) const;

  /// Marks the record done if we still hold it: its ticket deleted (If-Match) and its record
  /// row set to done, in one transaction. Errors: lease_lost (re-claimed by another owner or
  /// gen; the completion is refused), not_found, storage. Completing twice is not an error.
  [[nodiscard]] result<void> complete(claimed_record& r) const;
  /// Completes many records: ≤ 50 records of a partition per transaction; a record meeting
  /// 412/404 is resolved alone and the rest resubmitted, and after
  /// complete_singles_after_412 such failures the rest go one by one. One result per record,
  /// in order.
  std::vector<result<void>> complete_many(std::span<claimed_record* const> records) const;

  /// Gives the record back after a failed attempt: pending with not_before = server now +
  /// retry_base_ms·2^(attempts−1) (capped at retry_max_ms, ±20 % jitter), or dead when
  /// attempts ≥ max_attempts. `error_text` is kept in last_error (truncated to 8 KiB).
  /// Returns the new status. Errors: lease_lost, not_found, storage.
  [[nodiscard]] result<record_status> fail(claimed_record& r, std::string_view error_text) const;

  /// Gives the claim back at once (pending, claimable now). With `count_attempt` false the
  /// claim's attempt is refunded (drain); true keeps it (a worker died holding it).
  /// Errors: lease_lost, not_found, storage.
  [[nodiscard]] result<void> release(claimed_record& r, bool count_attempt = false) const;

  /// Releases every claimed record of `queue` whose owner is `owner` (a supervisor after a
  /// worker died), counting the attempt: per shard one query of that owner's claimed tickets
  /// and one transaction, up to 8 shards at once. Returns how many were released. Errors:
  /// storage (the first one met; the other shards were still visited, so calling again
  /// finishes the job).
  [[nodiscard]] result<std::size_t> release_owner(std::string_view queue, std::string_view owner) const;

  // -- reading and operating ---------------------------------------------------------------
  /// One record; the payload is read from its blob when `resolve_payload`. Errors:
  /// invalid_argument, not_found, storage.
  [[nodiscard]] result<record_view> get(std::string_view queue, std::string_view id,
                                        bool resolve_payload = true) const;
  /// Records of `queue` (in shard, then key order), optionally of one status, at most `max`.
  /// Payloads are not resolved. Errors: invalid_argument, storage.
  [[nodiscard]] result<std::vector<record_view>> list(std::string_view queue,
                                                      std::optional<record_status> status,
                                                      std::size_t max) const;
  /// Counts per status and shard (reads only the status column). Errors: storage.
  [[nodiscard]] result<record_counts> counts(std::string_view queue) const;
  /// When the longest-waiting claimable pending record of `queue` became claimable: the later
  /// of its ticket's `not_before` and `updated` (the enqueue, release, failure or requeue that
  /// made it pending), over tickets only (done records are never read), at most `max_scan`
  /// tickets. nullopt when no pending record is due. The bool is true when the scan stopped at
  /// `max_scan` (the time is then a bound, not the minimum). Layout-1 partitions: their pending
  /// record rows (`created`). Errors: invalid_argument, storage. Thread-safe (const).
  [[nodiscard]] result<std::optional<std::pair<std::chrono::system_clock::time_point, bool>>>
  oldest_waiting(std::string_view queue, std::size_t max_scan) const;
  /// True when `queue` has a record that is pending or claimed. Errors: storage.
  [[nodiscard]] result<bool> has_open(std::string_view queue) const;
  /// Puts the selected records back to pending with attempts 0, claimable now (last_error is
  /// kept). A claimed record with a live lease is requeued only when named by id or status
  /// `claimed`; its holder then gets lease_lost. A record that changes between the read and the
  /// write (its holder renewed) is read again and requeued if still selected (≤ 4 rounds).
  /// Returns how many changed. Errors: storage.
  [[nodiscard]] result<std::size_t> requeue(std::string_view queue, const record_selector& which) const;
  /// Deletes the selected records (and their payload blobs). Returns how many were deleted.
  /// Errors: storage.
  [[nodiscard]] result<std::size_t> purge(std::string_view queue, const record_selector& which) const;

  // -- shared state ------------------------------------------------------------------------
  // -- housekeeping ------------------------------------------------------------------------
  /// Removes the done records of `queue` in `shards` (empty = all) whose last change is older
  /// than [work] done_retention_ms (or `retention` when given): copied to [work] history_table
  /// first when one is set, then deleted together with an update of the partition's meta row
  /// that keeps counts() whole — one entity group transaction per ≤ 99 records, each delete
  /// conditional on the ETag read (a record requeued meanwhile is left alone). Dead records are
  /// never swept. Errors: invalid_argument, storage.
  [[nodiscard]] result<sweep_result> sweep(std::string_view queue, std::span<const std::uint32_t> shards = {},
                                           std::optional<std::chrono::milliseconds> retention = std::nullopt) const;
  /// Brings the partitions of `queue` written by layout 1 (no tickets; claims by property
  /// filter) to layout 2: every pending or claimed record gets its ticket in one transaction
  /// with a conditional update of the record, then the partition's meta row says layout 2.
  /// Idempotent; safe while layout-2 workers run (claim() migrates a partition the first time it
  /// sees it). Layout-1 processes still running are not safe: stop them first (SCHEMA.md
  /// "Migration"). Errors: invalid_argument, storage.
  [[nodiscard]] result<migrate_result> migrate(std::string_view queue) const;
  /// Reads every row of `queue` and checks the invariants between record rows, tickets and
  /// meta rows (SCHEMA.md "Invariants"). Read-only. Errors: invalid_argument, storage.
  [[nodiscard]] result<check_result> check(std::string_view queue) const;

  /// Counters shared by every copy.
  claim_counters& counters() const noexcept;
  /// The server clock estimate shared by every copy.
  storage::server_clock& clock() const noexcept;
  /// Makes sure the server clock is known (one cheap query if no sample yet). Errors: storage.
  [[nodiscard]] result<void> sync_clock() const;
  /// Does ahead of time what a claim from `shards` of `queue` does the first time in this
  /// process: reads the server clock (sync_clock) and each partition's meta row (migrating a
  /// partition without one, as claim does), up to 8 partitions at once. A later claim from these
  /// shards then sends only its ticket query and its transaction (issue 19: a worker prepares
  /// while its supervisor joins the fleet, before its ctl.assign). Errors: invalid_argument,
  /// storage (the first met; the other partitions were still visited). Thread-safe.
  [[nodiscard]] result<void> prepare(std::string_view queue, std::span<const std::uint32_t> shards) const;
  /// The options in use (with defaults resolved).
  const work_table_options& options() const noexcept;
  /// The table client.
  const storage::table_client& table() const noexcept;

  struct impl; ///< defined in work_table_internal.hpp

private:
  explicit work_table(std::shared_ptr<impl> p) : impl_(std::move(p)) {}
  std::shared_ptr<impl> impl_;
};

/// Longest escaped record id the work table accepts, in UTF-16 code units: a ticket's RowKey
/// is `%|` + 28 characters of time + `|` + the escaped id and must stay within Azurite's 512.
inline constexpr std::size_t max_record_key_chars = 481;

/// The retry delay after attempt `attempts` (≥ 1): storage::backoff_delay with jitter 0.2,
/// i.e. base·2^(attempts−1)·(1 + 0.4·(unit − 0.5)) capped at `max`. Thread-safe (pure).
std::chrono::milliseconds retry_delay(std::uint32_t attempts, std::chrono::milliseconds base,
                                      std::chrono::milliseconds max, double unit) noexcept;

} // namespace shoal::workers
