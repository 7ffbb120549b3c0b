#pragma once
// Pluggable jobs of `shoal worker` (issue 5): what runs on each claimed record. Two ship:
// `exec` (workers/fleet/exec_job.hpp: a command per record, payload on stdin) and `etl`
// (workers/etl/etl_fleet_job.hpp: the blob named by the record loaded into SQL).

#include "workers/config.hpp"
#include "workers/error.hpp"
#include "workers/work_table.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <string_view>

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
  std::function<bool()> lease_lost;
};

/// One job instance per worker slot (per concurrent record when worker.concurrency > 1: the
/// worker makes one instance per lane, so run() need not be thread-safe). run() blocks.
class job {
public:
  virtual ~job() = default;
  /// "exec" | "etl".
  virtual std::string_view name() const noexcept = 0;
  /// Runs the job on `record` (payload resolved). Errors are returned as a job_result with
  /// verdict failed; a result<> error means the job itself is broken (bad configuration,
  /// SQL connection gone) and the worker exits non-zero so its supervisor restarts it.
  virtual result<job_result> run(claimed_record& record, const job_context& ctx) = 0;
};

/// Makes the job named by cfg.worker.job. Errors: invalid_argument (unknown job, exec without
/// worker.exec_command), and whatever the job's own set-up returns (storage, SQL).
using job_factory = std::function<result<std::unique_ptr<job>>(const config& cfg)>;

/// The factory for `name` ("exec" or "etl"); nullptr when unknown. Thread-safe (pure).
job_factory find_job_factory(std::string_view name);

} // namespace shoal::workers::fleet
