#pragma once
// Private to workers/fleet (worker.cpp, worker_records.cpp, worker_claiming.cpp): the worker's
// state (worker::impl), its lanes and completion queue. Not part of the fleet's interface;
// include it from nowhere else.

#include "workers/fleet/worker.hpp"

#include "actors/message.hpp"
#include "transport/endpoint.hpp"
#include "transport/socket.hpp"
#include "workers/claim/claimer.hpp"
#include "workers/version.hpp"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <stop_token>
#include <thread>
#include <vector>


namespace shoal::workers::fleet {
namespace worker_parts {

using namespace std::chrono;
using clock_type = steady_clock;

inline std::string local_host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0')
    return "localhost";
  return buf;
}

// One job runner. Guarded by impl::mu except `job`, owned by the lane's thread.
struct lane {
  std::unique_ptr<fleet::job> job;
  bool busy = false;
  std::vector<lease_keeper::handle> held; // the records being run (one, or a batch)
  std::stop_source stop;                  // replaced per run
  bool stopped_for_loss = false;          // stop requested because every record's lease was lost
  std::thread thread;
};

// A record whose job said done, waiting for the completer.
struct to_complete {
  lease_keeper::handle h;
  std::string detail;
  long long ms = 0;
};


} // namespace worker_parts

using namespace worker_parts; // the parts are this header's own: private to the worker's files

struct worker::impl {
  impl(worker_options o, work_table t) : opts(std::move(o)), table(std::move(t)) {}

  // -- fixed at make -------------------------------------------------------------------------
  worker_options opts;
  work_table table;
  std::string queue;
  std::string host;
  std::string owner;
  std::string address; // envelope `from`: "worker@{slot}@{host}"
  std::vector<std::uint32_t> all_shards;
  std::uint64_t contention_base = 0;
  std::unique_ptr<lease_keeper> keeper;
  std::vector<std::unique_ptr<lane>> lanes;

  // -- shared state, guarded by mu -----------------------------------------------------------
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<lease_keeper::handle> ready; // claimed, waiting for a lane
  std::vector<std::uint32_t> shards;      // assigned; empty = all
  bool no_shards = false;                 // the last ctl.assign said "none": claim nothing
  std::uint64_t assign_epoch = 0;
  bool assigned = false;                  // a ctl.assign arrived (its shard list may be "all")
  bool wake = false;                      // a wake-up for every shard since the last claim
  std::set<std::uint32_t> wake_shards;    // work.available named these shards since the last claim
  bool retry_soon = false;                // a record of ours went back to pending with a backoff
  bool draining = false;                  // no more claims; lanes exit when idle
  bool drain_requested = false;
  clock_type::time_point drain_deadline{};
  std::string drain_reason;
  std::optional<error> fatal;             // a job's result<> error
  std::thread claimer;
  std::size_t max_batch = 1;              // records per lane run (job::max_batch, ≤ claim_batch)
  double job_ms_ewma = -1;                // mean run time per record (ms), -1 until measured; guarded by mu

  // -- completions: lanes hand done records to the completer, which completes them in one
  // transaction per partition (keeper->complete_many) while the lanes run the next ones.
  mutable std::mutex cmu;
  std::condition_variable ccv;
  std::vector<to_complete> completing;    // guarded by cmu
  std::size_t completing_busy = 0;        // records taken by the completer, not yet written (cmu)
  bool completer_stop = false;            // guarded by cmu
  std::atomic<bool> completer_flush{false}; // draining: write what is waiting without lingering
  std::thread completer;

  // -- sweeps of done records (SCHEMA.md "Sweep") --------------------------------------------
  std::thread sweeper;

  // -- storage set-up off the control loop (supervised: the table, the server clock, the meta
  // rows of the queue's shards); the first claim waits for it (guarded by mu) ------------------
  std::thread setup;
  bool setup_done = true;    // false while the set-up thread runs
  bool clock_tried = false;  // the set-up thread's server clock read returned (either way)
  std::set<std::uint32_t> prep_started;   // shards whose meta row the set-up read or is reading
  std::set<std::uint32_t> prep_in_flight; // of them, those still being read
  std::atomic<std::size_t> prepared_shards{0}; // meta rows read by the set-up

  // -- counters (relaxed atomics; read by stats() from any thread) ---------------------------
  std::atomic<std::uint64_t> claim_calls{0}, claimed{0}, done{0}, failed{0}, dead{0}, released{0}, lease_lost{0},
      storage_errors{0}, malformed{0}, ignored{0}, reconnects{0}, heartbeats_sent{0}, wakeups{0}, swept{0},
      complete_calls{0};
  std::atomic<double> rate{0};
  std::deque<std::pair<clock_type::time_point, std::uint64_t>> rate_samples; // control thread only

  static void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1);

  std::uint32_t in_flight_locked() const;

  std::size_t waiting_completion() const;

  worker_stats stats() const;

  // -- lease loss ----------------------------------------------------------------------------
  // From the keeper's thread: stop the lane running that record at once.
  // A lane running one record stops at once; a lane running a batch stops when every record of
  // the batch is lost (the job sees which through job_context::record_lost).
  void on_lost(const claimed_record& rec, const error& e);

  // -- table writes with bounded retries -----------------------------------------------------
  // Retries a finishing write (complete/fail/release) on storage errors while the lease is
  // still ours: storage is shared truth, so giving up early would leave the record claimed
  // until its lease expires. Stops on success, lease_lost, not_found, or a lost lease.
  template <class F> auto with_retries(const lease_keeper::handle& h, F&& write) -> decltype(write()) {
    auto delay = milliseconds(200);
    for (;;) {
      auto r = write();
      if (r || r.error().code == errc::lease_lost || r.error().code == errc::not_found ||
          r.error().code == errc::invalid_argument || h.lost())
        return r;
      add(storage_errors);
      spdlog::warn("worker {}: record '{}': {} (retrying in {} ms)", opts.slot, h.id(),
                   r.error().describe(), delay.count());
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, milliseconds(5'000));
    }
  }

  void release_uncounted(const lease_keeper::handle& h, std::string_view why);

  // -- lanes ---------------------------------------------------------------------------------
  void broken(const lease_keeper::handle& h, const error& e, std::string_view job_name);

  // What happens to one record after its job ran: done → the completer; failed → fail (retry
  // later or dead); release → release uncounted.
  void settle(const lease_keeper::handle& h, const claimed_record& rec, job_result r, bool was_lost,
              long long ms);

  // Runs the lane's job on `hs`: run() on the one record when the job's max_batch() is 1,
  // else run_batch() on the 1..max_batch records taken together (even when only one was ready).
  void process(lane& l, const std::vector<lease_keeper::handle>& hs, std::stop_token stop);

  void lane_loop(std::size_t i);

  // -- completer -----------------------------------------------------------------------------
  // Takes every done record waiting and completes them together: keeper->complete_many writes
  // one transaction per partition (record row + ticket of each, ≤ 50 records), falling back to
  // single conditional writes after 412s. The lanes never wait for it. A group commit: after the
  // first record arrives it lingers up to complete_linger (or until a full transaction's worth
  // is waiting, or a drain), so records finishing a few ms apart (a spawned command per record)
  // share one transaction instead of paying a request each; the lease covers the wait.
  static constexpr milliseconds complete_linger{250};
  static constexpr std::size_t complete_full = 50; // records per completion transaction

  void completer_loop();

  void stop_completer();

  // -- claimer -------------------------------------------------------------------------------
  // How many claimed records to keep ready for the lanes. A claim costs one query and one
  // transaction whatever its size, so fast jobs are fed in big batches (up to 2 × claim_batch);
  // slow jobs get only what the lanes can start well within a lease (a quarter of it), so
  // records do not wait on one worker while another is idle. Until the first run is timed:
  // one batch per lane.
  std::size_t ready_target_locked() const;

  // The fallback poll (every assigned shard) backs off from poll_min to poll_max while the
  // shards are empty; work.available for one shard claims from that shard alone without
  // touching the backoff (issue 20: idle workers polling their shards at a fixed rate were a
  // third of flights-20k's storage requests). A claim that came back short means the shards
  // visited are drained: the next look is the backed-off poll or a wake-up, not an immediate
  // re-poll — except after a failure of ours, whose retry nobody announces.
  void claimer_loop();

  // -- sweeper -------------------------------------------------------------------------------
  // Every max(done_retention_ms / 4, 2 s) (at most 6 h), removes the done records of this
  // worker's shards older than the retention (work_table::sweep), first after one interval.
  void sweeper_loop();

  // Under a supervisor nothing waits for this (issue 19: a joining host's first claim) but the
  // claims, for what they would otherwise read themselves. The server clock first; with
  // opts.create_table, a clock read that finds no table makes the table and its payload
  // container, and the reads are retried (200 ms doubling to 5 s) until the clock is known or
  // the worker drains.
  void setup_loop();

  // -- control -------------------------------------------------------------------------------
  void drain(milliseconds deadline, std::string reason);

  transport::envelope make_envelope(std::string_view kind) const;

  template <class M> void send(transport::envelope_socket& s, const M& m) {
    auto e = make_envelope(M::kind);
    actors::encode_body(m, e.body);
    if (auto r = s.send(e); !r)
      spdlog::debug("worker {}: {} not sent: {}", opts.slot, M::kind, r.error().describe());
  }

  heartbeat make_heartbeat();

  void update_rate(clock_type::time_point now);

  // Applies one message from the supervisor. Malformed bodies are dropped and counted.
  void handle(const transport::envelope& env, msgpack::zone& zone);

  result<std::optional<transport::envelope_socket>> connect(zmq::context_t& ctx);

  result<worker_stats> run();
};

} // namespace shoal::workers::fleet
