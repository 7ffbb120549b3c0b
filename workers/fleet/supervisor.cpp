// The supervisor: its free functions, construction (make), reload, stop and the event loop
// (supervisor_children.cpp and supervisor_routing.cpp hold the rest of supervisor::impl).
#include "workers/fleet/supervisor_internal.hpp"

namespace shoal::workers::fleet {

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


// -- supervisor::impl: reload, stop, the event loop ---------------------------------------------

void supervisor::impl::reload() {
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

void supervisor::impl::begin_stop() {
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

int supervisor::impl::run() {
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
