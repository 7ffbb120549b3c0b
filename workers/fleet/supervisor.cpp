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
namespace {

using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::uint64_t unix_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

std::int64_t ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration_cast<milliseconds>(b - a).count();
}

restart_policy_options policy_options(const fleet_config& f) {
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

} // namespace

// -- free functions -----------------------------------------------------------------------------

std::string default_endpoint(const std::string& host) {
  std::string dir = "/tmp";
  if (const char* d = std::getenv("XDG_RUNTIME_DIR"); d && *d)
    dir = d;
  return "ipc://" + dir + "/shoal-" + host + ".sock";
}

std::string resolve_host(const config& cfg) {
  if (!cfg.fleet.host.empty())
    return cfg.fleet.host;
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0])
    return "localhost";
  return buf;
}

std::uint32_t resolve_worker_count(const config& cfg) {
  if (cfg.fleet.workers)
    return cfg.fleet.workers;
  auto cores = std::thread::hardware_concurrency();
  return 2 * (cores ? cores : 1);
}

std::string resolve_worker_queue(const config& cfg) {
  if (!cfg.worker.queue.empty())
    return cfg.worker.queue;
  return cfg.worker.job == "etl" ? cfg.etl.queue : std::string("exec");
}

std::vector<std::vector<std::uint32_t>> split_shards(const std::vector<std::uint32_t>& host_shards,
                                                     std::size_t workers) {
  std::vector<std::vector<std::uint32_t>> out(workers);
  if (workers == 0 || host_shards.empty())
    return out;
  if (host_shards.size() >= workers) {
    for (std::size_t i = 0; i < host_shards.size(); ++i)
      out[i % workers].push_back(host_shards[i]);
  } else {
    for (std::size_t w = 0; w < workers; ++w)
      out[w].push_back(host_shards[w % host_shards.size()]);
  }
  return out;
}

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
    e.ts_ns = unix_ns();
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

  std::vector<std::string> worker_argv(const slot& s) const {
    std::vector<std::string> argv = opts.worker_command;
    if (argv.empty())
      argv = {self_executable().string(), "worker"};
    // --supervisor-pid: the worker drains and exits once we are no longer its parent (we died),
    // instead of running on unsupervised beside the workers of a supervisor started after us.
    argv.insert(argv.end(), {"--slot", s.name, "--supervisor", endpoint, "--supervisor-pid", std::to_string(::getpid())});
    if (work_table_exists)
      argv.push_back("--work-table-exists");
    // Started before we join the fleet (make), or restarted later: either way no shard before
    // our ctl.assign says which.
    argv.push_back("--await-assign");
    argv.insert(argv.end(), opts.worker_args.begin(), opts.worker_args.end());
    return argv;
  }

  // A worker's environment: the supervisor's, plus the storage it uses. The connection string
  // (an account key or SAS) goes here, never into argv, which every local user can read in
  // /proc/PID/cmdline; the file key is cleared so the worker does not see two.
  std::vector<std::pair<std::string, std::string>> worker_env() const {
    return {{"SHOAL_STORAGE_CONNECTION_STRING", cfg.storage.connection_string},
            {"SHOAL_STORAGE_CONNECTION_STRING_FILE", ""}};
  }

  void spawn(slot& s) {
    child_options co;
    co.argv = worker_argv(s);
    co.env = worker_env();
    co.new_process_group = true;
    auto c = child_process::spawn(co);
    const auto now = steady::now();
    if (!c) {
      spdlog::error("supervisor: cannot start worker {}: {}", s.name, c.error().describe());
      schedule_restart(s, now);
      return;
    }
    s.pid = c->pid();
    s.proc.emplace(*std::move(c));
    s.ph = phase::running;
    s.spawned = s.last_seen = now;
    s.hello = s.bye = s.drain_sent = s.killed = false;
    s.backed_off = false;
    s.owner.clear();
    s.hb = heartbeat{};
    s.counted = heartbeat{};
    s.sent_epoch = 0;
    if (s.starts++ > 0) {
      ++s.restarts;
      if (metrics)
        metrics->add(fleet_counter::restarts);
    }
    spdlog::info("supervisor: started worker {} (pid {})", s.name, s.pid);
  }

  void schedule_restart(slot& s, steady::time_point now) {
    const auto delay = s.policy.on_exit(now);
    s.ph = phase::waiting;
    s.next_start = now + delay;
    const bool was = s.backed_off;
    s.backed_off = s.policy.backed_off();
    if (s.backed_off && !was && metrics)
      metrics->add(fleet_counter::restart_intensity_exceeded);
    if (s.backed_off)
      spdlog::warn("supervisor: worker {} restarted {} times within {} ms; backing off {} ms", s.name,
                   cfg.fleet.restart_intensity, cfg.fleet.restart_period_ms, delay.count());
    if (was != s.backed_off)
      reassign();
  }

  // A worker process ended with `status` (exit code, or 128 + signal).
  void on_exit(slot& s, int status) {
    const auto now = steady::now();
    const bool clean = s.bye && status == 0;
    if (clean)
      spdlog::info("supervisor: worker {} (pid {}) exited cleanly", s.name, s.pid);
    else
      spdlog::warn("supervisor: worker {} (pid {}) {} {}", s.name, s.pid,
                   status > 128 ? "killed by signal" : "exited with status",
                   status > 128 ? status - 128 : status);
    // Whatever the worker left behind in its process group (an exec job's shell) goes too:
    // its records are about to be released and run by someone else.
    if (s.pid > 0)
      ::kill(-s.pid, SIGKILL);
    if (!clean) {
      const std::string owner = s.owner.empty() ? worker_owner(host, s.name, s.pid) : s.owner;
      release->push(slot_queue(s), owner);
    }
    s.proc.reset();
    s.pid = 0;
    s.hello = false;
    if (draining || s.retiring) {
      s.ph = phase::stopped;
      return;
    }
    schedule_restart(s, now);
  }


  void kill_hung(slot& s, steady::time_point now) {
    spdlog::warn("supervisor: worker {} (pid {}) silent for {} ms ({} heartbeats missed); killing it",
                 s.name, s.pid, ms_between(s.last_seen, now), cfg.fleet.heartbeat_liveness);
    if (metrics)
      metrics->add(fleet_counter::missed_heartbeats);
    s.proc->signal(SIGKILL);
    s.killed = true;
  }

  void begin_drain(slot& s, const std::string& reason) {
    if (!s.proc || s.drain_sent)
      return;
    s.drain_sent = true;
    if (s.hello) {
      drain d;
      // Leave the worker time to release what it holds before our own deadline kills it.
      d.deadline_ms = std::min(cfg.worker.drain_timeout_ms, cfg.fleet.drain_timeout_ms * 3 / 4);
      d.reason = reason;
      send_to(s, d);
    } else {
      s.proc->signal(SIGTERM); // not connected yet: a worker drains on SIGTERM too
    }
  }

  // -- shard assignment -------------------------------------------------------------------------

  // The slots that share this host's shards: running or about to restart, not draining.
  std::vector<slot*> sharing_slots() {
    std::vector<slot*> out;
    for (auto& [i, s] : slots)
      if (!s.retiring && !s.drain_sent && s.ph != phase::stopped && !(s.ph == phase::waiting && s.backed_off))
        out.push_back(&s);
    return out;
  }

  void reassign(bool force = false) {
    auto sharing = sharing_slots();
    auto parts = split_shards(assignment.shards, sharing.size());
    bool changed = force;
    for (std::size_t i = 0; i < sharing.size(); ++i)
      if (sharing[i]->shards != parts[i] || sharing[i]->epoch == 0) {
        changed = true;
        break;
      }
    if (!changed)
      return;
    ++epoch;
    for (std::size_t i = 0; i < sharing.size(); ++i) {
      sharing[i]->shards = parts[i];
      sharing[i]->epoch = epoch;
      send_assign(*sharing[i]);
    }
  }

  void send_assign(slot& s) {
    // Not before the fleet's first assignment: until then an empty list would read "every
    // shard", and the workers started while we join wait for their share instead.
    if (!s.hello || s.sent_epoch == s.epoch || s.epoch == 0 || !assigned_by_fleet)
      return;
    assign a;
    a.epoch = s.epoch;
    a.queue = slot_queue(s);
    a.shards = s.shards;
    // An empty host assignment from the coordinator means "no shard", not "every shard".
    a.none = assigned_by_fleet && assignment.shards.empty();
    send_to(s, a);
    s.sent_epoch = s.epoch;
  }

  void wake(const work_available& w) {
    for (auto& [i, s] : slots) {
      if (!s.hello || s.drain_sent || slot_queue(s) != w.queue)
        continue;
      if (w.shard >= 0 && !s.shards.empty() &&
          std::find(s.shards.begin(), s.shards.end(), static_cast<std::uint32_t>(w.shard)) == s.shards.end())
        continue;
      send_to(s, w);
    }
  }

  void apply_hooks() {
    std::optional<host_assignment> a;
    std::vector<work_available> w;
    {
      std::lock_guard lock(hook_mu);
      a.swap(pending_assignment);
      w.swap(pending_wakeups);
    }
    if (a && a->epoch >= assignment.epoch) {
      assignment = *a;
      const bool first = !std::exchange(assigned_by_fleet, true);
      reassign(first); // the first one goes out even if the split looks unchanged
    }
    for (const auto& x : w)
      wake(x);
  }

  // -- messages ---------------------------------------------------------------------------------

  slot* find_slot(std::span<const std::uint8_t> route) {
    std::string_view id(reinterpret_cast<const char*>(route.data()), route.size());
    for (auto& [i, s] : slots)
      if (s.name == id)
        return &s;
    return nullptr;
  }

  void on_message(const transport::envelope& e, const std::vector<std::uint8_t>& route) {
    const auto now = steady::now();
    if (e.kind == status_request::kind) {
      status_reply r;
      r.json = to_json(snapshot());
      send_to(route, r, e.id);
      return;
    }
    slot* s = find_slot(route);
    if (!s || !s->proc) {
      spdlog::debug("supervisor: {} from an unknown or stopped peer ignored", e.kind);
      return;
    }
    s->last_seen = now;
    if (e.kind == hello::kind) {
      auto h = actors::decode_body<hello>(e.body, zone);
      if (!h) {
        spdlog::warn("supervisor: bad ctl.hello from {}: {}", s->name, h.error().message);
        return;
      }
      if (h->pid != s->pid)
        spdlog::warn("supervisor: ctl.hello of {} names pid {}, the process is {}", s->name, h->pid, s->pid);
      s->hello = true;
      s->owner = h->owner.empty() ? worker_owner(host, s->name, s->pid) : h->owner;
      if (!h->queue.empty())
        s->queue = h->queue;
      s->sent_epoch = 0;
      spdlog::info("supervisor: worker {} (pid {}) joined: job {}, queue '{}'", s->name, s->pid, h->job,
                   slot_queue(*s));
      if (counts)
        counts->want({slot_queue(*s)});
      if (s->epoch == 0)
        reassign();
      send_assign(*s);
      if (draining || s->retiring) { // joined after the drain started
        s->drain_sent = false;
        begin_drain(*s, draining ? "supervisor stopping" : "fleet shrunk");
      }
    } else if (e.kind == heartbeat::kind) {
      auto h = actors::decode_body<heartbeat>(e.body, zone);
      if (!h)
        return;
      s->hb = *h;
      count_heartbeat(*s);
    } else if (e.kind == bye::kind) {
      s->bye = true;
      if (auto b = actors::decode_body<bye>(e.body, zone))
        spdlog::info("supervisor: worker {} says bye ({}; {} done, {} released)", s->name, b->reason, b->done,
                     b->released);
    }
  }

  // A persistor committed a blob: its ETL record (id = blob name) is claimable now. Tell the
  // host that owns its shard (this one included) instead of waiting for the table poll.
  void on_committed(const transport::envelope& e) {
    if (e.kind != "persist.committed" || !members)
      return;
    try {
      auto j = nlohmann::json::parse(e.body.begin(), e.body.end());
      const auto blob = j.value("blob", std::string());
      if (blob.empty())
        return;
      members->announce_work(cfg.etl.queue, static_cast<std::int32_t>(shard_of(blob, cfg.work.shards)), 1);
      if (metrics) {
        metrics->add(fleet_counter::persisted_blobs);
        metrics->add(fleet_counter::persisted_records, j.value("record_count", std::uint64_t{0}));
        metrics->add(fleet_counter::persisted_bytes, j.value("bytes", std::uint64_t{0}));
      }
    } catch (const std::exception& ex) {
      spdlog::debug("supervisor: bad persist.committed body: {}", ex.what());
    }
  }

  // Adds what a worker's totals grew by since its last heartbeat.
  void count_heartbeat(slot& s) {
    if (!metrics)
      return;
    auto grow = [&](std::uint64_t now, std::uint64_t& was, fleet_counter c) {
      const std::uint64_t added = now > was ? now - was : 0;
      if (added)
        metrics->add(c, added);
      was = std::max(was, now);
      return added;
    };
    grow(s.hb.claimed, s.counted.claimed, fleet_counter::claims);
    const auto done = grow(s.hb.done, s.counted.done, fleet_counter::completions);
    const auto failed = grow(s.hb.failed, s.counted.failed, fleet_counter::failures);
    metrics->add_queue(slot_queue(s), done, failed);
    grow(s.hb.contention, s.counted.contention, fleet_counter::contention);
    grow(s.hb.lease_lost, s.counted.lease_lost, fleet_counter::lease_lost);
  }

  // -- status -----------------------------------------------------------------------------------

  std::string slot_state(const slot& s) const {
    switch (s.ph) {
    case phase::stopped: return "stopped";
    case phase::waiting: return s.backed_off ? "backoff" : "restarting";
    case phase::running: break;
    }
    if (!s.hello)
      return "starting";
    if (s.drain_sent)
      return "draining";
    return std::string(to_string(static_cast<worker_state>(std::min<std::uint8_t>(s.hb.state, 3))));
  }

  std::set<std::string> queues() const {
    std::set<std::string> q{resolve_worker_queue(cfg)};
    for (const auto& [i, s] : slots)
      if (!s.queue.empty())
        q.insert(s.queue);
    return q;
  }

  fleet_status snapshot() {
    const auto now = steady::now();
    fleet_status st;
    st.host = host;
    st.pid = ::getpid();
    st.endpoint = endpoint;
    st.uptime_ms = ms_between(started, now);
    st.state = draining ? "draining" : "running";
    st.coordinator = members && members->is_coordinator();
    st.workers_wanted = wanted;
    st.assignment = assignment;
    if (members)
      st.hosts = members->hosts();
    for (const auto& [i, s] : slots) {
      worker_status w;
      w.slot = s.name;
      w.pid = s.pid;
      w.state = slot_state(s);
      w.queue = slot_queue(s);
      if (s.proc) {
        w.current = s.hb.current;
        w.in_flight = s.hb.in_flight;
        w.done = s.hb.done;
        w.failed = s.hb.failed;
        w.claimed = s.hb.claimed;
        w.contention = s.hb.contention;
        w.lease_lost = s.hb.lease_lost;
        w.rate_per_s = s.hb.rate_per_s;
        w.last_heartbeat_ms_ago = s.hello ? ms_between(s.last_seen, now) : -1;
      }
      w.restarts = s.restarts;
      w.shards = s.shards;
      w.assign_epoch = s.epoch;
      st.workers.push_back(std::move(w));
    }
    if (counts)
      st.queues = counts->get(queues());
    return st;
  }

  void update_gauges() {
    if (!metrics)
      return;
    std::map<std::string, std::uint64_t> by_state;
    for (const char* k : {"starting", "idle", "working", "draining", "restarting", "backoff", "stopped"})
      by_state[k] = 0;
    for (const auto& [i, s] : slots)
      ++by_state[slot_state(s)];
    metrics->set_workers(by_state);
    metrics->set_coordinator(members && members->is_coordinator());
    const auto drops = router->stats().dropped_hwm.load(std::memory_order_relaxed);
    if (drops > hwm_counted) {
      metrics->add(fleet_counter::hwm_drops, drops - hwm_counted);
      hwm_counted = drops;
    }
  }

  // -- slots, N and reload ----------------------------------------------------------------------

  void resize(std::uint32_t n) {
    wanted = n;
    std::uint32_t active = 0;
    for (auto& [i, s] : slots)
      if (!s.retiring)
        ++active;
    // Grow: the lowest free indices.
    for (std::uint32_t i = 0; active < n; ++i) {
      if (slots.contains(i))
        continue;
      slot s;
      s.index = i;
      s.name = "w" + std::to_string(i);
      s.policy = restart_policy(policy_options(cfg.fleet));
      s.next_start = steady::now();
      slots.emplace(i, std::move(s));
      ++active;
    }
    // Shrink: retire the highest indices (drained; not restarted).
    for (auto it = slots.rbegin(); it != slots.rend() && active > n; ++it) {
      if (it->second.retiring)
        continue;
      it->second.retiring = true;
      --active;
      begin_drain(it->second, "fleet shrunk");
      if (!it->second.proc)
        it->second.ph = phase::stopped;
    }
    reassign();
    if (members)
      members->set_local_workers(n);
  }

  void reload() {
    if (!opts.reload) {
      spdlog::warn("supervisor: SIGHUP: no configuration file to reload");
      return;
    }
    auto c = opts.reload();
    if (!c) {
      spdlog::error("supervisor: SIGHUP: configuration not reloaded: {}", c.error().describe());
      return;
    }
    cfg = *std::move(c);
    for (auto& [i, s] : slots)
      s.policy.set_options(policy_options(cfg.fleet));
    const auto n = resolve_worker_count(cfg);
    spdlog::info("supervisor: configuration reloaded; {} worker(s) (was {})", n, wanted);
    resize(n);
  }

  void begin_stop() {
    if (draining) {
      spdlog::warn("supervisor: second stop request: killing the workers now");
      for (auto& [i, s] : slots)
        if (s.proc) {
          s.proc->signal(SIGKILL);
          s.killed = true;
        }
      return;
    }
    draining = true;
    drain_deadline = steady::now() + milliseconds(cfg.fleet.drain_timeout_ms);
    spdlog::info("supervisor: stopping: draining {} worker(s), at most {} ms", slots.size(),
                 cfg.fleet.drain_timeout_ms);
    // Hand this host's shards to the others now, not after the drain (which releases every
    // record claimed ahead, one by one): a host weighing 0 workers gets no shard (assignment.hpp).
    if (members)
      members->set_local_workers(0);
    for (auto& [i, s] : slots) {
      if (s.proc)
        begin_drain(s, "supervisor stopping");
      else
        s.ph = phase::stopped;
    }
  }

  // -- the loop ---------------------------------------------------------------------------------

  int run() {
    resize(resolve_worker_count(cfg));
    transport::envelope in;
    std::vector<std::uint8_t> route;
    int seen_stops = 0;
    for (;;) {
      if (int n = stop_requests.load(); n > seen_stops) {
        seen_stops = n;
        begin_stop();
      }
      if (reload_requested.exchange(false) && !draining)
        reload();
      apply_hooks();

      // Messages: wait up to 20 ms for the first, then take what is queued.
      for (int k = 0; k < 256; ++k) {
        auto r = router->receive(in, k == 0 ? milliseconds(20) : milliseconds(0), &route);
        if (!r)
          break;
        on_message(in, route);
      }

      if (committed)
        for (int k = 0; k < 256; ++k) {
          auto r = committed->receive(in, milliseconds(0));
          if (!r)
            break;
          on_committed(in);
        }

      const auto now = steady::now();
      for (auto& [i, s] : slots) {
        if (s.proc) {
          if (auto st = s.proc->wait(milliseconds(0))) {
            on_exit(s, *st);
            continue;
          }
          const auto silent = now - s.last_seen;
          // While we stop, a worker told to drain answers to the drain deadline below, not to
          // the liveness window: it may be releasing hundreds of claimed-ahead records, and a
          // kill -9 then would only turn its releases into lease expiries (OTP's shutdown
          // timeout works the same way).
          const bool stopping_drain = draining && s.drain_sent;
          if (!s.killed && !stopping_drain && (s.hello ? silent > liveness_window() : silent > startup_window()))
            kill_hung(s, now);
          if (draining && !s.killed && now >= drain_deadline) {
            spdlog::warn("supervisor: worker {} (pid {}) did not drain in {} ms; killing it", s.name, s.pid,
                         cfg.fleet.drain_timeout_ms);
            s.proc->signal(SIGKILL);
            s.killed = true;
          }
        } else if (s.ph == phase::waiting && !draining && !s.retiring && now >= s.next_start) {
          const bool was = s.backed_off;
          spawn(s);
          if (was)
            reassign();
        }
      }
      // Retired slots that ended are forgotten.
      std::erase_if(slots, [](const auto& kv) { return kv.second.retiring && !kv.second.proc; });

      if (web && web->feed().wanted()) // a dashboard page waits for the fleet view
        web->feed().publish(snapshot());

      if (now - last_heartbeat_sent >= heartbeat_interval()) {
        last_heartbeat_sent = now;
        for (auto& [i, s] : slots)
          if (s.hello && s.proc)
            send_to(s, heartbeat{});
        update_gauges();
      }

      if (draining && std::none_of(slots.begin(), slots.end(), [](const auto& kv) { return kv.second.proc.has_value(); }))
        break;
    }
    update_gauges();
    // Every worker is gone; what the unclean ones held must be released before we exit.
    const bool idle = release->wait_idle(milliseconds(std::max<std::uint32_t>(cfg.storage.request_timeout_ms, 10'000)));
    if (members)
      members->stop();
    if (!idle || release->any_failed()) {
      spdlog::error("supervisor: stopped, but some claims could not be released (their leases will expire)");
      return 1;
    }
    spdlog::info("supervisor: stopped; every worker drained");
    return 0;
  }
};

// -- supervisor ---------------------------------------------------------------------------------

supervisor::supervisor(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

supervisor::~supervisor() {
  if (impl_ && impl_->members)
    impl_->members->stop();
}

result<std::unique_ptr<supervisor>> supervisor::make(supervisor_options opts) {
  auto m = std::make_unique<impl>();
  m->cfg = opts.cfg;
  m->opts = std::move(opts);
  m->host = resolve_host(m->cfg);
  m->address = "supervisor@" + std::to_string(::getpid()) + "@" + m->host;

  transport::socket_options so;
  so.router_mandatory = true;
  so.linger = milliseconds(0);
  auto r = transport::envelope_socket::make(m->ctx, zmq::socket_type::router, so);
  if (!r)
    return fail(errc::io, "supervisor: ROUTER: " + r.error().message);
  m->router.emplace(*std::move(r));
  try {
    // A restarted worker reconnects with its slot's routing id before libzmq may have noticed
    // the old connection is gone: the new connection takes the id over.
    m->router->raw().set(zmq::sockopt::router_handover, 1);
  } catch (const zmq::error_t& e) {
    return fail(errc::io, std::string("supervisor: ZMQ_ROUTER_HANDOVER: ") + e.what());
  }
  const std::string ep = m->cfg.fleet.endpoint.empty() ? default_endpoint(m->host) : m->cfg.fleet.endpoint;
  if (auto b = m->router->bind(ep); !b)
    return fail(b.error().code == transport::errc::invalid_argument ? errc::invalid_argument : errc::io,
                "supervisor: cannot bind " + ep + ": " + b.error().message);
  m->endpoint = m->router->last_endpoint().empty() ? ep : m->router->last_endpoint();

  if (!m->cfg.persistor.committed_endpoint.empty()) {
    transport::socket_options cso;
    cso.linger = milliseconds(0);
    auto sub = transport::envelope_socket::make(m->ctx, zmq::socket_type::sub, cso);
    if (!sub)
      return fail(errc::io, "supervisor: SUB: " + sub.error().message);
    if (auto c = sub->connect(m->cfg.persistor.committed_endpoint); !c)
      return fail(errc::invalid_argument, "supervisor: persistor.committed_endpoint " +
                                              m->cfg.persistor.committed_endpoint + ": " + c.error().message);
    m->committed.emplace(*std::move(sub));
  }

  if (m->cfg.fleet.metrics_port) {
    auto mx = fleet_metrics::serve(m->cfg.fleet.metrics_address, static_cast<std::uint16_t>(m->cfg.fleet.metrics_port));
    if (!mx)
      return std::unexpected(mx.error());
    m->metrics = *std::move(mx);
  }

  // Storage: the work table, to release dead workers' claims and count records.
  std::optional<storage::pipeline> web_pipe; // the dashboard reads through the same pipeline
  std::future<result<void>> table_created;   // the work table's create-if-missing, in flight
  if (auto account = storage::parse_connection_string(m->cfg.storage.connection_string); !account) {
    spdlog::warn("supervisor: storage: {}; claims of dead workers will wait for their leases",
                 account.error().describe());
  } else {
    storage::pipeline_options po;
    po.http.request_timeout = milliseconds(m->cfg.storage.request_timeout_ms);
    po.http.connect_timeout = milliseconds(m->cfg.storage.connect_timeout_ms);
    po.http.ca_file = m->cfg.storage.ca_file;
    po.retry.max_attempts = static_cast<int>(m->cfg.storage.max_attempts);
    auto pipe = storage::pipeline::make(*account, po);
    if (!pipe)
      return fail(errc::storage, "supervisor: storage: " + pipe.error().describe());
    web_pipe = *pipe;
    auto t = storage::table_client::make(*pipe, m->cfg.work.table);
    if (!t)
      return fail(errc::storage, "supervisor: work table: " + t.error().describe());
    work_table_options wo;
    wo.work = m->cfg.work;
    auto w = work_table::make(*t, storage::blob_client(*pipe), wo);
    if (!w)
      return std::unexpected(w.error());
    // The workers' table, made here beside the fleet set-up below (its own table, ZAP, joining
    // the coordinator) and the first workers' start; awaited in make(). Workers started after
    // it succeeded skip even their check (--work-table-exists); the first ones, and all when it
    // fails, make the table themselves if their first clock read finds none.
    table_created = std::async(std::launch::async, [t = *w] { return t.create_if_missing(); });
    m->table.emplace(*std::move(w));
  }
  impl* self = m.get();
  m->release = std::make_unique<releaser>(m->table, [self](const std::string& queue, std::size_t n) {
    std::lock_guard lock(self->hook_mu); // applied by the event loop (apply_hooks)
    self->pending_wakeups.push_back(
        work_available{queue, -1, static_cast<std::uint32_t>(std::min<std::size_t>(n, UINT32_MAX))});
  });
  m->counts = std::make_unique<counts_cache>(m->table, m->metrics.get(), m->metrics != nullptr);
  m->counts->want({resolve_worker_queue(m->cfg)});

  // The dashboard ([web] port, started by opts.dashboard) and the queue readings it and the
  // shoal_queue_oldest_pending_age_seconds gauge share.
  if (m->table && (m->metrics || m->cfg.web.port)) {
    queue_monitor_options qo;
    qo.sample = milliseconds(m->cfg.web.sample_ms);
    qo.queues = {resolve_worker_queue(m->cfg), m->cfg.etl.queue};
    qo.metrics = m->metrics.get();
    m->queue_mon = std::make_unique<queue_monitor>(*m->table, qo);
  }
  if (m->cfg.web.port) {
    if (!m->opts.dashboard)
      return fail(errc::invalid_argument, "supervisor: [web] port is set but no dashboard was given to start");
    dashboard_context wo;
    wo.cfg = m->cfg;
    wo.pipe = web_pipe;
    wo.queues = m->queue_mon.get();
    wo.metrics = m->metrics.get();
    auto d = m->opts.dashboard(std::move(wo));
    if (!d)
      return std::unexpected(d.error());
    m->web = *std::move(d);
  }

  membership_hooks hooks;
  hooks.on_assignment = [self](const host_assignment& a) {
    std::lock_guard lock(self->hook_mu);
    self->pending_assignment = a;
  };
  hooks.on_work_available = [self](const std::string& queue, std::int32_t shard, std::uint32_t count) {
    std::lock_guard lock(self->hook_mu);
    self->pending_wakeups.push_back(work_available{queue, shard, count});
  };
  // Joining the fleet (the fleet table, ZAP, the coordinator's first fleet.assign) takes the
  // longest; the workers start meanwhile (issue 19, a joining host's first claim), beside the
  // work table's creation too: they connect, say hello (read after we joined) and prepare
  // storage (the server clock, the shards' meta rows; the table if their clock read finds
  // none), and claim nothing before their ctl.assign (--await-assign). If joining fails they
  // are killed with the slots: they hold nothing.
  auto joined = std::async(std::launch::async, [&cfg = m->cfg, &host = m->host, hooks = std::move(hooks)]() mutable {
    return make_membership(cfg, host, resolve_worker_count(cfg), std::move(hooks));
  });
  m->resize(resolve_worker_count(m->cfg));
  for (auto& [i, s] : m->slots)
    if (s.ph == phase::waiting)
      m->spawn(s);
  if (table_created.valid()) {
    if (auto c = table_created.get(); !c)
      spdlog::warn("supervisor: work table '{}': {}; the workers will create it", m->cfg.work.table,
                   c.error().describe());
    else
      m->work_table_exists = true; // workers started from now on skip even the check
  }
  auto mem = joined.get();
  if (!mem)
    return std::unexpected(mem.error());
  m->members = *std::move(mem);
  return std::unique_ptr<supervisor>(new supervisor(std::move(m)));
}

int supervisor::run() { return impl_->run(); }

void supervisor::request_stop() noexcept { impl_->stop_requests.fetch_add(1); }

void supervisor::request_reload() noexcept { impl_->reload_requested.store(true); }

std::string supervisor::endpoint() const { return impl_->endpoint; }

std::vector<int> supervisor::metrics_ports() const {
  return impl_->metrics ? impl_->metrics->ports() : std::vector<int>{};
}

std::vector<int> supervisor::web_ports() const { return impl_->web ? impl_->web->ports() : std::vector<int>{}; }

} // namespace shoal::workers::fleet
