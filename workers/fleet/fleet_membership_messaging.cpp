// A host's fleet membership, its messaging thread: joins, heartbeats and assignments over the
// coordinator's ROUTER and the members' DEALERs, rebalancing when hosts come and go.
#include "workers/fleet/fleet_membership_internal.hpp"

namespace shoal::workers::fleet::detail {

// -- messaging thread ----------------------------------------------------------------------------

fleet_join fleet_membership::my_join() const {
  fleet_join j;
  j.host = host_;
  j.instance = instance_;
  j.endpoint = advertised_;
  j.public_key = keys_ ? keys_->public_key : std::string();
  j.workers = workers();
  std::lock_guard lock(mu_);
  j.epoch = assignment_.epoch;
  j.shards = assignment_.shards;
  j.version = std::string(version());
  return j;
}

void fleet_membership::set_assignment(host_assignment a) {
  {
    std::lock_guard lock(mu_);
    if (assigned_once_ && a.epoch == assignment_.epoch && a.shards == assignment_.shards &&
        a.coordinator == assignment_.coordinator)
      return;
    assignment_ = a;
    assigned_once_ = true;
  }
  spdlog::info("fleet {}: assignment epoch {} from '{}': {} shards", host_, a.epoch, a.coordinator, a.shards.size());
  if (hooks_.on_assignment) hooks_.on_assignment(a);
  {
    std::lock_guard lock(start_mu_);
    if (start_ == start_state::pending) start_ = start_state::assigned;
  }
  start_cv_.notify_all();
}

void fleet_membership::update_view() {
  std::vector<host_view> v;
  auto now = steady::now();
  auto mine = [&](const std::string& h) {
    auto it = current_.find(h);
    return it == current_.end() ? std::vector<std::uint32_t>() : it->second;
  };
  v.push_back(host_view{host_, advertised_, workers(), mine(host_), true, 0});
  for (const auto& [name, m] : members_)
    v.push_back(host_view{name, m.endpoint, m.workers, mine(name), false,
                          std::max<std::int64_t>(0, std::chrono::duration_cast<milliseconds>(now - m.last_seen).count())});
  std::lock_guard lock(mu_);
  view_ = std::move(v);
}

void fleet_membership::rebalance(bool force) {
  std::vector<assignment_host> hosts{{host_, workers()}};
  for (const auto& [name, m] : members_) hosts.push_back({name, m.workers});
  // Previous owners: the current map, plus what joining members say they hold (so a new
  // coordinator leaves shards where they are).
  shard_map prev = current_;
  std::vector<bool> taken(cfg_.work.shards, false);
  for (const auto& [h, l] : prev)
    for (auto s : l)
      if (s < taken.size()) taken[s] = true;
  for (const auto& [name, m] : members_) {
    if (prev.contains(name)) continue;
    auto& l = prev[name];
    for (auto s : m.reported)
      if (s < taken.size() && !taken[s]) {
        l.push_back(s);
        taken[s] = true;
      }
  }
  auto next = assign_shards(cfg_.work.shards, hosts, prev);
  if (!force && next == current_) return;
  note_fleet_shape(hosts, next);
  current_ = std::move(next);
  ++change_;
  std::uint64_t epoch = (lease_epoch_ << 32) | change_;
  host_assignment a;
  a.epoch = epoch;
  a.coordinator = host_;
  a.shards = current_[host_];
  set_assignment(std::move(a));
  update_view();
  for (const auto& [name, m] : members_) send_assign(name);
  last_assign_sent_ = steady::now();
}

void fleet_membership::note_fleet_shape(const std::vector<assignment_host>& hosts, const shard_map& next) {
  // A fleet grown past its shards (deploy/SCALING.md "Shards"): a host without a shard sits idle,
  // and workers that share a shard race for its records (412s). Said once per fleet shape.
  std::uint64_t total = 0;
  std::size_t idle = 0;
  for (const auto& h : hosts) {
    total += h.weight;
    auto it = next.find(h.host);
    if (h.weight > 0 && (it == next.end() || it->second.empty())) ++idle;
  }
  const std::string shape = std::to_string(hosts.size()) + "/" + std::to_string(total);
  if (shape == shape_noted_) return;
  shape_noted_ = shape;
  if (idle > 0)
    spdlog::warn("fleet {}: {} of {} hosts get no shard of the {} (work.shards): they stay idle; raise work.shards "
                 "to at least the number of workers (deploy/SCALING.md \"Shards\")",
                 host_, idle, hosts.size(), cfg_.work.shards);
  else if (total > cfg_.work.shards)
    spdlog::info("fleet {}: {} workers share {} shards (work.shards): some workers share a shard and contend for its "
                 "records; raise work.shards to at least the number of workers (deploy/SCALING.md \"Shards\")",
                 host_, total, cfg_.work.shards);
}

void fleet_membership::send_assign(const std::string& name) {
  auto it = members_.find(name);
  if (it == members_.end() || it->second.rid.empty() || !router_) return;
  fleet_assign a;
  a.epoch = (lease_epoch_ << 32) | change_;
  a.coordinator = host_;
  a.shards = current_[name];
  auto now = steady::now();
  a.hosts.push_back({host_, advertised_, workers(), current_[host_], 0});
  for (const auto& [n, m] : members_)
    a.hosts.push_back({n, m.endpoint, m.workers, current_[n],
                       std::max<std::int64_t>(0, std::chrono::duration_cast<milliseconds>(now - m.last_seen).count())});
  auto env = make_envelope(a, fleet_assign::kind, from_);
  (void)router_->send(it->second.rid, env);
}

void fleet_membership::close_dealer() {
  if (monitor_) {
    monitor_->close();
    monitor_.reset();
  }
  if (dealer_) {
    zmq_socket_monitor(dealer_->raw().handle(), nullptr, 0);
    dealer_.reset();
  }
  target_.reset();
}

void fleet_membership::connect_dealer(const coordinator_row& row) {
  close_dealer();
  target_ = row;
  refused_logged_ = false;
  if (row.endpoint.empty()) {
    spdlog::info("fleet {}: coordinator {} has no host_endpoint (single-host mode); claiming from every shard",
                 host_, row.host);
    host_assignment a;
    a.shards = all_shards(cfg_.work.shards);
    set_assignment(std::move(a));
    return;
  }
  if (is_tcp(row.endpoint) && !keys_) {
    spdlog::error("fleet {}: coordinator {} is at {} (tcp, CURVE) but this host has no fleet.curve_secret_key; "
                  "claiming from every shard", host_, row.host, row.endpoint);
    host_assignment a;
    a.shards = all_shards(cfg_.work.shards);
    set_assignment(std::move(a));
    return;
  }
  transport::socket_options so;
  so.linger = milliseconds(0);
  so.reconnect_interval = milliseconds(100);
  so.reconnect_interval_max = milliseconds(2000);
  auto d = transport::envelope_socket::make(ctx_, zmq::socket_type::dealer, so);
  if (!d) {
    spdlog::error("fleet {}: DEALER: {}", host_, d.error().describe());
    return;
  }
  if (keys_) {
    if (auto c = transport::configure_curve_client(d->raw(), *keys_, row.public_key); !c) {
      spdlog::error("fleet {}: coordinator {}'s public key '{}' is unusable: {}", host_, row.host, row.public_key,
                    c.error().describe());
      return;
    }
  }
  std::string mon = "inproc://fleet-monitor-" + instance_ + "-" + std::to_string(++monitor_seq_);
  if (zmq_socket_monitor(d->raw().handle(), mon.c_str(),
                         ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) == 0) {
    try {
      zmq::socket_t m(ctx_, zmq::socket_type::pair);
      m.set(zmq::sockopt::linger, 0);
      m.connect(mon);
      monitor_ = std::move(m);
    } catch (const zmq::error_t& e) {
      spdlog::warn("fleet {}: socket monitor: {}", host_, e.what());
    }
  }
  if (auto c = d->connect(row.endpoint); !c) {
    spdlog::error("fleet {}: cannot connect to coordinator {} at {}: {}", host_, row.host, row.endpoint,
                  c.error().describe());
    return;
  }
  dealer_ = std::move(*d);
  dealer_since_ = steady::now();
  last_from_coordinator_ = steady::time_point{};
  auto env = make_envelope(my_join(), fleet_join::kind, from_);
  (void)dealer_->send(env);
  last_heartbeat_sent_ = steady::now();
  spdlog::log(silence_logged_ ? spdlog::level::debug : spdlog::level::info, "fleet {}: joining coordinator {} at {}",
              host_, row.host, row.endpoint);
}

void fleet_membership::on_role_change(const lease_view& v) {
  if (v.held) {
    if (!role_coordinator_ || !have_role_ || lease_epoch_ != static_cast<std::uint64_t>(v.row->epoch)) {
      close_dealer();
      role_coordinator_ = true;
      coordinator_ = true;
      lease_epoch_ = static_cast<std::uint64_t>(v.row->epoch);
      change_ = 0;
      members_.clear();
      current_.clear();
      // The last fleet.assign this host received as a member lists every host's shards: the
      // survivors keep theirs and only a dead host's shards move (without it the first
      // rebalance would deal every shard afresh, moving most of them between live hosts).
      std::map<std::string, host_view, std::less<>> last_view;
      {
        std::lock_guard lock(mu_);
        if (!assignment_.shards.empty()) current_[host_] = assignment_.shards;
        for (const auto& h : view_)
          if (h.host != host_) last_view[h.host] = h;
      }
      auto now = steady::now();
      for (const auto& h : v.seed) {
        if (h.endpoint.empty()) continue; // cannot reach us: it will not join
        member m;
        m.endpoint = h.endpoint;
        m.public_key = h.public_key;
        m.instance = h.instance;
        m.workers = h.workers;
        if (auto it = last_view.find(h.host); it != last_view.end()) m.reported = it->second.shards;
        // Grace: it learns about us within one renew interval.
        m.last_seen = now + milliseconds(f_.coordinator_renew_ms);
        members_[h.host] = std::move(m);
      }
      // Hosts of that last assignment whose rows looked stale (a loaded machine writes them
      // late): keep them and their shards too, except the old coordinator (its lease ran out:
      // most likely dead). One that is gone is dropped after the liveness window as usual.
      for (const auto& [name, h] : last_view) {
        if (h.coordinator || h.endpoint.empty() || members_.contains(name)) continue;
        member m;
        m.endpoint = h.endpoint;
        m.workers = h.workers;
        m.reported = h.shards;
        m.last_seen = now + milliseconds(f_.coordinator_renew_ms);
        members_[name] = std::move(m);
      }
      spdlog::info("fleet {}: coordinator (epoch {}), {} hosts known from the fleet table and the last assignment",
                   host_, lease_epoch_, members_.size());
      rebalance(true);
    }
  } else {
    if (role_coordinator_ || !have_role_) {
      role_coordinator_ = false;
      coordinator_ = false;
      members_.clear();
      current_.clear();
    }
    if (v.row && v.row->host != host_) {
      if (!target_ || target_->instance != v.row->instance || target_->endpoint != v.row->endpoint ||
          target_->public_key != v.row->public_key)
        connect_dealer(*v.row);
    } else if (v.row && v.row->host == host_ && v.row->instance != instance_) {
      // An earlier process of this host still holds an unexpired lease: wait for it to expire.
    }
  }
  have_role_ = true;
}

void fleet_membership::handle_router() {
  while (true) {
    auto in = router_->receive(milliseconds(0));
    if (!in) return;
    const auto& env = in->env;
    if (env.kind == fleet_join::kind || env.kind == fleet_heartbeat_kind) {
      auto j = actors::decode_body<fleet_join>(env.body, zone_);
      if (!j || j->host.empty() || j->host == host_) continue;
      if (!role_coordinator_) continue; // not ours to answer; it finds the holder in the table
      auto [it, fresh] = members_.try_emplace(j->host);
      auto& m = it->second;
      bool changed = fresh || m.workers != j->workers || m.rid.empty() || m.instance != j->instance;
      m.rid = in->routing_id;
      m.endpoint = j->endpoint;
      m.public_key = j->public_key;
      m.instance = j->instance;
      m.workers = j->workers;
      m.reported = j->shards;
      m.last_seen = std::max(m.last_seen, steady::now());
      if (fresh) spdlog::info("fleet {}: host {} joined ({} workers)", host_, j->host, j->workers);
      if (changed) {
        rebalance(false);
        send_assign(j->host);
      } else if (env.kind == fleet_join::kind) {
        send_assign(j->host);
      }
    } else if (env.kind == fleet_work::kind) {
      auto w = actors::decode_body<fleet_work>(env.body, zone_);
      if (!w || !role_coordinator_) continue;
      std::string owner;
      for (const auto& [h, l] : current_)
        if (w->shard >= 0 && std::binary_search(l.begin(), l.end(), static_cast<std::uint32_t>(w->shard))) owner = h;
      if (owner.empty() || owner == host_) {
        deliver_local(w->queue, w->shard, w->count);
      } else if (auto it = members_.find(owner); it != members_.end() && !it->second.rid.empty()) {
        (void)router_->send(it->second.rid, make_envelope(*w, fleet_work::kind, from_));
      }
    } else if (env.kind == fleet_leave::kind) {
      auto l = actors::decode_body<fleet_leave>(env.body, zone_);
      if (!l || !role_coordinator_) continue;
      if (members_.erase(l->host) > 0) {
        spdlog::info("fleet {}: host {} left ({})", host_, l->host, l->reason);
        current_.erase(l->host);
        rebalance(false);
      }
    }
  }
}

void fleet_membership::handle_dealer() {
  while (dealer_) {
    auto in = dealer_->receive(milliseconds(0));
    if (!in) return;
    last_from_coordinator_ = steady::now();
    silence_logged_ = false;
    const auto& env = in->env;
    if (env.kind == fleet_assign::kind) {
      auto a = actors::decode_body<fleet_assign>(env.body, zone_);
      if (!a) continue;
      std::uint64_t mine;
      {
        std::lock_guard lock(mu_);
        mine = assignment_.epoch;
      }
      if (a->epoch < mine) continue; // an older coordinator's word
      std::vector<host_view> v;
      v.push_back(host_view{host_, advertised_, workers(), a->shards, false, 0});
      for (const auto& h : a->hosts)
        if (h.host != host_)
          v.push_back(host_view{h.host, h.endpoint, h.workers, h.shards, h.host == a->coordinator, h.last_seen_ms_ago});
      {
        std::lock_guard lock(mu_);
        view_ = std::move(v);
      }
      host_assignment ha;
      ha.epoch = a->epoch;
      ha.coordinator = a->coordinator;
      ha.shards = a->shards;
      set_assignment(std::move(ha));
    } else if (env.kind == fleet_work::kind) {
      auto w = actors::decode_body<fleet_work>(env.body, zone_);
      if (w) deliver_local(w->queue, w->shard, w->count);
    } else if (env.kind == fleet_leave::kind) {
      spdlog::info("fleet {}: the coordinator resigned; trying to take the lease", host_);
      close_dealer();
      wake_lease();
      return;
    }
  }
}

void fleet_membership::handle_monitor() {
  while (monitor_) {
    zmq::message_t ev, addr;
    try {
      if (!monitor_->recv(ev, zmq::recv_flags::dontwait)) return;
      if (ev.more()) (void)monitor_->recv(addr, zmq::recv_flags::dontwait);
    } catch (const zmq::error_t&) {
      return;
    }
    if (ev.size() < 6) continue;
    std::uint16_t event;
    std::uint32_t value;
    std::memcpy(&event, ev.data(), 2);
    std::memcpy(&value, static_cast<const char*>(ev.data()) + 2, 4);
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && !refused_logged_) {
      refused_logged_ = true;
      std::string why = "refused by the coordinator " + (target_ ? target_->host : std::string("?")) + " at " +
                        (target_ ? target_->endpoint : std::string("?")) + " (ZAP status " + std::to_string(value) +
                        "): this host's public key " + (keys_ ? keys_->public_key : std::string()) +
                        " is not in its fleet.curve_allow_dir; copy this host's .pub file there";
      spdlog::error("fleet {}: {}", host_, why);
      {
        std::lock_guard lock(start_mu_);
        if (start_ == start_state::pending) {
          start_ = start_state::refused;
          refusal_ = why;
        }
      }
      start_cv_.notify_all();
    } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      refused_logged_ = false;
    }
  }
}

void fleet_membership::handle_commands() {
  std::deque<command> batch;
  {
    std::lock_guard lock(cmd_mu_);
    batch.swap(commands_);
  }
  for (auto& c : batch) {
    if (c.what == command::type::workers) {
      if (role_coordinator_) rebalance(false);
      else if (dealer_) {
        (void)dealer_->send(make_envelope(my_join(), fleet_heartbeat_kind, from_));
        last_heartbeat_sent_ = steady::now();
      }
      continue;
    }
    bool local = c.shard < 0;
    if (!local) {
      std::lock_guard lock(mu_);
      local = std::binary_search(assignment_.shards.begin(), assignment_.shards.end(),
                                 static_cast<std::uint32_t>(c.shard));
    }
    if (local) {
      deliver_local(c.queue, c.shard, c.count);
      continue;
    }
    fleet_work w{c.queue, c.shard, c.count, host_};
    if (role_coordinator_) {
      std::string owner;
      for (const auto& [h, l] : current_)
        if (std::binary_search(l.begin(), l.end(), static_cast<std::uint32_t>(c.shard))) owner = h;
      auto it = members_.find(owner);
      if (it != members_.end() && !it->second.rid.empty())
        (void)router_->send(it->second.rid, make_envelope(w, fleet_work::kind, from_));
      else
        deliver_local(c.queue, c.shard, c.count);
    } else if (dealer_) {
      (void)dealer_->send(make_envelope(w, fleet_work::kind, from_));
    } else {
      deliver_local(c.queue, c.shard, c.count);
    }
  }
}

void fleet_membership::coordinator_tick(steady::time_point now) {
  std::vector<std::string> dead;
  for (const auto& [name, m] : members_)
    if (now > m.last_seen && now - m.last_seen > dead_after()) dead.push_back(name);
  for (const auto& name : dead) {
    spdlog::warn("fleet {}: host {} missed {} heartbeats; rebalancing without it", host_, name, f_.heartbeat_liveness);
    members_.erase(name);
    current_.erase(name);
  }
  if (!dead.empty()) rebalance(false);
  if (workers() != assigned_workers_) {
    assigned_workers_ = workers();
    rebalance(false);
  }
  if (now - last_assign_sent_ >= hb()) {
    for (const auto& [name, m] : members_) send_assign(name);
    last_assign_sent_ = now;
    update_view();
  }
}

void fleet_membership::member_tick(steady::time_point now) {
  if (!dealer_) return;
  if (now - last_heartbeat_sent_ >= hb()) {
    (void)dealer_->send(make_envelope(my_join(), fleet_heartbeat_kind, from_));
    last_heartbeat_sent_ = now;
  }
  auto since = std::max(dealer_since_, last_from_coordinator_);
  if (now - since > dead_after() && target_) {
    if (!silence_logged_)
      spdlog::warn("fleet {}: coordinator {} silent for {} heartbeats; reconnecting until it answers or its lease "
                   "expires", host_, target_->host, f_.heartbeat_liveness);
    silence_logged_ = true;
    auto row = *target_;
    connect_dealer(row);
    wake_lease(); // maybe its lease is gone: try to take it
  }
}

void fleet_membership::refresh_allow_list() {
  if (allow_file_.empty()) return;
  auto now = steady::now();
  if (now - allow_checked_ < std::chrono::seconds(1)) return;
  allow_checked_ = now;
  auto text = allow_list_from_dir(f_.curve_allow_dir);
  if (!text) {
    spdlog::warn("fleet {}: allow dir: {} (keeping the previous list)", host_, text.error().describe());
    return;
  }
  if (*text == allow_text_) return;
  allow_text_ = *text;
  auto tmp = allow_file_;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << allow_text_;
  }
  std::error_code ec;
  fs::rename(tmp, allow_file_, ec);
  if (zap_) (void)zap_->reload();
  spdlog::info("fleet {}: allow list reloaded from {}", host_, f_.curve_allow_dir);
}

void fleet_membership::run() {
  while (!lease_done_) {
    lease_view v;
    {
      std::lock_guard lock(lease_mu_);
      if (lease_.generation != seen_generation_ || !have_role_ ||
          (!lease_.held && lease_.row && (!target_ || target_->instance != lease_.row->instance))) {
        v = lease_;
        seen_generation_ = lease_.generation;
      } else {
        v.generation = 0;
      }
    }
    if (v.generation != 0 || !have_role_) on_role_change(v);

    std::vector<zmq::pollitem_t> items;
    if (router_) items.push_back({router_->raw().handle(), 0, ZMQ_POLLIN, 0});
    if (dealer_) items.push_back({dealer_->raw().handle(), 0, ZMQ_POLLIN, 0});
    if (monitor_) items.push_back({monitor_->handle(), 0, ZMQ_POLLIN, 0});
    try {
      zmq::poll(items.data(), items.size(), milliseconds(10));
    } catch (const zmq::error_t&) {
    }
    if (router_) handle_router();
    if (monitor_) handle_monitor();
    if (dealer_) handle_dealer();
    handle_commands();
    auto now = steady::now();
    if (role_coordinator_) coordinator_tick(now);
    else member_tick(now);
    refresh_allow_list();
  }
  // Leaving: tell the others.
  if (role_coordinator_ && router_) {
    fleet_leave l{host_, "coordinator stopped"};
    for (const auto& [name, m] : members_)
      if (!m.rid.empty()) (void)router_->send(m.rid, make_envelope(l, fleet_leave::kind, from_));
  } else if (dealer_) {
    (void)dealer_->send(make_envelope(fleet_leave{host_, "stopped"}, fleet_leave::kind, from_));
  }
  // Give the frames a moment to leave (linger is 0 so a dead peer never blocks the close).
  std::this_thread::sleep_for(milliseconds(50));
  coordinator_ = false;
  close_dealer();
  router_.reset();
}


} // namespace shoal::workers::fleet::detail
