#pragma once
// Pluggable jobs of `shoal worker` (issue 5): what runs on each claimed record. Four ship:
// `exec` (workers/fleet/exec_job.hpp: a command per record, payload on stdin), `etl`
// (workers/cmd/etl_fleet_job.hpp: the blob named by the record loaded into SQL), and two that
// measure the fleet's own cost per record (workers/cmd/jobs.cpp): `noop` (done at once) and `sleep:MS`.

#include "workers/config.hpp"
#include "workers/error.hpp"
#include "workers/claim/work_table.hpp"

#include <chrono>
#include <functional>
#include <cstddef>
#include <memory>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers::fleet {

/// What a job decided about one record.
enum class job_verdict {
  done,    ///< success: the worker completes the record
  failed,  ///< a failed attempt: the worker calls work_table::fail (retry with backoff, then dead)
  release, ///< not attempted (stopping, lease about to end): give the claim back uncounted
};

struct job_result {
  job_verdict verdict = job_verdict::done;
  std::string error;   ///< failed: why (kept in the record's last_error, ≤ 8 KiB)
  std::string detail;  ///< one line for the log ("exit 0 in 12 ms", "9,963 rows, 37 quarantined")
};

/// Passed to job::run. The worker renews the record's lease in the background while run() is
/// in progress (lease_keeper); a job must return soon after `stop` is requested, which happens
/// on drain timeout or when the lease is lost or about to end.
struct job_context {
  std::stop_token stop;
  /// Local steady deadline of the current lease (moves forward as it is renewed).
  std::function<std::chrono::steady_clock::time_point()> lease_deadline;
  /// True once the lease was lost: whatever the job does next will not be completed.
  /// In run_batch: true once the lease of ANY record of the batch was lost.
  std::function<bool()> lease_lost;
  /// run_batch only: true once the lease of record `i` (index into the batch) was lost; a job
  /// leaves such a record out of what it commits. Empty in run().
  std::function<bool(std::size_t i)> record_lost{};
};

/// One job instance per worker slot (per concurrent record when worker.concurrency > 1: the
/// worker makes one instance per lane, so run() need not be thread-safe). run() blocks.
class job {
public:
  virtual ~job() = default;
  /// "exec" | "etl" | "noop" | "sleep".
  virtual std::string_view name() const noexcept = 0;
  /// Runs the job on `record` (payload resolved). Errors are returned as a job_result with
  /// verdict failed; a result<> error means the job itself is broken (bad configuration,
  /// SQL connection gone) and the worker exits non-zero so its supervisor restarts it.
  virtual result<job_result> run(claimed_record& record, const job_context& ctx) = 0;

  /// Most records this job takes in one run_batch call (>= 1). 1 (the default) = the worker
  /// calls run() once per record. A job that gains from doing several records together (the
  /// ETL loads several blobs of one dataset in one SQL transaction) returns more; the worker
  /// then calls run_batch() — never run() — with 1..max_batch() records taken from what it
  /// claimed, in claim order (claims take up to [work] claim_batch per partition, so a batch
  /// usually, but not always, holds records of one shard). Read once, when the worker starts;
  /// capped at [work] claim_batch.
  virtual std::size_t max_batch() const noexcept { return 1; }
  /// Runs the job on several claimed records at once (payloads resolved); returns one
  /// job_result per record, in order (another count is treated as a broken job). The worker
  /// keeps each record's lease separately while it runs, then acts on each verdict separately:
  /// done records are completed together (one transaction per partition), failed ones are
  /// retried later or dead, released ones given back uncounted. In `ctx`: lease_deadline is the
  /// earliest deadline of the batch; record_lost(i) turns true once record i's lease is lost —
  /// leave it out of what you commit (whatever its verdict, its completion will be refused if
  /// someone else holds it); lease_lost is true once any is lost; `stop` is requested on a drain
  /// timeout, or once every record of the batch is lost. The default runs run() on each record
  /// in turn (release verdicts for the rest once `ctx.stop` is requested or for records already
  /// lost). Errors: as run() (the job is broken: every record of the batch is released and the
  /// worker exits non-zero).
  virtual result<std::vector<job_result>> run_batch(std::span<claimed_record* const> records,
                                                    const job_context& ctx);
};

/// Makes the job named by cfg.worker.job. Errors: invalid_argument (unknown job, exec without
/// worker.exec_command), and whatever the job's own set-up returns (storage, SQL).
using job_factory = std::function<result<std::unique_ptr<job>>(const config& cfg)>;

// The registry of jobs by name ("exec", "etl", "noop", "sleep:MS") is not here: it lives in
// workers/cmd/jobs.hpp, the one place that knows every job, so the fleet knows jobs only
// through this interface.

} // namespace shoal::workers::fleet
