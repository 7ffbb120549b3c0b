// The supervisor's messages: ctl.* to and from its workers (ctl_protocol.hpp), shard assignment
// across them, wake-ups, committed notices, heartbeats, and the status snapshot and gauges.
#include "workers/fleet/supervisor_internal.hpp"

namespace shoal::workers::fleet {

// The slots that share this host's shards: running or about to restart, not draining.
std::vector<slot*> supervisor::impl::sharing_slots() {
  std::vector<slot*> out;
  for (auto& [i, s] : slots)
    if (!s.retiring && !s.drain_sent && s.ph != phase::stopped && !(s.ph == phase::waiting && s.backed_off))
      out.push_back(&s);
  return out;
}

void supervisor::impl::reassign(bool force) {
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

void supervisor::impl::send_assign(slot& s) {
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

void supervisor::impl::wake(const work_available& w) {
  for (auto& [i, s] : slots) {
    if (!s.hello || s.drain_sent || slot_queue(s) != w.queue)
      continue;
    if (w.shard >= 0 && !s.shards.empty() &&
        std::find(s.shards.begin(), s.shards.end(), static_cast<std::uint32_t>(w.shard)) == s.shards.end())
      continue;
    send_to(s, w);
  }
}

void supervisor::impl::apply_hooks() {
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

slot* supervisor::impl::find_slot(std::span<const std::uint8_t> route) {
  std::string_view id(reinterpret_cast<const char*>(route.data()), route.size());
  for (auto& [i, s] : slots)
    if (s.name == id)
      return &s;
  return nullptr;
}

void supervisor::impl::on_message(const transport::envelope& e, const std::vector<std::uint8_t>& route) {
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
void supervisor::impl::on_committed(const transport::envelope& e) {
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
void supervisor::impl::count_heartbeat(slot& s) {
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

std::string supervisor::impl::slot_state(const slot& s) const {
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

std::set<std::string> supervisor::impl::queues() const {
  std::set<std::string> q{resolve_worker_queue(cfg)};
  for (const auto& [i, s] : slots)
    if (!s.queue.empty())
      q.insert(s.queue);
  return q;
}

fleet_status supervisor::impl::snapshot() {
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

void supervisor::impl::update_gauges() {
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

} // namespace shoal::workers::fleet
