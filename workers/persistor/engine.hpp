#pragma once
// The persistor engine: batches records (batcher.hpp), writes each sealed batch as one blob
// (create-only block blob, or appended to a rolling append blob), registers it (ETL queue of
// the work table, blob catalog), and only then hands the batch's ack tokens back to the source
// (push server or queue pullers), which acknowledges the messages.
//
// Actors (actors/, one thread each, all in the engine's own actor_system under the supervisor
// "persistor"; the sources of sources.hpp run in the same system under their own supervisor):
//
//   source actor ──(batch_stage: format into the open batch, seal)──┐  sealed batches by handle
//   engine::submit ─→ inbox ─→ "batcher" (its own batch_stage) ─────┤
//                                  │ dispatches each sealed batch to an idle writer
//                                  ▼
//                      "writer-0" … "writer-{writers-1}": blob put / append
//                                  │ (ETL or catalog registration on)  │ (both off)
//                                  ▼                                   ▼
//                      "registrar": ETL records, catalog entries  on_commit(tokens): acks
//
// - Records are never messages. A source actor owns a batch_stage and formats each record
//   straight into the body of its open batch, on the thread that received it, with no lock;
//   engine::submit (any thread) appends to an inbox that the "batcher" actor drains, one wake-up
//   message per burst. Batch limits apply per stage: each stage holds its own open batches.
// - Sealed batches and committed blobs cross actors by handle: the message body is a slot id in
//   a process-local slot table (engine.cpp), the in-process equivalent of CAF's copy-on-write
//   message payloads, so a body is never copied or msgpack-encoded on its way to a writer.
// - Writers do blocking blob I/O on their own threads (STYLE.md §2.3). Each tells the batcher
//   when it is idle again; the batcher hands the oldest sealed batch to an idle writer.
// - The registrar registers blobs in commit order, every blob committed since its last round
//   together: their ETL records in one work_table::enqueue call (one entity group transaction
//   per shard partition, not one insert per blob) and their catalog entries in one
//   blob_catalog::register_blobs call (one WAL append; the catalog's WAL counter row is
//   ETag-guarded and parallel writers would only contend for it).
//
// Back-pressure: saturated() turns true while the bytes held (open in every stage + sealed +
// being written) exceed max_inflight_bytes; sources stop reading then.
//
// Registration: a writer commits the blob; the registrar enqueues its ETL record (work table)
// before the ack, so a committed, acked blob always reaches the ETL. With `catalog_before_ack`
// (default) the registrar acks each blob only after its catalog entry too, so a crash never
// leaves an acked record in an uncatalogued blob (a blob committed but not yet registered was
// not acked: its records come again and land in another blob). Without it the registrar acks
// right after the ETL records and the catalog entries follow, so a crash can leave the last
// entries missing.
//
// Append mode: each append is acked once appended; the append blob is registered when it rolls
// (cap reached, flush, shutdown). Before an append blob is created, a marker blob
// `_shoal/open/{host}-{name}/{blob}` is written, and it is deleted once the blob is registered;
// start() registers the blobs of every marker left by a crashed run of the same persistor
// (metadata totals recounted from the blob), so the ETL sees every acked record.
//
// Failure rules: a blob write or registration that fails is retried with backoff (200 ms
// doubling to 10 s) until it succeeds or the engine is stopped; nothing is acked before. A
// create-only put that meets an existing blob (409 not recovered: a name used by an earlier run)
// takes the next sequence number and tries again.

#include "actors/system.hpp"
#include "storage/blob_client.hpp"
#include "storage/catalog_blobs.hpp"
#include "workers/error.hpp"
#include "workers/persistor/batcher.hpp"
#include "workers/persistor/format.hpp"
#include "workers/claim/work_table.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::workers::persistor {

/// One committed blob, as announced to the source and to `persist.committed` listeners.
struct committed_blob {
  std::string container;
  std::string name;              ///< full blob name
  std::string dest;
  std::string date;              ///< "YYYY-MM-DD" of the partition (a month partition: its first day)
  std::string host;
  record_format format = record_format::persistor_v1;
  batch_summary summary;         ///< records in this commit (append: in this append)
  std::uint64_t bytes = 0;       ///< bytes written by this commit
  bool append = false;           ///< appended to an append blob (registered when rolled)
};

/// Points of the write path where `engine_options::fault` is called (crash injection in tests).
enum class fault_point : std::uint8_t {
  writing,      ///< a writer took a sealed batch; nothing of it is written yet
  blob_written, ///< a block blob is committed, not yet registered nor acked
  registered,   ///< its ETL record and catalog entry are written, not yet acked
  acked,        ///< its tokens were handed to the source (on_commit returned)
};

/// Settings of an engine. Every field has a safe default.
struct engine_options {
  std::string container = "shoal";
  record_format format = record_format::persistor_v1;
  bool append_blobs = false;                 ///< append-blob mode instead of block blobs
  std::uint32_t append_max_blocks = 49'000;  ///< roll before this many blocks
  std::uint64_t append_max_bytes = 256u << 20; ///< roll before this size
  batch_limits limits;                       ///< when a batch is sealed
  partition_depth partition = partition_depth::day; ///< date folders of blob names (format.hpp)
  std::string host = "localhost";            ///< host part of blob names and catalog entries
  std::string name = "p1";                   ///< persistor name in blob names and the seq counter
  std::uint32_t writers = 8;                 ///< parallel blob writers
  std::uint64_t max_inflight_bytes = 64u << 20; ///< high-water mark for saturated()
  std::string etl_queue = "etl";             ///< work-table queue registered into
  std::uint32_t seq_reserve = 1000;          ///< sequence numbers reserved per counter write
  bool catalog_before_ack = true;            ///< ack only after the catalog entry (see above)
  /// Crash injection for tests: called at each fault_point with how many times that point was
  /// reached (from 1), on the thread that reached it. Empty = never. It may also throw: a
  /// writer that throws before its batch is handed to the registrar or acked gives the batch
  /// back to the batcher (written again by another writer, so its records may be stored twice
  /// but are acked once) and is restarted by the engine's supervisor.
  std::function<void(fault_point, std::uint64_t)> fault;
};

/// Called once a batch is durable and registered (on a writer's or the registrar's thread): the
/// tokens to ack. Must not block for long; must be thread-safe (several threads call it).
using commit_fn = std::function<void(const std::vector<ack_token>& tokens, const committed_blob& blob)>;

/// Counters, readable from any thread.
struct engine_stats {
  std::atomic<std::uint64_t> records_in{0};     ///< records submitted
  std::atomic<std::uint64_t> records_committed{0};
  std::atomic<std::uint64_t> blobs_committed{0};
  std::atomic<std::uint64_t> bytes_committed{0};
  std::atomic<std::uint64_t> write_retries{0};  ///< failed writes/registrations retried
  std::atomic<std::uint64_t> seq_collisions{0}; ///< create-only puts that met an existing blob
  std::atomic<std::uint64_t> registered{0};     ///< blobs enqueued for ETL
  std::atomic<std::uint64_t> catalogued{0};     ///< blobs registered in the catalog
  std::atomic<std::uint64_t> recovered_appends{0}; ///< append blobs of a crashed run registered at start
};

class batch_stage;

/// The engine. Thread-safe: submit(), saturated(), flush(), stats(), make_stage() and system()
/// from any thread.
class engine {
public:
  /// Checks the options, creates the container and reserves the first sequence numbers (a
  /// counter blob `_shoal/seq/{host}-{name}` in the container, ETag-guarded, so two runs of the
  /// same persistor never reuse a number), registers the append blobs a crashed run of the same
  /// host and name left open (their markers), then spawns the actors (see above). `etl` /
  /// `catalog` are optional registrations. Errors: invalid_argument (options), storage,
  /// io (an actor failed to start).
  [[nodiscard]] static result<std::unique_ptr<engine>>
  start(engine_options opts, storage::blob_client blobs, std::optional<work_table> etl,
        std::optional<storage::blob_catalog> catalog, commit_fn on_commit);

  /// Stops every actor of its system (the sources' too); batches not written are abandoned
  /// (seal the sources' stages and call flush() first to keep them).
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  /// Adds a record (dest must be valid: validate_dest) to the batcher actor's stage. Never
  /// blocks on storage; costs one move of the record into the inbox (a short lock) and, per
  /// burst, one wake-up message. Errors: invalid_argument (bad dest), cancelled (stopping).
  [[nodiscard]] result<void> submit(const record& r, ack_token token);

  /// True while the bytes held exceed max_inflight_bytes: the source should stop reading.
  bool saturated() const noexcept;

  /// Seals every open batch of the batcher actor (records given to submit()), then waits until
  /// every sealed batch of every stage is committed and registered (catalog entries too) or
  /// `timeout` passes; in append mode then rolls (registers) the open append blobs. Seal the
  /// sources' own stages (batch_stage::seal_all on their threads) before. Errors: timeout,
  /// saying whether records are still unacked or only catalog entries are pending.
  [[nodiscard]] result<void> flush(std::chrono::milliseconds timeout);

  /// Counters.
  const engine_stats& stats() const noexcept;

  /// A new batching stage for one source actor (see batch_stage). Errors: limit_exceeded (more
  /// than 63 stages in one engine).
  [[nodiscard]] result<std::unique_ptr<batch_stage>> make_stage();

  /// The actor system the engine's actors run in; sources spawn their actors here, so that
  /// they stop with the engine. Lives as long as the engine.
  actors::actor_system& system() noexcept;

  struct impl; ///< defined in engine_internal.hpp
private:
  explicit engine(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// A batching stage: the open batches of one source actor. The owner formats each record
/// straight into its open batch (batcher::add) and every sealed batch goes to the engine's
/// writers by handle: no lock, no message and no copy per record. Owner only (one actor's
/// thread); must not outlive its engine. Open batches of a destroyed stage are abandoned.
class batch_stage {
public:
  ~batch_stage();
  batch_stage(const batch_stage&) = delete;
  batch_stage& operator=(const batch_stage&) = delete;

  /// Adds a record. Errors: invalid_argument (bad dest), cancelled (engine stopping).
  [[nodiscard]] result<void> add(const record& r, ack_token token);
  /// Seals the batches whose batch_max_delay_ms passed; returns the time until the next open
  /// batch falls due (nullopt: none open). Arm an actor timer with it.
  std::optional<std::chrono::milliseconds> seal_due();
  /// Seals every open batch (flush, shutdown).
  void seal_all();
  /// Seals the open batches holding a token for which `holds` is true (persist.flush).
  void seal_holding(const std::function<bool(ack_token)>& holds);
  /// Records in open batches.
  std::size_t open_records() const noexcept { return b_.open_records(); }

private:
  friend class engine;
  batch_stage(engine::impl* e, std::size_t slot);
  void dispatch(std::vector<batch>&& sealed);
  engine::impl* eng_;  // the engine's state; outlives the stage
  batcher b_;          // the open batches
  std::size_t slot_;   // this stage's open-bytes counter in the engine
};

/// The host name of this machine (gethostname), reduced to letters, digits, '-' and '.';
/// "localhost" when unknown.
std::string local_host_name();

} // namespace shoal::workers::persistor
