#pragma once
// The catalog: a multi-index lookup on Azure tables with a write-ahead log and recovery
// (seed az-table-catalog, whose faults are fixed here). storage/CATALOG.md
// has the same layout with the reasoning; this comment is the reference.
//
// Tables (derived from the catalog name N, 3..60 letters/digits starting with a letter):
//   N      index table.
//          - index entities: PartitionKey `{len(field)}_{field}{value}` (len in bytes, decimal),
//            RowKey `{row_key}:{fingerprint}`; properties = every field of the record (Edm.String,
//            raw values) + `_seq` (Int64, the WAL sequence that wrote it) + `_del` (Boolean,
//            true for a tombstone). One entity per index key, each a full copy of the record,
//            so a query never needs a second lookup.
//          - PartitionKey `meta`, RowKey `schema`: `index_keys` (comma-joined, in order),
//            `row_key`, `layout` (Int32, 1). Index PartitionKeys start with a digit, so `meta`
//            never collides.
//   N+wal  the write-ahead log, one partition `wal`:
//          - RowKey = the sequence number, 20 digits zero-padded: `op` ("insert" | "delete"),
//            `record` (JSON object of the fields), `op_id` (128-bit random hex, identifies the
//            write), `writer` (who wrote it), `applied` (Boolean).
//          - RowKey `counter`: `seq` (Int64) = the last sequence number issued.
//          - RowKey `checkpoint`: `seq` (Int64) = every entry ≤ seq is applied.
//
// Keys: values go into keys escaped: `%`, `/`, `\`, `#`, `?` and control characters become
// `%XX` (uppercase hex of each byte). RowKey ranges compare escaped row keys, which sort like the
// raw ones except around those characters. The fingerprint is FNV-1a 64 (16 lower-case hex digits)
// of the index values in schema order, each as `len:value;`. A record's identity is therefore
// (row key, index values): inserting the same row key with other index values makes a second
// record; delete names the full record.
//
// Write path (insert / remove), all decisions on the storage server's state, never a local clock:
//  1. validate the record and build every index entity (nothing is sent if one is invalid);
//  2. sequence + WAL append in ONE entity group transaction on partition `wal`:
//     MERGE counter {seq: n+1} If-Match <etag read> + INSERT entry n+1. A lost race is a 412:
//     re-read the counter and retry with jittered backoff. Because the counter and the entry
//     commit atomically, a sequence number exists iff its entry exists: no gaps, no entry lost
//     to clock skew (the seed's timestamps were). An answer lost in transit is resolved by
//     reading entry n+1 back and comparing `op_id`. insert_many appends k ≤ 99 entries in the
//     same transaction (MERGE counter {seq: n+k} + INSERT n+1..n+k), more records in several
//     such transactions in record order; entry n+1 carrying the first record's op_id proves
//     the whole transaction landed;
//  3. fan-out: per index key, a conditional write that keeps the operation with the highest
//     sequence: INSERT; on 409 read the entity, and if its `_seq` is lower, replace it
//     If-Match its ETag (412/404 → start over); a delete writes a tombstone the same way. So
//     applying entries in any order, any number of times, from any number of processes, leaves
//     the state of applying them once in sequence order. insert_many groups the index entities
//     of all its entries by PartitionKey (of entries naming the same entity only the highest
//     sequence is kept) and writes each group of ≤ 100 as one transaction of INSERTs, up to
//     `fan_out_concurrency` groups at once; a group the service refuses with 409 (an entity
//     exists) committed nothing and is written entity by entity as above;
//  4. mark the entry `applied` (MERGE; insert_many: ≤ 100 MERGEs per transaction);
//  5. advance the checkpoint, once per call, over the contiguous applied prefix (If-Match on
//     the checkpoint row, 412 → re-read). It never passes an unapplied entry. An unapplied
//     entry older than `stall_timeout` by server time (a crashed writer) is applied by whoever
//     advances.
// No read that a preceding answer already gave (issue 14): a catalog (and its copies) keeps the
// counter's and the checkpoint's sequence and ETag from its own last writes. Step 2 then MERGEs
// the counter If-Match that ETag without reading it first (a 412 — another writer moved it —
// costs the read after all, with no back-off). When the checkpoint stands right before the
// call's entries and they are contiguous, steps 4–5 become one MERGE of the checkpoint to the
// last entry If-Match its ETag: every entry up to it is applied, so the marks are not needed (an
// entry at or below the checkpoint counts as applied whatever its flag says); a 412 falls back
// to 4–5 as described. A lone persistor registering a batch of blobs thus pays the WAL
// transaction, the index transactions and one checkpoint MERGE.
// Recovery (on open and `recover()`): every unapplied entry after the checkpoint is applied in
// sequence order as in 3–4, then the checkpoint advances. Safe to run from many processes at
// once, and alongside live writers. A missing number between the checkpoint and an existing
// entry cannot come from a crash (step 2 is atomic); only manual deletion makes one, and it is
// stepped over and reported as `skipped`.
// Queries: one partition scan of the first condition's key; further conditions and the
// tombstone filter are evaluated by the service on the copied properties (one request per
// 1000 entities, never one per result). RowKey ranges `ge`/`lt` on the row key; paging with an
// opaque continuation.
// Compaction: WAL entries ≤ checkpoint whose Timestamp is older than the retention window (by
// server time), and tombstones ≤ checkpoint equally old, are deleted. The window must exceed
// the longest a writer can stall between steps 2 and 3 (a tombstone removed earlier could let a
// stale insert resurrect a deleted record).

#include "storage/error.hpp"
#include "storage/table_client.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal::storage {

/// The `service_code` of the error `catalog::open`/`create` return when the stored schema
/// differs from the client's (code errc::conflict).
inline constexpr std::string_view catalog_schema_mismatch = "CatalogSchemaMismatch";
/// The `service_code` of the error a write returns when `catalog_options::fault` stopped it
/// (code errc::server).
inline constexpr std::string_view catalog_fault_injected = "CatalogFaultInjected";

/// What a catalog indexes. Fixed when the catalog is created; every client checks it on open.
struct catalog_schema {
  std::vector<std::string> index_keys; ///< fields indexed, in order (the fingerprint uses it); ≥ 1
  std::string row_key;                 ///< the field that names a record (not an index key)

  /// Checks: 1..16 distinct index keys, names valid property names not starting with '_',
  /// row_key likewise and not an index key. Errors: invalid_argument.
  [[nodiscard]] result<void> validate() const;
  /// "index keys [dest, date, host], row key 'blob'".
  std::string describe() const;
  friend bool operator==(const catalog_schema&, const catalog_schema&) = default;
};

/// A record: field name → value. Must hold the row key and every index key; other fields are
/// stored as properties. Values are strings (callers format numbers themselves).
using catalog_fields = std::map<std::string, std::string, std::less<>>;

/// A record as a query returns it.
struct catalog_record {
  catalog_fields fields;  ///< every field stored
  std::uint64_t seq = 0;  ///< the WAL sequence of the write that produced it
};

/// The kinds of WAL entries.
enum class catalog_op : std::uint8_t { insert, remove };

/// Points of the write path where `catalog_options::fault` is consulted (crash injection).
enum class write_stage : std::uint8_t {
  after_wal_append,   ///< the entry is in the WAL, nothing applied (index_done = 0)
  after_index_entity, ///< index_done entities of the fan-out are written (1..n)
  after_fan_out,      ///< every index entity written, entry not yet marked applied
  after_mark_applied, ///< entry marked applied, checkpoint not yet advanced
};

/// Fixed at open. Every field has a safe default.
struct catalog_options {
  bool recover_on_open = true; ///< run recover() in open()/create()
  /// An unapplied entry whose WAL Timestamp is this much older than the server's time is taken
  /// to belong to a crashed writer and is applied by whoever advances the checkpoint.
  std::chrono::milliseconds stall_timeout{60'000};
  int max_sequence_attempts = 100;               ///< counter races before giving up (conflict)
  std::chrono::milliseconds contention_delay{2}; ///< first backoff after a lost race, doubling
  std::chrono::milliseconds max_contention_delay{200}; ///< cap on one backoff
  std::size_t max_advance_entries = 1000; ///< entries one checkpoint advance looks at
  std::string writer_id; ///< recorded in WAL entries; default "{hostname}-{pid}"
  /// Crash injection for tests: called at each write_stage with the number of index entities
  /// written; returning true stops the write there, which returns errc::server with
  /// service_code catalog_fault_injected. Empty = never. insert_many of more than one record
  /// calls it after_wal_append once all its entries are appended, after_index_entity after
  /// each index transaction (from its fan-out threads, one call at a time; groups already
  /// running finish), after_fan_out and after_mark_applied once.
  std::function<bool(write_stage, std::size_t index_done)> fault;
  /// Test hooks: backoff sleep and jitter source (default this_thread::sleep_for and a PRNG).
  std::function<void(std::chrono::milliseconds)> sleep;
  std::function<double()> random_unit;
  /// Index transactions insert_many runs at once (the calling thread plus up to n − 1 threads
  /// of its own, for the call's duration); 1 = one after another in partition order.
  std::size_t fan_out_concurrency = 8;
};

/// What a successful insert or remove returns.
struct catalog_write_result {
  std::uint64_t seq = 0;        ///< the entry's sequence number
  std::uint64_t checkpoint = 0; ///< the checkpoint after this write's advance attempt
  int sequence_attempts = 1;    ///< counter transactions tried (> 1: lost races)
};

/// A query: `where` conditions on index keys (ANDed), an optional RowKey range.
struct catalog_query {
  std::vector<std::pair<std::string, std::string>> where{}; ///< (index key, value); ≥ 1, ≤ 8
  std::optional<std::string> row_key_ge{}; ///< row key (raw, escaped here) ≥ this
  std::optional<std::string> row_key_lt{}; ///< row key < this
  std::optional<std::string> row_key_prefix{}; ///< row key starts with this (ANDed with the range)
  int page_size = 1000;                  ///< entities per service page, 1..1000
  std::optional<std::size_t> limit{};    ///< query_all: stop after this many records
};

/// One page of results.
struct catalog_page {
  std::vector<catalog_record> records;     ///< in (escaped) row key order
  std::optional<std::string> continuation; ///< opaque; nullopt on the last page
};

/// One WAL entry as stored.
struct catalog_wal_entry {
  std::uint64_t seq = 0;               ///< sequence number (the RowKey)
  catalog_op op = catalog_op::insert;  ///< what the entry does
  catalog_fields record;               ///< the record (for a remove: row key and index values)
  std::string op_id;                   ///< 128-bit random hex naming the write (lost-answer check)
  std::string writer;                  ///< catalog_options::writer_id of the process that wrote it
  bool applied = false;                ///< every index entity written
  std::optional<table_time> timestamp; ///< set by the service
};

/// What recover() did.
struct catalog_recovery_report {
  std::uint64_t checkpoint_before = 0; ///< checkpoint when recovery started
  std::uint64_t checkpoint_after = 0;  ///< checkpoint it left
  std::uint64_t last_seq = 0;     ///< the counter
  std::size_t replayed = 0;       ///< unapplied entries this call applied
  std::size_t skipped = 0;        ///< missing sequence numbers stepped over (manual deletion)
};

/// What compact() removed.
struct catalog_compaction_report {
  std::uint64_t checkpoint = 0;       ///< the checkpoint compaction worked below
  std::size_t wal_deleted = 0;        ///< WAL entries deleted
  std::size_t tombstones_deleted = 0; ///< index tombstones deleted
};

/// Counts for `shoal catalog stats` (full scans: O(entities)).
struct catalog_stats {
  std::string name;               ///< the catalog name
  catalog_schema schema;          ///< the stored schema
  std::uint64_t last_seq = 0;     ///< the counter
  std::uint64_t checkpoint = 0;
  std::size_t wal_entries = 0;    ///< entries still in the WAL
  std::size_t unapplied = 0;      ///< of those after the checkpoint, not yet applied
  std::size_t index_entities = 0; ///< live index entities (records × index keys)
  std::size_t tombstones = 0;
  std::map<std::string, std::size_t> partitions_per_key; ///< distinct values per index key
};

/// A catalog on one storage account. Thread-safe: every method is const and the clients
/// underneath are thread-safe; copies share nothing mutable. Blocking.
class catalog {
public:
  /// Creates the tables and stores `schema` if the catalog does not exist, then opens it as
  /// open() does (so creating an existing catalog with the same schema is fine).
  /// Errors: invalid_argument (name or schema), conflict with service_code
  /// catalog_schema_mismatch, and storage errors.
  [[nodiscard]] static result<catalog> create(const table_service_client& svc, std::string name,
                                              catalog_schema schema, catalog_options opts = {});
  /// Opens an existing catalog: reads the stored schema and, when `expected` is given, refuses
  /// a different one (conflict, service_code catalog_schema_mismatch, message naming both).
  /// Then recovers unless opts.recover_on_open is false. Errors: not_found (no such catalog),
  /// bad_response (a damaged schema row), and storage errors.
  [[nodiscard]] static result<catalog> open(const table_service_client& svc, std::string name,
                                            std::optional<catalog_schema> expected,
                                            catalog_options opts = {});
  /// Deletes both tables. Errors: invalid_argument; storage errors (a missing table is fine).
  [[nodiscard]] static result<void> drop(const table_service_client& svc, std::string_view name);

  /// Index table name for catalog `name` (= name) and WAL table name (= name + "wal").
  static std::string index_table_name(std::string_view name) { return std::string(name); }
  static std::string wal_table_name(std::string_view name) { return std::string(name) + "wal"; }

  // -- writes ----------------------------------------------------------------------------------
  /// Inserts (or re-asserts) `record` through the WAL. Returns once every index entity is
  /// written. Errors: invalid_argument / limit_exceeded (record invalid, nothing written),
  /// conflict (lost max_sequence_attempts counter races), server with service_code
  /// catalog_fault_injected, and storage errors (after the pipeline's retries). If an error
  /// comes after the WAL append, the write completes at the next recovery.
  [[nodiscard]] result<catalog_write_result> insert(const catalog_fields& record) const;
  /// Removes `record` (its row key and index values must match the inserted record; other
  /// fields are ignored). Removing a record that does not exist is not an error. Errors: as
  /// insert.
  [[nodiscard]] result<catalog_write_result> remove(const catalog_fields& record) const;
  /// Inserts several records with as few WAL counter updates as the entity group transaction
  /// limit allows (one counter MERGE reserves consecutive sequence numbers for up to 99 entries
  /// in the same transaction; more records take several transactions, in order, so records[i]
  /// gets a lower sequence than records[i+1]), then fans them out with one transaction per
  /// ≤ 100 index entities of a partition (see the file comment), marks them applied and
  /// advances the checkpoint once. Result i belongs to records[i]; `checkpoint` is the same in
  /// all, `sequence_attempts` is that of the transaction that appended the record. Requests:
  /// ⌈n/99⌉ appends (+ lost races), ⌈n/100⌉ per index partition, ⌈n/100⌉ marks, one advance.
  /// Errors: as insert (the whole call fails on the first record that is invalid, before
  /// anything is written, with "record i of n" in the message; a later storage error leaves the
  /// already appended entries to the next recovery). An empty span returns an empty vector and
  /// sends nothing. Thread-safe; uses up to options().fan_out_concurrency − 1 threads of its own.
  [[nodiscard]] result<std::vector<catalog_write_result>> insert_many(std::span<const catalog_fields> records) const;

  // -- queries ---------------------------------------------------------------------------------
  /// One page of `q`, from `continuation` (nullopt = start). Errors: invalid_argument (no
  /// condition, a key that is not an index key, page_size out of range, bad continuation),
  /// storage errors.
  [[nodiscard]] result<catalog_page> query_page(const catalog_query& q,
                                                const std::optional<std::string>& continuation = {}) const;
  /// Every record `q` matches (up to q.limit). Errors: as query_page.
  [[nodiscard]] result<std::vector<catalog_record>> query(const catalog_query& q) const;

  // -- recovery and maintenance ----------------------------------------------------------------
  /// Applies every unapplied entry after the checkpoint in sequence order and advances the
  /// checkpoint. Idempotent; safe concurrently with other recoveries and writers.
  [[nodiscard]] result<catalog_recovery_report> recover() const;
  /// Deletes WAL entries ≤ checkpoint and tombstones ≤ checkpoint whose Timestamp is older than
  /// server time − `retention`. Returns what it removed.
  [[nodiscard]] result<catalog_compaction_report> compact(std::chrono::milliseconds retention) const;
  /// Counters and counts (scans both tables).
  [[nodiscard]] result<catalog_stats> stats() const;
  /// WAL entries with seq ≥ `from_seq`, in order, at most `limit`.
  [[nodiscard]] result<std::vector<catalog_wal_entry>> wal(std::uint64_t from_seq = 1,
                                                           std::size_t limit = 100'000) const;
  /// The current checkpoint and counter (two point reads).
  [[nodiscard]] result<std::pair<std::uint64_t, std::uint64_t>> checkpoint_and_counter() const;

  // -- accessors -------------------------------------------------------------------------------
  /// The catalog name (= the index table's name).
  const std::string& name() const noexcept { return name_; }
  /// The schema read from storage at open.
  const catalog_schema& schema() const noexcept { return schema_; }
  /// The options it was opened with (writer_id filled in).
  const catalog_options& options() const noexcept { return opts_; }

  // -- key helpers (pure; exposed for tests and tools) ------------------------------------------
  /// `%XX`-escapes the characters a table key cannot hold: storage::escape_table_key.
  static std::string escape_key(std::string_view raw);
  /// PartitionKey of the index entities of `field` = `value`.
  static std::string partition_key(std::string_view field, std::string_view value);
  /// FNV-1a 64 of the index values of `record` in `schema` order, 16 hex digits. Missing
  /// fields count as empty.
  static std::string fingerprint(const catalog_schema& schema, const catalog_fields& record);
  /// RowKey of the index entities of `record`.
  static std::string row_key(const catalog_schema& schema, const catalog_fields& record);

private:
  catalog(std::string name, catalog_schema schema, catalog_options opts, table_client index,
          table_client wal);
  result<catalog_wal_entry> prepare(catalog_op op, const catalog_fields& record) const;
  result<std::vector<catalog_write_result>> write(catalog_op op, std::span<const catalog_fields> records) const;
  result<void> append(std::span<catalog_wal_entry> entries, int& attempts) const;
  result<void> apply(const catalog_wal_entry& e, bool inject_faults) const;
  result<void> apply_many(std::span<const catalog_wal_entry> entries, bool inject_faults) const;
  result<void> apply_group(const std::vector<table_entity>& group) const;
  result<void> apply_one(const std::string& pk, const std::string& rk, const table_entity& desired,
                         std::uint64_t seq) const;
  result<void> mark_applied(std::uint64_t seq) const;
  result<void> mark_applied_many(std::span<const catalog_wal_entry> entries) const;
  result<std::uint64_t> advance(std::size_t* replayed, std::size_t* skipped, bool replay_all) const;
  void backoff(int attempt) const;

  // What this writer's own last responses said about the WAL's counter and checkpoint rows
  // (sequence and ETag), so a writer that is the only one needs no read before its next write:
  // a stale value costs one 412 and a read. Shared by copies; guarded by its mutex.
  struct write_cache {
    std::mutex m;
    std::optional<std::pair<std::uint64_t, std::string>> counter;    // seq, ETag
    std::optional<std::pair<std::uint64_t, std::string>> checkpoint; // seq, ETag
  };

  std::string name_;
  catalog_schema schema_;
  catalog_options opts_;
  table_client index_;
  table_client wal_;
  std::shared_ptr<write_cache> cache_ = std::make_shared<write_cache>();
};

} // namespace shoal::storage
