#pragma once
// The ETL pipeline as chained actors (issue 7 item 2): per ETL lane four stage actors under one
// actors::supervisor (one_for_one),
//
//   requester ──etl.blob──► extract ──etl.blob──► validate ──etl.blob──► transform ──etl.blob──► load
//       ▲                  (read blob,           (schema check,         (dataset mapping)       (owns the SQL sink:
//       │                   split it)             4 threads ≥ 8192)                              one transaction per blob)
//       └────────────────────────── reply: the blob's ticket, resolved by the stage that ends the run ──┘
//
// each forwarding its output to the next; the stage that finishes the blob (load, or any stage
// that fails it) answers whoever asked for it.
//
// Records never travel in messages. Envelopes are MessagePack-encoded, so a blob's record set
// (tens of MB for a large blob) is passed BY HANDLE: the requester puts a `blob_run` into the
// chain's `blob_slots` table and every `etl.blob` message carries only its slot id (and the
// blob name, for logs) — the in-process form of CAF's copy-on-write message payload, where
// actors in one process share an immutable message by reference count instead of serializing
// it. A blob costs four small messages (one per stage) whatever its size. Each stage works on
// the slot alone while it holds the message; the mailbox hand-off orders one stage's writes
// before the next stage's reads, so the slot needs no lock.
//
// Durable history (orchestrator.hpp's file comment): with a run_log, each of the four stages
// makes its own history row after its step finished (a step already in the history is
// replayed, not recorded again) and either writes it at once (per step) or leaves it in the
// blob_run (`defer_history`) for the requester's one write at the end of the blob;
// run_control::stop / lease_lost are polled between steps as before (after the blob is read,
// before each step is recorded, before the load); crash_after is called after a step's effect
// and before it is recorded (and with "commit" just before the load's COMMIT); and the load asks
// may_commit (lease_lost) just before COMMIT. The instance row is the requester's
// (etl_job::run_blob), before and after the chain.
//
// Groups (issue 14): run_group sends several blobs of one dataset down the chain, then an
// `etl.group_end` marker behind them. The load stage keeps the group's blobs as they arrive and,
// when the marker comes (after every one of them: each stage's mailbox is FIFO), loads them all
// in ONE SQL transaction (sql_sink::load_many, each blob keyed by its ledger row as before) and
// only then finishes each. A member that fails in an earlier stage is finished there as usual.
//
// Failures: a stage whose step fails resolves the blob's ticket with the error (parse with its
// position, not_found, storage, …) and the chain stays as it is. A stage that throws (a bug, or
// a fault drill through crash_after) or whose SQL connection fails (errc::io from the sink)
// fails the blob with a clear error naming the stage and then fails itself; the supervisor
// restarts it (the load stage reopens its sink through `open_sink`), so the next blob — the
// record retried by the worker — gets a fresh actor. More than `max_restarts` restarts in
// `restart_period` and the supervisor gives up: every blob in flight fails with errc::io, the
// chain is `broken()` and every later run fails at once (the worker then exits and its own
// supervisor restarts the process).
//
// Gap worked around: actors/ has no deferred reply (CAF's response_promise): a request's reply
// is whatever its handler returns, so a head actor cannot forward a request and let the last
// stage answer it. The requester therefore sends a tell and waits on the blob's ticket in the
// slot table, which the ending stage resolves (a condition variable, not a message).

#include "actors/actor.hpp"
#include "actors/system.hpp"
#include "storage/blob_client.hpp"
#include "workers/error.hpp"
#include "workers/etl/dataset.hpp"
#include "workers/etl/sql_sink.hpp"
#include "workers/etl/steps.hpp"

#include <msgpack.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace shoal::workers::etl {

class run_log;
struct run_instance;
struct run_control;
struct pipeline_outcome;

// -- messages: msgpack structs; only append fields ------------------------------------------------

/// Hand-off between the stages: one blob, by handle.
struct etl_blob {
  static constexpr std::string_view kind = "etl.blob";
  std::uint64_t slot = 0; ///< key of the blob's `blob_run` in the chain's blob_slots
  std::string blob;       ///< blob name (logs only)
  MSGPACK_DEFINE(slot, blob);
};

/// Behind the blobs of a group: the load stage loads the group's blobs when it arrives.
struct etl_group_end {
  static constexpr std::string_view kind = "etl.group_end";
  std::uint64_t group = 0; ///< the group id (blob_run::group)
  MSGPACK_DEFINE(group);
};

// -- the slot table -------------------------------------------------------------------------------

/// One blob's run travelling down the chain (held by the slot table and the requester).
struct blob_run : std::enable_shared_from_this<blob_run> {
  // -- request (set by the requester, read-only for the stages) ---------------------------
  std::string record_id;        ///< work-table record id (history partition)
  std::string blob;             ///< blob name
  const dataset* data = nullptr; ///< the blob's dataset (borrowed; the requester waits)
  std::string_view body;        ///< the blob's bytes when given in memory; else read by extract
  std::int32_t attempt = 1;     ///< claim attempt (history)
  std::int64_t gen = 0;         ///< fencing token (history)
  std::string owner;            ///< worker id (history, ledger)
  run_log* runs = nullptr;      ///< durable history; nullptr: in-memory pipeline (no history, no step logs)
  std::set<std::string> done;   ///< steps already in the history (replayed, not recorded)
  const run_control* ctl = nullptr; ///< stop / lease_lost checks (borrowed; may be nullptr)
  std::function<bool(std::string_view)> crash_after; ///< fault hook (etl_job_options::crash_after)
  run_instance* inst = nullptr; ///< the instance row (requester's; stages set step, records, loaded…)
  bool defer_history = false;   ///< keep the history rows in `deferred` instead of writing each
  std::uint64_t group = 0;      ///< 0 = alone; else loaded with the other blobs of this group

  // -- state between the stages ------------------------------------------------------------
  std::string owned_body;       ///< the downloaded blob (when `body` was not given)
  blob_records records;         ///< extract → validate → transform → load
  std::vector<step_stats> steps; ///< finished (or replayed) steps, in order
  load_outcome load;            ///< the sink's answer
  std::vector<run_step> deferred; ///< defer_history: the history rows of the finished steps
  bool crashed_before_commit = false; ///< crash_after("commit") rolled the load back

  // -- the reply ----------------------------------------------------------------------------
  /// Resolves the run (first call wins): `err` empty = success. Thread-safe.
  void finish(std::optional<error> err);
  /// Blocks until finish() was called; the error, if any. Thread-safe.
  std::optional<error> wait();

private:
  std::mutex m_;
  std::condition_variable cv_;
  bool finished_ = false;
  std::optional<error> err_;
};

/// Process-local table of the blobs in flight: slot id → blob_run. Thread-safe.
class blob_slots {
public:
  /// Adds `r` under a fresh id (never 0, never reused).
  std::uint64_t put(std::shared_ptr<blob_run> r);
  /// The run under `id`, or nullptr (already removed).
  std::shared_ptr<blob_run> get(std::uint64_t id) const;
  /// Removes `id` (the requester, once its run finished).
  void erase(std::uint64_t id);
  /// Finishes every run in flight with `e` (the supervisor gave up).
  void fail_all(const error& e);
  /// Finishes every run of group `group` with `e` (its end marker cannot reach the load stage).
  void fail_group(std::uint64_t group, const error& e);
  /// Runs in flight.
  std::size_t size() const;

private:
  mutable std::mutex m_;
  std::uint64_t next_ = 1;
  std::map<std::uint64_t, std::shared_ptr<blob_run>> runs_;
};

// -- the chain ------------------------------------------------------------------------------------

/// Opens a SQL connection: the load stage calls it when restarted (after a failure).
using sink_factory = std::function<result<std::unique_ptr<sql_sink>>()>;

/// Settings of an etl_chain.
struct etl_chain_options {
  std::string name = "etl";                 ///< actor system process name (addresses, logs); no '@'
  std::string container = "shoal";          ///< where extract reads blobs
  std::uint64_t max_blob_bytes = 256ull << 20; ///< a larger blob is refused before its body is read ([etl] max_blob_bytes)
  std::optional<storage::blob_client> blobs; ///< needed to read blobs by name (not for in-memory runs)
  /// Reopens the sink when the load stage restarts; empty: a restarted load stage fails to
  /// start (the chain then gives up once the restart intensity is exceeded).
  sink_factory open_sink;
  std::uint32_t max_restarts = 5;           ///< stage restarts allowed within restart_period (as OTP supervisors)
  std::chrono::milliseconds restart_period{60'000};
};

/// One ETL lane: the supervisor and its four stage actors, each on its own thread. run() and
/// run_in_memory() are thread-safe (several blobs may be in flight; each stage takes them one
/// at a time, so they pipeline); the etl_job uses one blob at a time per lane.
class etl_chain {
public:
  /// Starts the actors; the load stage takes `first_sink` (else opens one with `open_sink`).
  /// Errors: io (no sink, or a stage failed to start).
  [[nodiscard]] static result<std::unique_ptr<etl_chain>> start(etl_chain_options opts,
                                                                std::unique_ptr<sql_sink> first_sink);
  /// Stops the actors (waits for the blob in progress in each stage).
  ~etl_chain();
  etl_chain(const etl_chain&) = delete;
  etl_chain& operator=(const etl_chain&) = delete;

  /// Runs `r` through the chain and blocks until a stage finished it. Errors: those of the
  /// steps (see etl_job::run), io (a stage failed and was restarted, or the chain is broken).
  [[nodiscard]] result<void> run(const std::shared_ptr<blob_run>& r);
  /// Runs several blobs of one dataset through the chain, the load stage loading all that got
  /// there in one SQL transaction (see "Groups" above), and blocks until every one is
  /// finished. One result per run, in order; errors as run().
  std::vector<result<void>> run_group(std::span<const std::shared_ptr<blob_run>> runs);
  /// The four steps on `body` (no history), as run_pipeline but through the chain. Errors: as
  /// run_pipeline, io (chain).
  [[nodiscard]] result<pipeline_outcome> run_in_memory(const dataset& d, std::string_view blob_name,
                                                       std::string_view body, std::string_view owner = "etl");
  /// True once the supervisor gave up (more than max_restarts restarts in restart_period) or
  /// a stage stopped. Thread-safe.
  bool broken() const noexcept;
  /// Restarts of the stage actors so far (all four). Thread-safe.
  std::uint64_t restarts() const;

  /// State the stage actors share (slot table, blob client, sink hand-off); etl_chain.cpp only.
  struct shared;

private:
  etl_chain() = default;
  std::shared_ptr<shared> shared_;
  std::unique_ptr<actors::actor_system> sys_;
  actors::actor_ref head_;
  std::vector<actors::actor_ref> stages_;
};

} // namespace shoal::workers::etl
