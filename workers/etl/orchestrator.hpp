#pragma once
// The ETL orchestration (issue 7 items 2, 3, 6): extract → validate → transform → load for one
// blob, with durable step state in the `shoalruns` table so a worker that dies after a step
// resumes after it (Durable Task's history + replay, shared/reference/peers.md §2.3).
//
// The steps run as chained actors (etl_chain.hpp): an etl_job starts one chain — four stage
// actors under a supervisor — and runs every blob through it; each stage records its own
// history row. run_pipeline runs the same step functions (steps.hpp) as plain calls on one
// thread (the bench's direct figure, unit tests).
//
// How much of the history is written (issue 14: `[etl] history`, etl_job_options::history):
//  - per_blob (default): a blob claimed for the first time (attempt 1) is run with no read of
//    the history and no write until its end; then the instance row and its four step rows go in
//    ONE entity group transaction (they share the partition): one request per loaded blob. A
//    step that fails writes the instance row (failed, error) with the rows of the steps before
//    it, again in one transaction. A blob claimed again (attempt > 1: the earlier run may have
//    died anywhere, even after the SQL commit) is a resumed blob: its history is read and every
//    step written as it finishes (per_step). An interrupted first run (stop, lost lease) writes
//    nothing: the next claimer runs the pure steps again and the SQL ledger keeps the load
//    exactly once.
//  - per_step: every run reads the history first, writes the instance row (running), each
//    step's row as it finishes and the instance row again at the end (6 writes and a read).
//
// `shoalruns` layout (one partition per orchestration instance):
//   PartitionKey = escape_key(record id)   (the ETL record id is the blob name)
//   RowKey "instance": blob, dataset, status (running | completed | failed), step (last finished
//     step), attempts (Int32, claim attempts seen), gen (Int64, fencing token of the last run),
//     owner, created, updated, finished (DateTime), error, records, loaded, duplicates,
//     quarantined (Int64), ms (Double, last run's wall time)
//   RowKey "step-{n}-{name}" (n = 1 extract, 2 validate, 3 transform, 4 load): one history row per
//     FINISHED step: step, attempt, gen, owner, started, finished, ms, records_in, records_out,
//     quarantined (Int64), detail. Inserted with Insert Entity: a 409 means another run
//     recorded the step first and is ignored.
//
// Resume: the pure steps (extract, validate, transform) are deterministic functions of the blob
// and the dataset; after a restart they are replayed (not recorded again) when the load still has
// to run. A recorded load is never run again; an unrecorded load that did commit (the worker
// died in between) is made harmless by the sink's ledger (sql_sink.hpp), so no row lands twice.

#include "storage/blob_client.hpp"
#include "storage/table_client.hpp"
#include "workers/error.hpp"
#include "workers/etl/dataset.hpp"
#include "workers/etl/etl_chain.hpp"
#include "workers/etl/sql_sink.hpp"
#include "workers/etl/steps.hpp"
#include "workers/claim/work_table.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers::etl {

// -- step results ---------------------------------------------------------------------------------

/// What a whole pipeline run did.
struct pipeline_outcome {
  std::string blob;
  std::string dataset;
  std::vector<step_stats> steps; ///< in order; replayed steps included with detail "replayed"
  load_outcome load;             ///< the sink's answer (already_loaded when skipped)
  bool resumed_after_load = false; ///< the history already held the load: nothing ran
};

/// Runs extract → validate → transform → load for a blob body held in memory, no durable state
/// (the bench and unit tests; etl_job adds the history). Errors: parse (blob unparsable, with
/// position), those of sql_sink::prepare/load. Owner only (uses `sink`).
[[nodiscard]] result<pipeline_outcome> run_pipeline(const dataset& d, std::string_view blob_name,
                                                    std::string_view body, sql_sink& sink,
                                                    std::string_view owner = "etl");

// -- the runs table -------------------------------------------------------------------------------

/// One orchestration instance (the "instance" row).
struct run_instance {
  std::string id;          ///< the ETL record id (the blob name)
  std::string blob;
  std::string dataset;
  std::string status;      ///< running | completed | failed
  std::string step;        ///< last finished step; empty before the first
  std::int32_t attempts = 0;
  std::int64_t gen = 0;
  std::string owner;
  std::chrono::system_clock::time_point created, updated, finished;
  std::string error;
  std::int64_t records = 0, loaded = 0, duplicates = 0, quarantined = 0;
  double ms = 0;
};

/// How much of the run history is written (see the file comment).
enum class history_mode : std::uint8_t {
  per_blob, ///< one entity group transaction per blob on the success path (default)
  per_step, ///< every step's row as it finishes
};

/// "per_blob" | "per_step". Errors: invalid_argument.
[[nodiscard]] result<history_mode> parse_history_mode(std::string_view s);

/// The `shoalruns` table. Thread-safe (const methods over a thread-safe table client).
class run_log {
public:
  /// Wraps `table` (named by configuration, default "shoalruns").
  explicit run_log(storage::table_client table) : table_(std::move(table)) {}
  /// Creates the table unless it exists. Errors: storage.
  [[nodiscard]] result<void> create_if_missing() const;
  /// The instance row and the history of `id` (history in step order). Errors: not_found
  /// (no instance), invalid_argument (id cannot be a key), storage.
  [[nodiscard]] result<std::pair<run_instance, std::vector<run_step>>> show(std::string_view id) const;
  /// Instances, optionally of one status, at most `max`. Errors: storage.
  [[nodiscard]] result<std::vector<run_instance>> list(std::optional<std::string> status, std::size_t max) const;
  /// Writes (insert-or-merge) the instance row. Errors: invalid_argument, storage.
  [[nodiscard]] result<void> put_instance(const run_instance& i) const;
  /// Inserts a history row; a row already there (another run recorded it) is not an error.
  /// Errors: invalid_argument, storage.
  [[nodiscard]] result<void> record_step(std::string_view id, const run_step& s) const;
  /// Writes the instance row (insert-or-merge) and `steps` (insert-or-replace) in ONE entity
  /// group transaction (they share the instance's partition): one request. Errors:
  /// invalid_argument, storage.
  [[nodiscard]] result<void> put_run(const run_instance& i, std::span<const run_step> steps) const;
  /// The table client.
  const storage::table_client& table() const noexcept { return table_; }

private:
  storage::table_client table_;
};

// -- the ETL job ----------------------------------------------------------------------------------

/// Fault drill for tests (kill -9 at a point of the load): $SHOAL_ETL_CRASH_AT = `before_commit`
/// (just before the load's COMMIT) or `after_commit` (committed, history not yet written),
/// optionally `:N` for the Nth time the point is reached (default 1), makes the process SIGKILL
/// itself there. Returns an etl_job_options::crash_after hook, or an empty function when the
/// variable is unset or not understood, and always in a build without tests (SHOAL_TEST_HOOKS).
std::function<bool(std::string_view step)> crash_hook_from_env();

/// Settings of an etl_job.
struct etl_job_options {
  std::string container = "shoal";  ///< where the blobs are
  std::uint64_t max_blob_bytes = 256ull << 20; ///< the largest blob loaded: a blob's body is held in memory ([etl] max_blob_bytes)
  std::string owner = "etl";        ///< this worker's id, recorded in history and ledger
  std::vector<dataset> datasets;    ///< by dest; unmatched blobs use the generic dataset
  /// Tests and fault drills: called (on the stage actor's thread) after a step's effect and
  /// before it is recorded; returning true makes the run stop there with errc::cancelled, as if
  /// the worker had died; throwing fails that stage actor (its supervisor restarts it and the
  /// run fails with errc::io).
  /// Also called with "commit" just before the load's COMMIT (returning true rolls it back).
  std::function<bool(std::string_view step)> crash_after;
  history_mode history = history_mode::per_blob; ///< see the file comment
  /// Reopens the SQL sink when the load stage is restarted after a failure (an exception, or
  /// errc::io from the sink: connection lost). Empty: a restarted load stage cannot start, and
  /// the chain gives up once its restart intensity is exceeded (then every run fails with io).
  sink_factory reopen_sink;
  std::uint32_t max_restarts = 5;                    ///< stage restarts allowed per restart_period
  std::chrono::milliseconds restart_period{60'000};  ///< sliding window of max_restarts
};

/// Per-run checks of an etl_job run: polled between steps (and, for `lease_lost`, once more by
/// the sink just before its COMMIT). Either may be empty. Called on the stage actors' threads
/// (one at a time, while the run's caller waits): must be thread-safe and must not block (a
/// clock check or an atomic load).
struct run_control {
  /// True when the run must stop (drain, shutdown, lease about to end): the run returns
  /// errc::cancelled before its next step, leaving the history as it is (the next claimer
  /// resumes after the last recorded step).
  std::function<bool()> stop;
  /// True once the record's lease is lost: the run returns errc::lease_lost before its next
  /// step and the load is rolled back instead of committed (the ledger keeps exactly-once
  /// anyway; this saves a load that would be "already loaded" for the new owner).
  std::function<bool()> lease_lost;
};

/// Processes ETL records: one blob each, durably (see the file comment), through its own chain
/// of stage actors (etl_chain.hpp; the load stage owns `sink`). The ETL job of `shoal worker`
/// (issue 5) calls `run` for every claimed ETL record and then completes or fails the record;
/// `drain` does the claiming too (`shoal etl run --once`). Owner only: one per thread (one blob
/// in flight at a time); the chain's five actor threads stop with it.
class etl_job {
public:
  /// Starts the chain. Errors: invalid_argument (no sink), io (the stage actors did not start).
  [[nodiscard]] static result<etl_job> make(storage::blob_client blobs, run_log runs,
                                            std::unique_ptr<sql_sink> sink, etl_job_options opts);

  /// Runs (or resumes) the orchestration of `record` (payload = blob name; empty payload →
  /// the record id). Does not complete or fail the record. Errors: not_found (blob missing),
  /// parse (blob unparsable: line, column, byte), io (SQL, or a stage actor failed and was
  /// restarted, or the chain is broken()), invalid_argument (a dataset's insert does not fit its
  /// rows), timeout (SQLite busy), storage, cancelled (crash_after or ctl.stop), lease_lost
  /// (ctl.lease_lost). A failure other than cancelled/lease_lost is also written to the
  /// instance row (status failed, error).
  [[nodiscard]] result<pipeline_outcome> run(const claimed_record& record, const run_control& ctl = {});
  /// As run, for a record id / blob name with the given attempt and fencing gen.
  [[nodiscard]] result<pipeline_outcome> run_blob(std::string_view record_id, std::string_view blob_name,
                                                  std::int32_t attempt, std::int64_t gen,
                                                  const run_control& ctl = {});

  /// Runs (or resumes) several claimed records at once: each blob goes down the chain as run()
  /// would take it, and the blobs of one dataset that reach the load are loaded in ONE SQL
  /// transaction (etl_chain::run_group; each blob keyed by its own ledger row, its rows by
  /// message id), committed before any of them is reported done. `ctls[i]` is record i's
  /// run_control (its own lease). One result per record, in order, with the errors of run().
  /// Does not complete or fail the records.
  std::vector<result<pipeline_outcome>> run_batch(std::span<claimed_record* const> records,
                                                  std::span<const run_control> ctls);

  /// Runs `record` and then completes it (success) or fails it (retry later, dead after
  /// max_attempts) in `work`. Returns the pipeline's result; the work-table call's failure
  /// (e.g. lease_lost) is logged, and returned only when the pipeline succeeded.
  [[nodiscard]] result<pipeline_outcome> process(const work_table& work, claimed_record& record);

  /// Claims and processes records of `queue` until none is claimable (`claim_max` per round,
  /// each round run with run_batch: one SQL transaction per dataset, then one completion
  /// transaction per partition). The claimed records' leases are renewed in the background (a
  /// lease_keeper, every work.lease_renew_ms) while their blobs load, so a load longer than the
  /// lease keeps its claim; a record whose lease is lost anyway is not committed
  /// (run_control::lease_lost) and counted in `lost`. Returns how many succeeded, failed and
  /// were lost.
  /// Errors: storage (claiming failed), cancelled (crash_after).
  struct drain_summary {
    std::size_t succeeded = 0;
    std::size_t failed = 0;
    std::size_t lost = 0; ///< lease lost during the run: left to the record's new owner
  };
  [[nodiscard]] result<drain_summary> drain(const work_table& work, std::string_view queue, std::size_t claim_max);

  /// True once the chain's supervisor gave up (too many stage restarts): every run fails with
  /// io; the owner should be replaced (the worker exits and is restarted).
  bool broken() const noexcept { return chain_->broken(); }
  /// Stage actor restarts so far. Thread-safe.
  std::uint64_t restarts() const { return chain_->restarts(); }
  /// The runs table.
  const run_log& runs() const noexcept { return runs_; }

private:
  etl_job(run_log runs, std::unique_ptr<etl_chain> chain, etl_job_options opts)
      : runs_(std::move(runs)), chain_(std::move(chain)), opts_(std::move(opts)) {}
  // One run from its history read (or not) to its history write.
  struct prepared {
    run_instance inst;
    std::set<std::string> done;  // steps in the history
    bool defer = false;          // per_blob on a first attempt: one write at the end
    std::int32_t attempt = 0;
    std::int64_t gen = 0;
    std::optional<result<pipeline_outcome>> ready; // settled before the chain (resumed after load, read failed)
  };
  prepared prepare(std::string_view record_id, std::string_view blob_name, std::int32_t attempt, std::int64_t gen);
  std::shared_ptr<blob_run> make_run(prepared& p, const run_control& ctl);
  result<pipeline_outcome> finish(prepared& p, const result<void>& ran, blob_run& r, double ms);

  run_log runs_;
  std::unique_ptr<etl_chain> chain_; ///< the stage actors (owns the blob client and the sink)
  etl_job_options opts_;
};

} // namespace shoal::workers::etl
