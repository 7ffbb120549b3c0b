// The supervisor's workers as children: their command line and environment, spawning, exits,
// restarts within the restart intensity, hung workers, drains and resizing.
#include "workers/fleet/supervisor_internal.hpp"

namespace shoal::workers::fleet {

std::vector<std::string> supervisor::impl::worker_argv(const slot& s) const {
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
std::vector<std::pair<std::string, std::string>> supervisor::impl::worker_env() const {
  return {{"SHOAL_STORAGE_CONNECTION_STRING", cfg.storage.connection_string},
          {"SHOAL_STORAGE_CONNECTION_STRING_FILE", ""}};
}

void supervisor::impl::spawn(slot& s) {
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

void supervisor::impl::schedule_restart(slot& s, steady::time_point now) {
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
void supervisor::impl::on_exit(slot& s, int status) {
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

void supervisor::impl::kill_hung(slot& s, steady::time_point now) {
  spdlog::warn("supervisor: worker {} (pid {}) silent for {} ms ({} heartbeats missed); killing it",
               s.name, s.pid, ms_between(s.last_seen, now), cfg.fleet.heartbeat_liveness);
  if (metrics)
    metrics->add(fleet_counter::missed_heartbeats);
  s.proc->signal(SIGKILL);
  s.killed = true;
}

void supervisor::impl::begin_drain(slot& s, const std::string& reason) {
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

void supervisor::impl::resize(std::uint32_t n) {
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

} // namespace shoal::workers::fleet
