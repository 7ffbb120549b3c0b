#pragma once
// The engine of `shoal worker` (issue 5 items 1–2): claims records of one queue from the work
// table, runs a pluggable job on each (workers/fleet/job.hpp), renews their leases while the job
// runs, completes / fails / releases them, and talks to its supervisor over ZeroMQ.
//
// Threads: the caller of run() owns the DEALER (hello, heartbeats, assignments, wake-ups,
// drain, Paranoid Pirate reconnects; never storage I/O, so heartbeats keep flowing during a
// storage outage, and a starting worker says hello and reads its ctl.assign before any storage
// round trip: issue 19, a joining host's first claim); a set-up thread reads the server clock
// and then meta rows (work_table::prepare, 4 at once: of every shard of the queue until the
// ctl.assign, then of the assigned ones left; first creating the table,
// worker_options::create_table), and a claim waits for the clock and for the rows of its shards
// being read instead of reading them again; one claimer thread keeps claimed records ready for the lanes — a claim is one
// query and one transaction whatever its size, so it claims ahead: fast jobs in batches of up to
// 2 × claim_batch, slow jobs only what the lanes start within a quarter lease, and never more
// held in all (ready, running and waiting for the completer) than that target + one run per lane
// + one completion transaction (the high-water mark: claims wait for completions) (the fallback table
// poll of every assigned shard backs off from worker.poll_min_ms to poll_max_ms while they come
// back empty or drained, reset by a full batch (alone: by any found work) or a retry of ours;
// a work.available naming a shard claims from that shard alone, one naming none polls every
// shard at once); worker.concurrency lane threads each run one job instance on one record, or
// on up to job::max_batch() records at once (run_batch); one completer thread completes the done
// records waiting, one transaction per partition, while the lanes go on; the lease_keeper's
// thread renews held leases (all of a partition's together); a sweeper thread removes done
// records past [work] done_retention_ms from the worker's shards. A lost lease stops that lane's
// job at once (stop_token; for a batch, once every record of it is lost) and nothing is
// completed on it.
//
// Correctness is in the table (ETags, leases, fencing gens): a supervisor that goes silent is
// reconnected to in the background while work continues; no message is needed for a record to be
// processed exactly once per successful attempt.

#include "workers/fleet/job.hpp"
#include "workers/fleet/ctl_protocol.hpp"
#include "workers/claim/work_table.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace shoal::workers::fleet {

/// Settings of a worker. `cfg` carries [worker] (job, queue, concurrency, polls, drain), [work]
/// (lease, renew, batch) and [fleet] (heartbeats); the rest have safe defaults.
struct worker_options {
  config cfg;               ///< the whole configuration, already validated
  std::string slot = "w0";  ///< slot name: DEALER routing id and part of the owner string (1..64 bytes)
  std::string supervisor;   ///< ROUTER endpoint of the supervisor; empty = standalone (no ZeroMQ)
  std::string host;         ///< host name; empty = cfg.fleet.host, else gethostname()
  long pid = 0;             ///< process id in the owner string; 0 = getpid()
  /// Process id of the supervisor that started this worker (`--supervisor-pid`); 0 = none. Once
  /// it is no longer this process's parent (the supervisor died), the worker stops talking to any
  /// supervisor, drains (finish or release within worker.drain_timeout_ms) and exits: a worker
  /// never runs on unsupervised, e.g. beside the workers of a supervisor started after it.
  long supervisor_pid = 0;
  /// Create the work table and its payload container (work_table::create_if_missing) when the
  /// set-up thread's first server clock read finds no table, then read again; on other errors
  /// the reads are retried (200 ms doubling to 5 s) until they succeed or the worker drains.
  /// Claims wait for the clock meanwhile. Under a supervisor the hello and ctl.assign do not
  /// wait for it (the supervisor creates the table too, beside its own start); standalone,
  /// `shoal worker` creates them before run() instead.
  bool create_table = false;
  /// Under a supervisor: claim nothing (and sweep nothing) until the first ctl.assign, however
  /// long it takes, and until the supervisor's first word tolerate its silence for 15 s (its
  /// own start-up window for a worker's hello) before reconnecting. `shoal supervisor` starts
  /// its workers with this (`--await-assign`) before it joins the fleet, so they connect and
  /// prepare storage (the server clock, the meta rows of every shard of the queue:
  /// work_table::prepare) while it joins, and their first claim after the assignment is one
  /// query and one transaction when that was done in time (issue 19, a joining host's first
  /// claim). Without it, a
  /// supervised worker that hears no ctl.assign within a second claims from every shard.
  bool await_assign = false;
  job_factory factory;      ///< makes one job per lane (cmd::find_job_factory, workers/cmd/jobs.hpp); empty = error
  /// Cap of the Paranoid Pirate reconnect backoff: the silence tolerated before the next
  /// reconnect doubles from heartbeat_liveness × heartbeat_interval_ms up to this.
  std::chrono::milliseconds reconnect_max{32'000};
};

/// Counters of one worker (monotonic since start, except in_flight and assign_epoch).
struct worker_stats {
  std::uint64_t claim_calls = 0; ///< work_table::claim calls (polls and wake-ups)
  std::uint64_t claimed = 0;     ///< records claimed
  std::uint64_t done = 0;        ///< records completed
  std::uint64_t failed = 0;      ///< failed attempts recorded (retry or dead)
  std::uint64_t dead = 0;        ///< of which the record went dead (max_attempts reached)
  std::uint64_t released = 0;    ///< claims given back uncounted (drain, stop, broken job)
  std::uint64_t lease_lost = 0;  ///< records whose lease was lost (job stopped or completion refused)
  std::uint64_t contention = 0;  ///< claims lost to another claimer (412)
  std::uint64_t storage_errors = 0; ///< claim/complete/fail/release calls that failed on storage
  std::uint64_t malformed = 0;   ///< frames from the supervisor dropped: undecodable envelope or body
  std::uint64_t ignored = 0;     ///< well-formed messages of a kind or queue not for a worker
  std::uint64_t reconnects = 0;  ///< Paranoid Pirate reconnects after a silent supervisor
  std::uint64_t heartbeats_sent = 0;
  std::uint64_t wakeups = 0;     ///< work.available messages applied
  std::uint64_t swept = 0;       ///< done records removed by this worker's sweeps
  std::uint64_t complete_calls = 0; ///< completion batches written (each: one transaction per partition)
  std::uint64_t assign_epoch = 0; ///< epoch of the last ctl.assign applied
  /// The set-up thread read the server clock and every shard's meta row (work_table::prepare);
  /// false while it runs, when a read failed, once a ctl.assign cut it short (it then reads
  /// only the assigned shards' rows), or without one (standalone without create_table).
  bool storage_prepared = false;
  std::uint32_t in_flight = 0;   ///< records held right now (ready, running, or being completed)
  double rate_per_s = 0;         ///< completions per second over the last ~10 s
};

/// One worker process's engine. Create with make(), run() once from one thread; drain() and
/// stats() may be called from any thread.
class worker {
public:
  /// Makes the job instances (one per lane, through opts.factory) and checks the options.
  /// Errors: invalid_argument (bad slot, unknown job, exec without a command), whatever the
  /// job factory returns (storage, SQL), transport errors of the supervisor endpoint as
  /// invalid_argument.
  [[nodiscard]] static result<std::unique_ptr<worker>> make(work_table table, worker_options opts);
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  /// Works until drained: connects and says hello (unless standalone), claims and runs records,
  /// heartbeats. Returns after a drain (drain(), ctl.drain) once every in-flight record is
  /// finished or, after the drain deadline, stopped and released, and ctl.bye is sent.
  /// Errors: a job's result<> error (the job is broken; its record is released and the worker
  /// drains at once) — the process should exit non-zero so its supervisor restarts it.
  [[nodiscard]] result<worker_stats> run();

  /// Asks the worker to drain: stop claiming, finish in-flight records within `deadline`
  /// (0 = worker.drain_timeout_ms), then stop their jobs and release them. Thread-safe and
  /// idempotent (a later call may only shorten the deadline). Not async-signal-safe: call it
  /// from a sigwait thread, not a signal handler.
  void drain(std::chrono::milliseconds deadline = std::chrono::milliseconds(0),
             std::string reason = "drain requested");

  /// A copy of the counters. Thread-safe.
  worker_stats stats() const;
  /// The work-table owner string (worker_owner(host, slot, pid)).
  const std::string& owner() const noexcept;
  /// The queue claimed from.
  const std::string& queue() const noexcept;

  struct impl; ///< defined in worker_internal.hpp

private:
  explicit worker(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// The queue a worker of `cfg` claims from: worker.queue, else "exec" for the exec job and
/// etl.queue for the etl job. Thread-safe (pure).
std::string worker_queue(const config& cfg);

} // namespace shoal::workers::fleet
