// The worker: construction (make), its link to the supervisor (heartbeats, ctl.* messages,
// ctl_protocol.hpp), drain and the run loop; worker_records.cpp and worker_claiming.cpp hold the rest.
#include "workers/fleet/worker_internal.hpp"

namespace shoal::workers::fleet {

std::string worker_queue(const config& cfg) {
  if (!cfg.worker.queue.empty())
    return cfg.worker.queue;
  return cfg.worker.job == "etl" ? cfg.etl.queue : std::string("exec");
}

// -- worker::impl: stats, the supervisor link, drain ----------------------------------------------

void worker::impl::add(std::atomic<std::uint64_t>& c, std::uint64_t n) {
  c.fetch_add(n, std::memory_order_relaxed);
}

std::uint32_t worker::impl::in_flight_locked() const {
  std::uint32_t n = static_cast<std::uint32_t>(ready.size());
  for (const auto& l : lanes)
    n += l->busy ? static_cast<std::uint32_t>(l->held.size()) : 0;
  return n;
}

std::size_t worker::impl::waiting_completion() const {
  std::lock_guard lock(cmu);
  return completing.size() + completing_busy;
}

worker_stats worker::impl::stats() const {
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

// What happens to one record after its job ran: done → the completer; failed → fail (retry
// later or dead); release → release uncounted.
void worker::impl::settle(const lease_keeper::handle& h, const claimed_record& rec, job_result r, bool was_lost,
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

// -- control -------------------------------------------------------------------------------
void worker::impl::drain(milliseconds deadline, std::string reason) {
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

transport::envelope worker::impl::make_envelope(std::string_view kind) const {
  transport::envelope e;
  e.id = transport::new_message_id();
  e.kind = std::string(kind);
  e.from = address;
  e.ts_ns = transport::unix_now_ns();
  return e;
}

heartbeat worker::impl::make_heartbeat() {
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

void worker::impl::update_rate(clock_type::time_point now) {
  const auto d = done.load(std::memory_order_relaxed);
  rate_samples.emplace_back(now, d);
  while (rate_samples.size() > 2 && now - rate_samples.front().first > seconds(10))
    rate_samples.pop_front();
  const auto& [t0, d0] = rate_samples.front();
  const double secs = duration<double>(now - t0).count();
  rate.store(secs > 0.5 ? static_cast<double>(d - d0) / secs : 0.0, std::memory_order_relaxed);
}

// Applies one message from the supervisor. Malformed bodies are dropped and counted.
void worker::impl::handle(const transport::envelope& env, msgpack::zone& zone) {
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

result<std::optional<transport::envelope_socket>> worker::impl::connect(zmq::context_t& ctx) {
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
