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

using namespace std::chrono;
using clock_type = steady_clock;

std::string worker_queue(const config& cfg) {
  if (!cfg.worker.queue.empty())
    return cfg.worker.queue;
  return cfg.worker.job == "etl" ? cfg.etl.queue : std::string("exec");
}

namespace {

std::string local_host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0')
    return "localhost";
  return buf;
}

std::uint64_t unix_ns() {
  return static_cast<std::uint64_t>(
      duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count());
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

} // namespace

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

  static void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) {
    c.fetch_add(n, std::memory_order_relaxed);
  }

  std::uint32_t in_flight_locked() const {
    std::uint32_t n = static_cast<std::uint32_t>(ready.size());
    for (const auto& l : lanes)
      n += l->busy ? static_cast<std::uint32_t>(l->held.size()) : 0;
    return n;
  }

  std::size_t waiting_completion() const {
    std::lock_guard lock(cmu);
    return completing.size() + completing_busy;
  }

  worker_stats stats() const {
    worker_stats s;
    auto r = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    s.claim_calls = r(claim_calls);
    s.claimed = r(claimed);
    s.done = r(done);
    s.failed = r(failed);
    s.dead = r(dead);
    s.released = r(released);
    s.lease_lost = r(lease_lost);
    s.contention = table.counters().contention.load(std::memory_order_relaxed) - contention_base;
    s.storage_errors = r(storage_errors);
    s.malformed = r(malformed);
    s.ignored = r(ignored);
    s.reconnects = r(reconnects);
    s.heartbeats_sent = r(heartbeats_sent);
    s.wakeups = r(wakeups);
    s.swept = r(swept);
    s.complete_calls = r(complete_calls);
    s.rate_per_s = rate.load(std::memory_order_relaxed);
    s.storage_prepared = prepared_shards.load() == all_shards.size();
    // Every record the keeper holds: ready, running, waiting for the completer or being
    // written, released or failed. (Counting the completer's batch as a whole over-counted:
    // complete_many lets each partition's records go as soon as they are written.)
    s.in_flight = static_cast<std::uint32_t>(keeper->held());
    std::lock_guard lock(mu);
    s.assign_epoch = assign_epoch;
    return s;
  }

  // -- lease loss ----------------------------------------------------------------------------
  // From the keeper's thread: stop the lane running that record at once.
  // A lane running one record stops at once; a lane running a batch stops when every record of
  // the batch is lost (the job sees which through job_context::record_lost).
  void on_lost(const claimed_record& rec, const error& e) {
    std::lock_guard lock(mu);
    for (auto& l : lanes) {
      if (!l->busy || l->stopped_for_loss)
        continue;
      bool mine = false, all_lost = true;
      for (const auto& h : l->held) {
        mine = mine || h.id() == rec.id;
        all_lost = all_lost && h.lost();
      }
      if (!mine)
        continue;
      if (all_lost) {
        l->stopped_for_loss = true;
        l->stop.request_stop();
        spdlog::warn("worker {}: lease of record '{}' lost ({}); stopping its job", opts.slot, rec.id,
                     e.describe());
      } else {
        spdlog::warn("worker {}: lease of record '{}' lost ({}); the rest of its batch goes on",
                     opts.slot, rec.id, e.describe());
      }
    }
  }

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

  void release_uncounted(const lease_keeper::handle& h, std::string_view why) {
    auto r = with_retries(h, [&] { return keeper->release(h, false); });
    if (r) {
      add(released);
      spdlog::debug("worker {}: record '{}' released ({})", opts.slot, h.id(), why);
    } else if (r.error().code == errc::lease_lost || r.error().code == errc::not_found) {
      spdlog::debug("worker {}: record '{}' not released: {}", opts.slot, h.id(), r.error().describe());
    } else {
      spdlog::warn("worker {}: record '{}' could not be released ({}); its lease will expire",
                   opts.slot, h.id(), r.error().describe());
    }
  }

  // -- lanes ---------------------------------------------------------------------------------
  void broken(const lease_keeper::handle& h, const error& e, std::string_view job_name) {
    spdlog::error("worker {}: the {} job is broken on record '{}': {}", opts.slot, job_name, h.id(),
                  e.describe());
    release_uncounted(h, "job broken");
    {
      std::lock_guard lock(mu);
      if (!fatal)
        fatal = e;
    }
    drain(milliseconds(0), "job broken");
  }

  // What happens to one record after its job ran: done → the completer; failed → fail (retry
  // later or dead); release → release uncounted.
  void settle(const lease_keeper::handle& h, const claimed_record& rec, job_result r, bool was_lost,
              long long ms) {
    switch (r.verdict) {
    case job_verdict::done: {
      // Even after a reported loss the conditional write decides: it succeeds only if nobody
      // re-claimed the record since our last ETag.
      {
        std::lock_guard lock(cmu);
        completing.push_back({h, std::move(r.detail), ms});
      }
      ccv.notify_one();
      break;
    }
    case job_verdict::failed: {
      if (was_lost) {
        add(lease_lost);
        spdlog::warn("worker {}: record '{}' failed after its lease was lost: {}", opts.slot,
                     rec.id, r.error);
        release_uncounted(h, "lease lost");
        break;
      }
      auto f = with_retries(h, [&] { return keeper->fail(h, r.error); });
      if (f) {
        add(failed);
        if (*f == record_status::pending) {
          // Nobody announces a retry when its backoff ends: poll at the short interval again.
          std::lock_guard lock(mu);
          retry_soon = true;
        }
        if (*f == record_status::dead)
          add(dead);
        spdlog::warn("worker {}: record '{}' failed (attempt {}, {} ms): {} → {}", opts.slot,
                     rec.id, rec.attempts, ms, r.error,
                     *f == record_status::dead ? "dead" : "retried later");
      } else {
        if (f.error().code == errc::lease_lost || f.error().code == errc::not_found)
          add(lease_lost);
        spdlog::warn("worker {}: record '{}' failed ({}) but the failure could not be recorded: {}",
                     opts.slot, rec.id, r.error, f.error().describe());
      }
      break;
    }
    case job_verdict::release:
      if (was_lost)
        add(lease_lost);
      release_uncounted(h, was_lost ? "lease lost" : r.detail.empty() ? "stopped" : r.detail);
      break;
    }
  }

  // Runs the lane's job on `hs`: run() on the one record when the job's max_batch() is 1,
  // else run_batch() on the 1..max_batch records taken together (even when only one was ready).
  void process(lane& l, const std::vector<lease_keeper::handle>& hs, std::stop_token stop) {
    std::vector<claimed_record> recs;
    recs.reserve(hs.size());
    for (const auto& h : hs)
      recs.push_back(h.record());
    job_context ctx;
    ctx.stop = stop;
    ctx.lease_deadline = [&hs] {
      auto d = hs.front().deadline();
      for (const auto& h : hs)
        d = std::min(d, h.deadline());
      return d;
    };
    ctx.lease_lost = [&hs] {
      return std::any_of(hs.begin(), hs.end(), [](const auto& h) { return h.lost(); });
    };
    const auto t0 = clock_type::now();
    std::vector<job_result> results;
    if (max_batch == 1) {
      result<job_result> r = [&]() -> result<job_result> {
        try {
          return l.job->run(recs.front(), ctx);
        } catch (const std::exception& e) { // a job must not throw; treat it as broken
          return fail(errc::io, std::string("job threw: ") + e.what());
        }
      }();
      if (!r)
        return broken(hs.front(), r.error(), l.job->name());
      results.push_back(*std::move(r));
    } else {
      ctx.record_lost = [&hs](std::size_t i) { return i < hs.size() && hs[i].lost(); };
      std::vector<claimed_record*> ptrs;
      for (auto& r : recs)
        ptrs.push_back(&r);
      result<std::vector<job_result>> r = [&]() -> result<std::vector<job_result>> {
        try {
          return l.job->run_batch(ptrs, ctx);
        } catch (const std::exception& e) {
          return fail(errc::io, std::string("job threw: ") + e.what());
        }
      }();
      if (!r || r->size() != hs.size()) {
        const error e = !r ? r.error()
                           : error{errc::io, "run_batch returned " + std::to_string(r->size()) + " results for " +
                                                 std::to_string(hs.size()) + " records", storage::errc::invalid_argument, 0};
        for (std::size_t i = 1; i < hs.size(); ++i)
          release_uncounted(hs[i], "job broken");
        return broken(hs.front(), e, l.job->name());
      }
      results = *std::move(r);
    }
    const auto ms = duration_cast<milliseconds>(clock_type::now() - t0).count();
    {
      std::lock_guard lock(mu);
      const double per = static_cast<double>(ms) / static_cast<double>(hs.size());
      job_ms_ewma = job_ms_ewma < 0 ? per : 0.8 * job_ms_ewma + 0.2 * per;
    }
    for (std::size_t i = 0; i < hs.size(); ++i)
      settle(hs[i], recs[i], std::move(results[i]), hs[i].lost(), ms);
  }

  void lane_loop(std::size_t i) {
    lane& l = *lanes[i];
    for (;;) {
      std::vector<lease_keeper::handle> hs;
      std::stop_token token;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return !ready.empty() || draining; });
        if (ready.empty() || draining) // draining: the control thread releases what is ready
          return;
        while (!ready.empty() && hs.size() < max_batch) {
          hs.push_back(std::move(ready.front()));
          ready.pop_front();
        }
        l.busy = true;
        l.held = hs;
        l.stopped_for_loss = false;
        l.stop = std::stop_source();
        token = l.stop.get_token();
      }
      cv.notify_all(); // the claimer tops up `ready`
      process(l, hs, token);
      {
        std::lock_guard lock(mu);
        l.busy = false;
        l.held.clear();
      }
      cv.notify_all();
    }
  }

  // -- completer -----------------------------------------------------------------------------
  // Takes every done record waiting and completes them together: keeper->complete_many writes
  // one transaction per partition (record row + ticket of each, ≤ 50 records), falling back to
  // single conditional writes after 412s. The lanes never wait for it. A group commit: after the
  // first record arrives it lingers up to complete_linger (or until a full transaction's worth
  // is waiting, or a drain), so records finishing a few ms apart (a spawned command per record)
  // share one transaction instead of paying a request each; the lease covers the wait.
  static constexpr milliseconds complete_linger{250};
  static constexpr std::size_t complete_full = 50; // records per completion transaction

  void completer_loop() {
    for (;;) {
      std::vector<to_complete> batch;
      {
        std::unique_lock lock(cmu);
        ccv.wait(lock, [&] { return !completing.empty() || completer_stop; });
        if (completing.empty())
          return;
        ccv.wait_until(lock, clock_type::now() + complete_linger, [&] {
          return completing.size() >= complete_full || completer_stop || completer_flush.load();
        });
        batch.swap(completing);
        completing_busy = batch.size();
      }
      std::vector<lease_keeper::handle> hs;
      hs.reserve(batch.size());
      for (const auto& c : batch)
        hs.push_back(c.h);
      add(complete_calls);
      auto res = keeper->complete_many(hs);
      for (std::size_t i = 0; i < batch.size(); ++i) {
        auto r = std::move(res[i]);
        const auto& h = batch[i].h;
        if (!r && r.error().code != errc::lease_lost && r.error().code != errc::not_found &&
            r.error().code != errc::invalid_argument && !h.lost())
          r = with_retries(h, [&] { return keeper->complete(h); }); // storage trouble: one by one
        if (r) {
          add(done);
          spdlog::debug("worker {}: record '{}' done ({} ms): {}", opts.slot, h.id(), batch[i].ms,
                        batch[i].detail);
        } else if (r.error().code == errc::lease_lost || r.error().code == errc::not_found) {
          add(lease_lost);
          spdlog::warn("worker {}: record '{}' ran but its completion was refused: {}", opts.slot,
                       h.id(), r.error().describe());
        } else {
          spdlog::warn("worker {}: record '{}' ran but could not be completed: {}", opts.slot,
                       h.id(), r.error().describe());
          if (h.lost())
            add(lease_lost);
        }
      }
      {
        std::lock_guard lock(cmu);
        completing_busy = 0;
      }
      ccv.notify_all();
      // The records written left the keeper (held() fell): the claimer may be waiting on its
      // high-water mark. Taking mu orders this with its check, so the wake-up cannot be lost.
      { std::lock_guard lock(mu); }
      cv.notify_all();
    }
  }

  void stop_completer() {
    {
      std::lock_guard lock(cmu);
      completer_stop = true;
    }
    ccv.notify_all();
    if (completer.joinable())
      completer.join();
  }

  // -- claimer -------------------------------------------------------------------------------
  // How many claimed records to keep ready for the lanes. A claim costs one query and one
  // transaction whatever its size, so fast jobs are fed in big batches (up to 2 × claim_batch);
  // slow jobs get only what the lanes can start well within a lease (a quarter of it), so
  // records do not wait on one worker while another is idle. Until the first run is timed:
  // one batch per lane.
  std::size_t ready_target_locked() const {
    const std::size_t per_run = lanes.size() * max_batch;
    if (job_ms_ewma < 0)
      return per_run;
    const double lease_quarter_ms = static_cast<double>(opts.cfg.work.lease_ms) / 4.0;
    const double per_lane = lease_quarter_ms / std::max(job_ms_ewma, 0.05);
    const auto by_lease = static_cast<std::size_t>(std::max(1.0, per_lane) * static_cast<double>(lanes.size()));
    return std::clamp<std::size_t>(by_lease, per_run, std::max<std::size_t>(per_run, 2 * opts.cfg.work.claim_batch));
  }

  // The fallback poll (every assigned shard) backs off from poll_min to poll_max while the
  // shards are empty; work.available for one shard claims from that shard alone without
  // touching the backoff (issue 20: idle workers polling their shards at a fixed rate were a
  // third of flights-20k's storage requests). A claim that came back short means the shards
  // visited are drained: the next look is the backed-off poll or a wake-up, not an immediate
  // re-poll — except after a failure of ours, whose retry nobody announces.
  void claimer_loop() {
    const auto poll_min = milliseconds(opts.cfg.worker.poll_min_ms);
    const auto poll_max = milliseconds(opts.cfg.worker.poll_max_ms);
    // Under a supervisor the first poll waits (≤ 1 s) for ctl.assign, which follows the hello
    // at once: polling every shard of the queue before it costs a query and a meta-row read per
    // shard that is not ours. Alone, or when no assignment comes, every shard.
    // Linked to a supervisor, new work is announced (work.available), so an empty fallback poll
    // backs off four times as fast; alone, the backoff doubles.
    const bool linked = !opts.supervisor.empty();
    if (linked) {
      std::unique_lock lock(mu);
      if (opts.await_assign) // the supervisor is joining the fleet: not a shard before it says which
        cv.wait(lock, [&] { return assigned || draining; });
      else
        cv.wait_for(lock, seconds(1), [&] { return assigned || draining; });
    }
    const int backoff_factor = linked ? 4 : 2;
    auto backoff = poll_min;
    auto next_poll = clock_type::now();
    std::uint64_t errors_in_row = 0;
    // A supervised worker claims from the shards it is given: its supervisor answers the hello
    // with a ctl.assign at once, so wait for that (one heartbeat interval at most) instead of
    // claiming from every shard meanwhile, racing their owners on other hosts (bench "scale").
    if (!opts.supervisor.empty()) {
      std::unique_lock lock(mu);
      cv.wait_for(lock, milliseconds(opts.cfg.fleet.heartbeat_interval_ms),
                  [&] { return assign_epoch != 0 || draining; });
    }
    for (;;) {
      std::size_t want = 0;
      std::vector<std::uint32_t> from;
      bool full = false; // a poll of every assigned shard (else: the shards woken)
      bool no_shards_now = false; // ctl.assign said: no shard for this host
      {
        std::unique_lock lock(mu);
        for (;;) {
          if (draining)
            return;
          const std::size_t target = ready_target_locked();
          // Claim when the ready records would not cover the lanes for one more round: half
          // the target (at least one run per lane) is the low-water mark.
          const std::size_t low = std::max(lanes.size() * max_batch, target / 2);
          // The high-water mark bounds every record this worker holds, not only the ready ones:
          // done records waiting for the completer count too. Without it a fast job drains
          // `ready` at once and the claimer kept claiming while completions fell behind (a slow
          // or contended table), until the completer's backlog took longer to write than a lease
          // lasts: leases ran out, other workers re-claimed, completions were refused, and eight
          // noop workers ended up renewing 2,557 records and completing none (bench "scale").
          const std::size_t high = target + lanes.size() * max_batch + complete_full;
          const std::size_t held = keeper->held();
          std::size_t idle_lanes = 0;
          for (const auto& l : lanes)
            idle_lanes += l->busy ? 0 : 1;
          if (held >= high || (ready.size() >= low && !(idle_lanes > 0 && ready.empty()))) {
            cv.wait(lock); // the completer, a lane or a control message wakes us
            continue;
          }
          if (wake || !wake_shards.empty() || clock_type::now() >= next_poll) {
            want = std::min(target > ready.size() ? target - ready.size() : 0, high - held);
            break;
          }
          cv.wait_until(lock, next_poll);
        }
        no_shards_now = no_shards;
        const std::vector<std::uint32_t> none;
        const auto& mine = no_shards ? none : shards.empty() ? all_shards : shards;
        full = wake || clock_type::now() >= next_poll;
        if (full) {
          from = mine;
        } else {
          for (auto sh : wake_shards)
            if (std::find(mine.begin(), mine.end(), sh) != mine.end())
              from.push_back(sh);
        }
        if (wake)
          backoff = poll_min; // a wake-up for every shard means work: poll eagerly again afterwards
        wake = false;
        wake_shards.clear();
      }
      if (want > 0 && no_shards_now) {
        next_poll = clock_type::now() + poll_max; // no shard: wait for a ctl.assign (it wakes us)
        continue;
      }
      if (want == 0 || from.empty())
        continue;
      {
        // The set-up thread reads the server clock, then the shards' meta rows: a claim before
        // it has would send the same reads again, in a row, before its own (issue 19). Wait for
        // the clock and for the rows of these shards being read; a row not started yet the
        // claim reads itself.
        std::unique_lock lock(mu);
        cv.wait(lock, [&] {
          return draining || setup_done ||
                 (clock_tried && std::none_of(from.begin(), from.end(), [&](auto sh) { return prep_in_flight.contains(sh); }));
        });
        if (draining)
          continue;
      }
      add(claim_calls);
      const auto claim_t0 = clock_type::now();
      auto got = table.claim(queue, from, owner, want);
      if (spdlog::should_log(spdlog::level::debug))
        spdlog::debug("worker {}: claim of up to {} from {} shard(s) ({}): {} in {} ms", opts.slot, want, from.size(),
                      full ? "poll" : "woken", got ? std::to_string(got->size()) : got.error().describe(),
                      duration_cast<milliseconds>(clock_type::now() - claim_t0).count());
      bool retry;
      {
        std::lock_guard lock(mu);
        retry = std::exchange(retry_soon, false);
      }
      if (retry)
        backoff = poll_min;
      if (!got) {
        add(storage_errors);
        ++errors_in_row;
        if (errors_in_row == 1 || errors_in_row % 20 == 0)
          spdlog::warn("worker {}: claim from queue '{}' failed ({} in a row): {}", opts.slot, queue,
                       errors_in_row, got.error().describe());
        if (!full) { // the woken shards are still to be looked at: the next poll covers them
          next_poll = std::min(next_poll, clock_type::now() + backoff);
          continue;
        }
        next_poll = clock_type::now() + backoff;
        backoff = std::min(backoff * 2, poll_max);
        continue;
      }
      errors_in_row = 0;
      if (got->size() < want) {
        // Drained (or empty): wait for the fallback poll or a wake-up. A targeted claim leaves
        // the fallback schedule as it was; a full poll moves it and backs off.
        if (!got->empty() && opts.supervisor.empty())
          backoff = poll_min; // alone, no wake-up will come: a trickle of work keeps the poll short
        if (full || retry) {
          next_poll = clock_type::now() + backoff;
          backoff = std::min(backoff * backoff_factor, poll_max);
        }
        if (retry)
          next_poll = std::min(next_poll, clock_type::now() + poll_min);
      } else {
        // A full batch: there may be more; claim again (from the same shards) as soon as the
        // lanes need more.
        backoff = poll_min;
        if (full) {
          next_poll = clock_type::now();
        } else {
          std::lock_guard lock(mu);
          wake_shards.insert(from.begin(), from.end());
        }
      }
      if (got->empty())
        continue;
      add(claimed, got->size());
      auto hs = keeper->hold(std::move(*got));
      std::vector<lease_keeper::handle> late;
      {
        std::lock_guard lock(mu);
        if (draining)
          late = std::move(hs); // the drain began during the claim: give these back
        else
          for (auto& h : hs)
            ready.push_back(std::move(h));
      }
      cv.notify_all();
      for (auto& h : late)
        release_uncounted(h, "draining");
      if (!late.empty())
        return;
    }
  }

  // -- sweeper -------------------------------------------------------------------------------
  // Every max(done_retention_ms / 4, 2 s) (at most 6 h), removes the done records of this
  // worker's shards older than the retention (work_table::sweep), first after one interval.
  void sweeper_loop() {
    const auto interval = std::clamp<milliseconds>(milliseconds(opts.cfg.work.done_retention_ms / 4), seconds(2), hours(6));
    auto next = clock_type::now() + interval;
    for (;;) {
      std::vector<std::uint32_t> from;
      {
        std::unique_lock lock(mu);
        if (cv.wait_until(lock, next, [&] { return draining || drain_requested; }))
          return;
        if (no_shards || (opts.await_assign && !assigned)) {
          next = clock_type::now() + interval; // no shard of ours to sweep (yet)
          continue;
        }
        from = shards.empty() ? all_shards : shards;
      }
      auto r = table.sweep(queue, from, milliseconds(opts.cfg.work.done_retention_ms));
      if (r) {
        add(swept, r->removed);
        if (r->removed > 0)
          spdlog::info("worker {}: removed {} done record(s) older than {} ms from {} shard(s)", opts.slot,
                       r->removed, opts.cfg.work.done_retention_ms, from.size());
      } else {
        spdlog::warn("worker {}: sweeping done records failed: {}", opts.slot, r.error().describe());
      }
      next = clock_type::now() + interval;
    }
  }

  // Under a supervisor nothing waits for this (issue 19: a joining host's first claim) but the
  // claims, for what they would otherwise read themselves. The server clock first; with
  // opts.create_table, a clock read that finds no table makes the table and its payload
  // container, and the reads are retried (200 ms doubling to 5 s) until the clock is known or
  // the worker drains.
  void setup_loop() {
    const auto t0 = clock_type::now();
    result<void> clock = table.sync_clock();
    for (std::uint32_t attempt = 1; !clock && opts.create_table; ++attempt) {
      if (clock.error().code == errc::not_found) {
        if (auto r = table.create_if_missing(); r) {
          spdlog::info("worker {}: work table '{}' created", opts.slot, table.table().name());
          clock = table.sync_clock();
          continue;
        } else {
          clock = std::unexpected(r.error());
        }
      }
      add(storage_errors);
      const auto delay = retry_delay(attempt, milliseconds(200), milliseconds(5'000), 0.5);
      spdlog::warn("worker {}: work table '{}': {} (retrying in {} ms)", opts.slot, table.table().name(),
                   clock.error().describe(), delay.count());
      {
        std::unique_lock lock(mu);
        if (cv.wait_for(lock, delay, [&] { return draining || drain_requested; }))
          return;
      }
      clock = table.sync_clock();
    }
    // Then what the first claim would otherwise read itself, in a row, after the assignment:
    // meta rows, 4 at once. Until the ctl.assign, of every shard of the queue; once it came,
    // only of the assigned shards left: the rest would only queue ahead of the claims at a busy
    // storage account.
    if (!clock)
      spdlog::warn("worker {}: storage clock not known yet: {}", opts.slot, clock.error().describe());
    {
      std::lock_guard lock(mu);
      clock_tried = true;
    }
    cv.notify_all();
    if (!clock)
      return;
    auto next_shard = [&]() -> std::optional<std::uint32_t> {
      std::lock_guard lock(mu);
      if (draining || drain_requested || (assigned && no_shards))
        return std::nullopt;
      const auto& wanted = assigned && !shards.empty() ? shards : all_shards;
      for (auto sh : wanted)
        if (prep_started.insert(sh).second) {
          prep_in_flight.insert(sh);
          return sh;
        }
      return std::nullopt;
    };
    std::atomic<bool> failed{false};
    auto read_rows = [&] {
      while (auto sh = next_shard()) {
        const std::uint32_t one[] = {*sh};
        auto r = table.prepare(queue, one);
        if (r)
          prepared_shards.fetch_add(1);
        else if (!failed.exchange(true))
          spdlog::warn("worker {}: shard meta row not read ahead (the claim reads it): {}", opts.slot,
                       r.error().describe());
        {
          std::lock_guard lock(mu);
          prep_in_flight.erase(*sh);
        }
        cv.notify_all();
      }
    };
    {
      std::vector<std::jthread> pool;
      for (int i = 0; i < 3; ++i)
        pool.emplace_back(read_rows);
      read_rows();
    }
    spdlog::info("worker {}: storage prepared in {} ms: server clock, {} of {} shard meta row(s)", opts.slot,
                 duration_cast<milliseconds>(clock_type::now() - t0).count(), prepared_shards.load(),
                 all_shards.size());
  }

  // -- control -------------------------------------------------------------------------------
  void drain(milliseconds deadline, std::string reason) {
    {
      std::lock_guard lock(mu);
      const auto d = deadline.count() > 0 ? deadline : milliseconds(opts.cfg.worker.drain_timeout_ms);
      const auto at = fatal && deadline.count() == 0 ? clock_type::now() : clock_type::now() + d;
      if (!drain_requested || at < drain_deadline)
        drain_deadline = at;
      if (!drain_requested)
        drain_reason = std::move(reason);
      drain_requested = true;
    }
    completer_flush = true;
    cv.notify_all();
    ccv.notify_all();
  }

  transport::envelope make_envelope(std::string_view kind) const {
    transport::envelope e;
    e.id = transport::new_message_id();
    e.kind = std::string(kind);
    e.from = address;
    e.ts_ns = unix_ns();
    return e;
  }

  template <class M> void send(transport::envelope_socket& s, const M& m) {
    auto e = make_envelope(M::kind);
    actors::encode_body(m, e.body);
    if (auto r = s.send(e); !r)
      spdlog::debug("worker {}: {} not sent: {}", opts.slot, M::kind, r.error().describe());
  }

  heartbeat make_heartbeat() {
    heartbeat hb;
    const auto st = stats();
    {
      std::lock_guard lock(mu);
      bool busy = false;
      for (const auto& l : lanes)
        if (l->busy) {
          if (!busy && !l->held.empty())
            hb.current = l->held.front().id();
          busy = true;
        }
      hb.state = static_cast<std::uint8_t>(draining || drain_requested ? worker_state::draining
                                           : busy                       ? worker_state::working
                                                                        : worker_state::idle);
    }
    hb.in_flight = st.in_flight;
    hb.done = st.done;
    hb.failed = st.failed;
    hb.lease_lost = st.lease_lost;
    hb.contention = st.contention;
    hb.claimed = st.claimed;
    hb.rate_per_s = st.rate_per_s;
    hb.assign_epoch = st.assign_epoch;
    hb.malformed = st.malformed;
    return hb;
  }

  void update_rate(clock_type::time_point now) {
    const auto d = done.load(std::memory_order_relaxed);
    rate_samples.emplace_back(now, d);
    while (rate_samples.size() > 2 && now - rate_samples.front().first > seconds(10))
      rate_samples.pop_front();
    const auto& [t0, d0] = rate_samples.front();
    const double secs = duration<double>(now - t0).count();
    rate.store(secs > 0.5 ? static_cast<double>(d - d0) / secs : 0.0, std::memory_order_relaxed);
  }

  // Applies one message from the supervisor. Malformed bodies are dropped and counted.
  void handle(const transport::envelope& env, msgpack::zone& zone) {
    auto bad = [&](const auto& err) {
      const auto n = malformed.fetch_add(1, std::memory_order_relaxed) + 1;
      if (n <= 10 || n % 1000 == 0)
        spdlog::warn("worker {}: dropped a malformed {} from the supervisor ({} so far): {}",
                     opts.slot, env.kind, n, err.message);
    };
    if (env.kind == heartbeat::kind) {
      auto m = actors::decode_body<heartbeat>(env.body, zone);
      if (!m)
        bad(m.error());
    } else if (env.kind == assign::kind) {
      auto m = actors::decode_body<assign>(env.body, zone);
      if (!m)
        return bad(m.error());
      if (!m->queue.empty() && m->queue != queue) {
        add(ignored);
        spdlog::debug("worker {}: ctl.assign for queue '{}' ignored (mine is '{}')", opts.slot,
                      m->queue, queue);
        return;
      }
      std::vector<std::uint32_t> s;
      for (auto x : m->shards)
        if (x < opts.cfg.work.shards && std::find(s.begin(), s.end(), x) == s.end())
          s.push_back(x);
      if (s.size() != m->shards.size() && s.empty())
        return bad(actors::error{actors::errc::decode, "ctl.assign names no valid shard"});
      std::lock_guard lock(mu);
      if (m->epoch < assign_epoch) {
        add(ignored);
        return;
      }
      assign_epoch = m->epoch;
      assigned = true;
      std::sort(s.begin(), s.end());
      shards = std::move(s);
      no_shards = m->none;
      wake = true; // new shards may hold work: look at once
      cv.notify_all();
      spdlog::info("worker {}: assigned {} (epoch {})", opts.slot,
                   no_shards       ? std::string("no shard")
                   : shards.empty() ? std::string("every shard")
                                  : std::to_string(shards.size()) + " shard(s)",
                   assign_epoch);
    } else if (env.kind == work_available::kind) {
      auto m = actors::decode_body<work_available>(env.body, zone);
      if (!m)
        return bad(m.error());
      if (!m->queue.empty() && m->queue != queue) {
        add(ignored);
        return;
      }
      add(wakeups);
      {
        std::lock_guard lock(mu);
        if (m->shard >= 0 && static_cast<std::uint32_t>(m->shard) < opts.cfg.work.shards)
          wake_shards.insert(static_cast<std::uint32_t>(m->shard));
        else
          wake = true;
      }
      cv.notify_all();
    } else if (env.kind == fleet::drain::kind) {
      auto m = actors::decode_body<fleet::drain>(env.body, zone);
      if (!m)
        return bad(m.error());
      spdlog::info("worker {}: ctl.drain from the supervisor ({}, deadline {} ms)", opts.slot,
                   m->reason.empty() ? "no reason given" : m->reason, m->deadline_ms);
      drain(milliseconds(m->deadline_ms),
            "supervisor: " + (m->reason.empty() ? std::string("drain") : m->reason));
    } else {
      add(ignored);
      spdlog::debug("worker {}: ignored a {} from the supervisor", opts.slot, env.kind);
    }
  }

  result<std::optional<transport::envelope_socket>> connect(zmq::context_t& ctx) {
    transport::socket_options so;
    so.routing_id = opts.slot;
    so.linger = milliseconds(1000);
    so.send_hwm = 100; // heartbeats queued while the supervisor is away are stale anyway
    auto s = transport::envelope_socket::make(ctx, zmq::socket_type::dealer, so);
    if (!s)
      return fail(errc::invalid_argument, "worker: cannot create the DEALER: " + s.error().describe());
    if (auto r = s->connect(opts.supervisor); !r)
      return fail(errc::invalid_argument,
                  "worker: cannot connect to the supervisor at " + opts.supervisor + ": " + r.error().describe());
    hello h;
    h.slot = opts.slot;
    h.pid = opts.pid;
    h.host = host;
    h.owner = owner;
    h.job = opts.cfg.worker.job;
    h.queue = queue;
    h.version = std::string(version());
    send(*s, h);
    return std::optional<transport::envelope_socket>(std::move(*s));
  }

  result<worker_stats> run();
};

result<worker_stats> worker::impl::run() {
  const auto started = clock_type::now();
  const auto hb_interval = milliseconds(opts.cfg.fleet.heartbeat_interval_ms);
  const auto silence_base = hb_interval * opts.cfg.fleet.heartbeat_liveness;
  zmq::context_t ctx(1);
  std::optional<transport::envelope_socket> sock;
  if (!opts.supervisor.empty()) {
    auto s = connect(ctx);
    if (!s)
      return std::unexpected(s.error());
    sock = std::move(*s);
  }
  spdlog::info("worker {}: {} job on queue '{}' ({} lane(s)) as {}{}", opts.slot,
               opts.cfg.worker.job, queue, lanes.size(), owner,
               opts.supervisor.empty() ? std::string(", standalone")
                                       : ", supervisor " + opts.supervisor);
  if (sock || opts.create_table) {
    // The hello is out; the storage set-up goes on beside the control loop until the first
    // claim, which waits for it.
    {
      std::lock_guard lock(mu);
      setup_done = false;
    }
    setup = std::thread([this] {
      setup_loop();
      {
        std::lock_guard lock(mu);
        setup_done = true;
      }
      cv.notify_all();
    });
  } else if (auto r = table.sync_clock(); !r) {
    spdlog::warn("worker {}: storage clock not known yet: {}", opts.slot, r.error().describe());
  }

  keeper->start();
  completer = std::thread([this] { completer_loop(); });
  for (std::size_t i = 0; i < lanes.size(); ++i)
    lanes[i]->thread = std::thread([this, i] { lane_loop(i); });
  claimer = std::thread([this] { claimer_loop(); });
  sweeper = std::thread([this] { sweeper_loop(); });

  // -- the control loop: messages, heartbeats, liveness, drain ----------------------------------
  msgpack::zone zone;
  transport::envelope env;
  auto next_hb = clock_type::now();
  // A heartbeat when one is due; also called between the releases of a drain, which can take
  // seconds when hundreds of records were claimed ahead, so the supervisor never takes a
  // draining worker for a silent one.
  auto beat_if_due = [&](clock_type::time_point now) {
    if (now < next_hb)
      return;
    update_rate(now);
    if (sock) {
      send(*sock, make_heartbeat());
      add(heartbeats_sent);
    }
    next_hb = now + hb_interval;
  };
  auto last_heard = clock_type::now();
  auto silence_limit = silence_base;
  // Started before its supervisor joined the fleet (await_assign): the supervisor reads no
  // message until it has joined; until its first word, wait as long as it waits for our hello.
  bool heard_once = false;
  const auto startup_silence = std::max(silence_base, milliseconds(15'000));
  bool stop_sent = false;      // jobs asked to stop (drain deadline passed)
  bool orphaned = false;       // the supervisor that started us died
  bool drain_started = false;
  for (;;) {
    auto now = clock_type::now();
    // Drain: stop claiming, release what no lane took yet, wait for the lanes.
    bool all_idle = false;
    {
      std::unique_lock lock(mu);
      if (drain_requested && !drain_started) {
        drain_started = true;
        draining = true;
        spdlog::info("worker {}: draining ({}): {} record(s) in flight", opts.slot, drain_reason,
                     in_flight_locked());
      }
      if (draining) {
        std::deque<lease_keeper::handle> unstarted;
        unstarted.swap(ready);
        all_idle = std::none_of(lanes.begin(), lanes.end(), [](const auto& l) { return l->busy; });
        if (all_idle) {
          lock.unlock();
          all_idle = waiting_completion() == 0;
          lock.lock();
        }
        if (!stop_sent && now >= drain_deadline && !all_idle) {
          stop_sent = true;
          for (auto& l : lanes)
            if (l->busy)
              l->stop.request_stop();
          spdlog::info("worker {}: drain deadline reached; stopping the running job(s)", opts.slot);
        }
        lock.unlock();
        cv.notify_all();
        for (auto& h : unstarted) {
          release_uncounted(h, "draining");
          beat_if_due(clock_type::now());
        }
      }
    }
    if (drain_started && all_idle)
      break;
    beat_if_due(now);
    if (opts.supervisor_pid > 0 && !orphaned && static_cast<long>(::getppid()) != opts.supervisor_pid) {
      // Our supervisor died (we were re-parented). Its successor starts workers of its own in
      // our slots: stop talking to supervisors, finish or release what we hold, and exit.
      orphaned = true;
      sock.reset();
      spdlog::warn("worker {}: supervisor (pid {}) is gone; draining and exiting", opts.slot, opts.supervisor_pid);
      drain(milliseconds(0), "supervisor gone");
      continue;
    }
    if (sock && now - last_heard > (opts.await_assign && !heard_once ? std::max(silence_limit, startup_silence) : silence_limit)) {
      // Paranoid Pirate: the supervisor is presumed dead. Reconnect with a fresh socket (and
      // hello) while the lanes keep working from the table; tolerate twice the silence next time.
      add(reconnects);
      spdlog::warn("worker {}: no word from the supervisor at {} for {} ms; reconnecting", opts.slot,
                   opts.supervisor, duration_cast<milliseconds>(now - last_heard).count());
      sock.reset();
      auto s = connect(ctx);
      if (s)
        sock = std::move(*s);
      else
        spdlog::error("worker {}: {}", opts.slot, s.error().describe());
      last_heard = now;
      silence_limit = std::min(silence_limit * 2, std::max(opts.reconnect_max, silence_base));
      continue;
    }
    // Wait for a message, the next heartbeat, or at most 50 ms (drain requests, lane progress).
    auto wait = std::clamp(duration_cast<milliseconds>(next_hb - now), milliseconds(0), milliseconds(50));
    if (!sock) {
      std::unique_lock lock(mu);
      cv.wait_for(lock, wait);
      continue;
    }
    auto r = sock->receive(env, wait);
    if (!r) {
      if (r.error().code == transport::errc::timeout)
        continue;
      if (r.error().code == transport::errc::closed) {
        spdlog::error("worker {}: the supervisor socket closed: {}", opts.slot, r.error().describe());
        sock.reset();
        continue;
      }
      // An undecodable frame (counted by the socket as well): it still proves the peer is alive.
      last_heard = clock_type::now();
      const auto n = malformed.fetch_add(1, std::memory_order_relaxed) + 1;
      if (n <= 10 || n % 1000 == 0)
        spdlog::warn("worker {}: dropped a malformed frame from the supervisor ({} so far): {}",
                     opts.slot, n, r.error().describe());
      continue;
    }
    last_heard = clock_type::now();
    silence_limit = silence_base;
    heard_once = true;
    handle(env, zone);
  }

  // -- shut down: every thread joined, nothing left held, bye ----------------------------------
  {
    std::lock_guard lock(mu);
    draining = true;
  }
  cv.notify_all();
  if (claimer.joinable())
    claimer.join();
  if (sweeper.joinable())
    sweeper.join();
  if (setup.joinable())
    setup.join();
  for (auto& l : lanes)
    if (l->thread.joinable())
      l->thread.join();
  stop_completer(); // every done record written before anything is released
  std::deque<lease_keeper::handle> left;
  {
    std::lock_guard lock(mu);
    left.swap(ready);
  }
  for (auto& h : left)
    release_uncounted(h, "draining");
  if (auto n = keeper->release_all(); n > 0) {
    add(released, n);
    spdlog::info("worker {}: released {} record(s) still held", opts.slot, n);
  }
  keeper->stop();
  update_rate(clock_type::now());
  const auto st = stats();
  if (sock) {
    bye b;
    b.reason = fatal ? "job broken: " + fatal->message : drain_reason;
    b.released = st.released;
    b.done = st.done;
    send(*sock, b);
    sock.reset(); // linger delivers the bye (up to 1 s)
  }
  const double secs = duration<double>(clock_type::now() - started).count();
  spdlog::info("worker {}: exiting after {:.1f} s: {} done, {} failed ({} dead), {} released, "
               "{} lease lost, {} claimed, {} contention, {} malformed frame(s)",
               opts.slot, secs, st.done, st.failed, st.dead, st.released, st.lease_lost, st.claimed,
               st.contention, st.malformed);
  if (fatal)
    return std::unexpected(*fatal);
  return st;
}

// -- worker --------------------------------------------------------------------------------------

worker::worker(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

worker::~worker() {
  // run() joins every thread before returning; a worker destroyed without run() has none.
  if (impl_) {
    {
      std::lock_guard lock(impl_->mu);
      impl_->draining = true;
    }
    impl_->cv.notify_all();
    if (impl_->claimer.joinable())
      impl_->claimer.join();
    if (impl_->sweeper.joinable())
      impl_->sweeper.join();
    if (impl_->setup.joinable())
      impl_->setup.join();
    for (auto& l : impl_->lanes)
      if (l->thread.joinable())
        l->thread.join();
    impl_->stop_completer();
  }
}

result<std::unique_ptr<worker>> worker::make(work_table table, worker_options opts) {
  if (opts.slot.empty() || opts.slot.size() > 64)
    return fail(errc::invalid_argument, "worker: the slot name must be 1 to 64 bytes");
  for (char c : opts.slot)
    if (c == '/' || c == '@' || static_cast<unsigned char>(c) < 0x20)
      return fail(errc::invalid_argument, "worker: the slot name must not hold '/', '@' or control characters");
  if (!opts.supervisor.empty())
    if (auto e = transport::endpoint::parse(opts.supervisor, transport::endpoint_use::connect); !e)
      return fail(errc::invalid_argument, "worker: --supervisor: " + e.error().describe());
  if (auto v = validate(opts.cfg); !v)
    return std::unexpected(v.error());
  if (!opts.factory)
    return fail(errc::invalid_argument, "worker: unknown job '" + opts.cfg.worker.job + "' (exec, etl, noop or sleep:MS)");
  auto p = std::make_unique<impl>(worker_options{}, table);
  p->queue = worker_queue(opts.cfg);
  p->host = !opts.host.empty() ? opts.host : !opts.cfg.fleet.host.empty() ? opts.cfg.fleet.host : local_host_name();
  if (opts.pid == 0)
    opts.pid = static_cast<long>(::getpid());
  p->owner = worker_owner(p->host, opts.slot, opts.pid);
  p->address = "worker@" + opts.slot + "@" + p->host;
  if (p->address.size() > 256)
    return fail(errc::invalid_argument, "worker: host name too long");
  p->all_shards.resize(opts.cfg.work.shards);
  std::iota(p->all_shards.begin(), p->all_shards.end(), 0u);
  for (std::uint32_t i = 0; i < opts.cfg.worker.concurrency; ++i) {
    auto j = opts.factory(opts.cfg);
    if (!j)
      return std::unexpected(j.error());
    auto l = std::make_unique<lane>();
    l->job = std::move(*j);
    p->lanes.push_back(std::move(l));
  }
  p->max_batch = std::clamp<std::size_t>(p->lanes.front()->job->max_batch(), 1, opts.cfg.work.claim_batch);
  p->contention_base = table.counters().contention.load(std::memory_order_relaxed);
  lease_keeper_options ko;
  ko.renew_interval = milliseconds(opts.cfg.work.lease_renew_ms);
  p->opts = std::move(opts);
  impl* raw = p.get();
  p->keeper = std::make_unique<lease_keeper>(
      table, ko, [raw](const claimed_record& r, const error& e) { raw->on_lost(r, e); });
  return std::unique_ptr<worker>(new worker(std::move(p)));
}

result<worker_stats> worker::run() { return impl_->run(); }

void worker::drain(milliseconds deadline, std::string reason) {
  impl_->drain(deadline, std::move(reason));
}

worker_stats worker::stats() const { return impl_->stats(); }
const std::string& worker::owner() const noexcept { return impl_->owner; }
const std::string& worker::queue() const noexcept { return impl_->queue; }

} // namespace shoal::workers::fleet
