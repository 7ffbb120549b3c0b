#pragma once
// Private to workers/fleet (supervisor.cpp, supervisor_children.cpp, supervisor_routing.cpp): the
// supervisor's state (supervisor::impl), its slots and the background helpers it owns. Not part
// of the fleet's interface; include it from nowhere else.

#include "workers/fleet/supervisor.hpp"

#include "actors/message.hpp"
#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "transport/socket.hpp"
#include "workers/child_process.hpp"
#include "workers/fleet/membership.hpp"
#include "workers/fleet/metrics.hpp"
#include "workers/fleet/ctl_protocol.hpp"
#include "workers/fleet/restart_policy.hpp"
#include "workers/fleet/status.hpp"
#include "workers/claim/key_escape.hpp"
#include "workers/fleet/fleet_feed.hpp"
#include "workers/fleet/queue_monitor.hpp"
#include "workers/claim/work_table.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace shoal::workers::fleet {
namespace supervisor_parts {

using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

inline std::int64_t ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration_cast<milliseconds>(b - a).count();
}

inline restart_policy_options policy_options(const fleet_config& f) {
  restart_policy_options o;
  o.intensity = f.restart_intensity;
  o.period = milliseconds(f.restart_period_ms);
  o.backoff = milliseconds(f.restart_backoff_ms);
  return o;
}

// -- release queue: claims of dead workers go back to pending, off the event loop ---------------

// One thread releasing (queue, owner) pairs in order, so the event loop never blocks on storage.
// `on_released(queue, n)` (from its thread) after n > 0 records went back to pending: the
// supervisor wakes its workers, which would otherwise find them at their next fallback poll (up
// to worker.poll_max_ms later).
class releaser {
public:
  using released_fn = std::function<void(const std::string& queue, std::size_t n)>;
  releaser(std::optional<work_table> table, released_fn on_released)
      : table_(std::move(table)), on_released_(std::move(on_released)), thread_([this] { loop(); }) {}
  ~releaser() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void push(std::string queue, std::string owner) {
    {
      std::lock_guard lock(mu_);
      jobs_.emplace_back(std::move(queue), std::move(owner));
    }
    cv_.notify_all();
  }
  // Waits until every pushed job ran, at most `timeout`. True when all ran.
  bool wait_idle(milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return jobs_.empty() && !busy_; });
  }
  bool any_failed() const { return failed_.load(); }

private:
  void loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty())
        return;
      auto [queue, owner] = jobs_.front();
      jobs_.pop_front();
      busy_ = true;
      lock.unlock();
      run(queue, owner);
      lock.lock();
      busy_ = false;
      cv_.notify_all();
    }
  }
  void run(const std::string& queue, const std::string& owner) {
    if (!table_) {
      spdlog::warn("supervisor: no work table: cannot release the claims of {}", owner);
      failed_ = true;
      return;
    }
    // A few attempts: the storage pipeline retries transient errors itself; this covers a
    // short outage so a dead worker's records do not wait for their leases.
    for (int attempt = 1; attempt <= 3; ++attempt) {
      auto n = table_->release_owner(queue, owner);
      if (n) {
        if (*n) {
          spdlog::info("supervisor: released {} record(s) of queue '{}' held by {}", *n, queue, owner);
          if (on_released_)
            on_released_(queue, *n);
        }
        return;
      }
      spdlog::warn("supervisor: releasing the claims of {} in '{}' failed (attempt {}): {}", owner, queue,
                   attempt, n.error().describe());
      std::this_thread::sleep_for(milliseconds(200 * attempt));
    }
    failed_ = true;
  }

  std::optional<work_table> table_;
  released_fn on_released_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, std::string>> jobs_;
  bool busy_ = false;
  bool stop_ = false;
  std::atomic<bool> failed_{false};
  std::thread thread_;
};

// -- queue counts: work_table::counts, read in the background and cached ------------------------

class counts_cache {
public:
  counts_cache(std::optional<work_table> table, fleet_metrics* metrics, bool always)
      : table_(std::move(table)), metrics_(metrics), always_(always), thread_([this] { loop(); }) {}
  ~counts_cache() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // The counts of `queues` as last read; marks them wanted (refreshed while asked for).
  std::map<std::string, queue_status> get(const std::set<std::string>& queues) {
    std::lock_guard lock(mu_);
    queues_.insert(queues.begin(), queues.end());
    last_demand_ = steady::now();
    cv_.notify_all();
    std::map<std::string, queue_status> out;
    for (const auto& q : queues) {
      auto& v = out[q];
      if (auto it = cache_.find(q); it != cache_.end()) {
        v = it->second.status;
        if (it->second.read != steady::time_point{})
          v.age_ms = ms_between(it->second.read, steady::now());
      }
    }
    return out;
  }
  void want(const std::set<std::string>& queues) {
    std::lock_guard lock(mu_);
    queues_.insert(queues.begin(), queues.end());
  }

private:
  struct entry {
    queue_status status;
    steady::time_point read{};
  };
  void loop() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      // Refresh every second while someone asked in the last 5 s (status) or metrics are on
      // (then every 5 s: a count reads the status column of the whole queue).
      const auto now = steady::now();
      const bool demanded = now - last_demand_ < std::chrono::seconds(5);
      const auto period = demanded ? milliseconds(900) : milliseconds(5000);
      if ((demanded || always_) && now - last_refresh_ >= period && !queues_.empty()) {
        auto queues = queues_;
        lock.unlock();
        std::map<std::string, entry> fresh;
        for (const auto& q : queues) {
          auto& e = fresh[q];
          if (!table_) {
            e.status.error = "no work table";
            continue;
          }
          auto c = table_->counts(q);
          e.read = steady::now();
          if (!c) {
            e.status.error = c.error().describe();
            continue;
          }
          for (const auto& [st, n] : c->by_status)
            e.status.by_status[std::string(to_string(st))] = n;
          for (const char* s : {"pending", "claimed", "done", "dead"})
            e.status.by_status.try_emplace(s, 0);
          e.status.total = c->total;
          if (metrics_)
            metrics_->set_records(q, e.status.by_status);
        }
        lock.lock();
        for (auto& [q, e] : fresh) {
          if (!e.status.error.empty() && cache_.contains(q)) {
            cache_[q].status.error = e.status.error; // keep the last good counts, say why they are old
            continue;
          }
          cache_[q] = std::move(e);
        }
        last_refresh_ = steady::now();
      }
      cv_.wait_for(lock, milliseconds(200));
    }
  }

  std::optional<work_table> table_;
  fleet_metrics* metrics_; // borrowed, may be null
  bool always_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> queues_;
  std::map<std::string, entry> cache_;
  steady::time_point last_demand_{};
  steady::time_point last_refresh_{};
  bool stop_ = false;
  std::thread thread_;
};

// -- slots --------------------------------------------------------------------------------------

enum class phase { waiting, running, stopped };

struct slot {
  std::uint32_t index = 0;
  std::string name;
  phase ph = phase::waiting;
  std::optional<child_process> proc;
  pid_t pid = 0;
  steady::time_point spawned{};
  steady::time_point last_seen{};
  steady::time_point next_start{};
  bool hello = false;
  bool bye = false;
  bool drain_sent = false;
  bool killed = false;       // we sent SIGKILL (hung or drain timeout)
  bool retiring = false;     // SIGHUP shrank N: not restarted
  bool backed_off = false;   // waiting out the restart intensity backoff
  std::string owner;
  std::string queue;
  heartbeat hb;
  heartbeat counted;         // the part of hb already added to the metrics
  restart_policy policy;
  std::uint32_t restarts = 0;
  std::uint32_t starts = 0;
  std::vector<std::uint32_t> shards;
  std::uint64_t epoch = 0;   // epoch of shards
  std::uint64_t sent_epoch = 0;
};


} // namespace supervisor_parts

using namespace supervisor_parts; // the parts are this header's own: private to the supervisor's files

// -- supervisor::impl ---------------------------------------------------------------------------

struct supervisor::impl {
  supervisor_options opts;
  config cfg;
  std::string host;
  std::string endpoint;
  std::string address; // envelope "from"
  zmq::context_t ctx{1};
  std::optional<transport::envelope_socket> router;
  std::optional<transport::envelope_socket> committed; // SUB to persistor.committed_endpoint
  std::unique_ptr<fleet_metrics> metrics;
  std::optional<work_table> table;
  bool work_table_exists = false; // created (or found) at start: the workers skip that round trip

  // Filled by the membership's and the releaser's threads (hooks); applied by the event loop.
  // Declared before both, so it outlives their threads.
  std::mutex hook_mu;
  std::optional<host_assignment> pending_assignment;
  std::vector<work_available> pending_wakeups;

  std::unique_ptr<releaser> release;
  std::unique_ptr<counts_cache> counts;
  std::unique_ptr<membership> members;
  steady::time_point started = steady::now();

  // The dashboard ([web] port) and the queue readings behind it and the queue-age metric.
  // Declared after metrics and table, so they stop before what they borrow.
  std::unique_ptr<queue_monitor> queue_mon;
  std::unique_ptr<supervisor_dashboard> web;

  std::atomic<int> stop_requests{0};
  std::atomic<bool> reload_requested{false};


  host_assignment assignment;
  bool assigned_by_fleet = false; // `assignment` came from the membership (empty = no shard)
  std::uint64_t epoch = 0; // ctl.assign epochs, increasing
  std::uint32_t wanted = 0;
  std::map<std::uint32_t, slot> slots;
  bool draining = false;
  steady::time_point drain_deadline{};
  steady::time_point last_heartbeat_sent{};
  std::uint64_t hwm_counted = 0;
  msgpack::zone zone;

  milliseconds heartbeat_interval() const { return milliseconds(std::max<std::uint32_t>(cfg.fleet.heartbeat_interval_ms, 10)); }
  milliseconds liveness_window() const { return heartbeat_interval() * std::max<std::uint32_t>(cfg.fleet.heartbeat_liveness, 1); }
  // A starting worker connects storage before its first hello may follow; give it longer.
  milliseconds startup_window() const { return std::max(liveness_window(), milliseconds(15'000)); }

  // -- sending ----------------------------------------------------------------------------------

  template <class M> void send_to(std::span<const std::uint8_t> route, const M& m,
                                  std::optional<transport::message_id> corr = std::nullopt) {
    transport::envelope e;
    e.id = transport::new_message_id();
    e.kind = std::string(M::kind);
    e.from = address;
    e.ts_ns = transport::unix_now_ns();
    e.corr = corr;
    actors::encode_body(m, e.body);
    if (auto r = router->send(route, e); !r)
      spdlog::debug("supervisor: {} not sent: {}", M::kind, r.error().message);
  }
  template <class M> void send_to(const slot& s, const M& m) {
    send_to(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.name.data()), s.name.size()), m);
  }

  // -- workers ----------------------------------------------------------------------------------

  std::string slot_queue(const slot& s) const { return s.queue.empty() ? resolve_worker_queue(cfg) : s.queue; }

  std::vector<std::string> worker_argv(const slot& s) const;

  // A worker's environment: the supervisor's, plus the storage it uses. The connection string
  // (an account key or SAS) goes here, never into argv, which every local user can read in
  // /proc/PID/cmdline; the file key is cleared so the worker does not see two.
  std::vector<std::pair<std::string, std::string>> worker_env() const;

  void spawn(slot& s);

  void schedule_restart(slot& s, steady::time_point now);

  // A worker process ended with `status` (exit code, or 128 + signal).
  void on_exit(slot& s, int status);


  void kill_hung(slot& s, steady::time_point now);

  void begin_drain(slot& s, const std::string& reason);

  // -- shard assignment -------------------------------------------------------------------------

  // The slots that share this host's shards: running or about to restart, not draining.
  std::vector<slot*> sharing_slots();

  void reassign(bool force = false);

  void send_assign(slot& s);

  void wake(const work_available& w);

  void apply_hooks();

  // -- messages ---------------------------------------------------------------------------------

  slot* find_slot(std::span<const std::uint8_t> route);

  void on_message(const transport::envelope& e, const std::vector<std::uint8_t>& route);

  // A persistor committed a blob: its ETL record (id = blob name) is claimable now. Tell the
  // host that owns its shard (this one included) instead of waiting for the table poll.
  void on_committed(const transport::envelope& e);

  // Adds what a worker's totals grew by since its last heartbeat.
  void count_heartbeat(slot& s);

  // -- status -----------------------------------------------------------------------------------

  std::string slot_state(const slot& s) const;

  std::set<std::string> queues() const;

  fleet_status snapshot();

  void update_gauges();

  // -- slots, N and reload ----------------------------------------------------------------------

  void resize(std::uint32_t n);

  void reload();

  void begin_stop();

  // -- the loop ---------------------------------------------------------------------------------

  int run();
};

} // namespace shoal::workers::fleet
