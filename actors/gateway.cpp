#include "actors/gateway.hpp"

#include "transport/codec.hpp"
#include "transport/socket.hpp"

#include <spdlog/spdlog.h>
#include <zmq.hpp>

#include <map>
#include <mutex>
#include <thread>

namespace shoal::actors {

namespace {
using steady = std::chrono::steady_clock;
constexpr std::string_view ping_kind = "gateway.ping";
constexpr std::string_view pong_kind = "gateway.pong";

std::string peer_key(std::string_view process, std::string_view host) {
  std::string k(process);
  k += '@';
  k += host;
  return k;
}

std::unexpected<error> transport_error(std::string what, const transport::error& e) {
  return make_error(errc::transport, std::move(what) + ": " + e.describe());
}
} // namespace

std::string_view to_string(peer_state s) noexcept {
  switch (s) {
  case peer_state::unknown: return "unknown";
  case peer_state::up: return "up";
  case peer_state::down: return "down";
  }
  return "unknown";
}

// -- impl ----------------------------------------------------------------------------------------

struct gateway::impl {
  struct link {
    peer_options opts;
    std::string key;                                // "process@host"
    std::optional<transport::envelope_socket> dealer;
    steady::time_point last_pong{};
    steady::time_point since{};                     // when the link was created
  };

  impl(actor_system& s, gateway_options o) : sys(s), opts(std::move(o)) {}

  actor_system& sys;
  gateway_options opts;
  std::string self_from; // "$gateway@process@host"
  zmq::context_t ctx{1};
  std::unique_ptr<transport::zap_authenticator> zap;
  std::optional<transport::envelope_socket> router;
  std::optional<zmq::socket_t> wake_pull, wake_push;
  std::string bound;
  std::thread thread;
  std::atomic<bool> stopping{false};
  bool stopped = false;

  // handed over from other threads (guarded by q_m)
  std::mutex q_m;
  std::vector<transport::envelope> outq;
  std::vector<peer_options> new_peers;
  bool signalled = false;

  // public view of the peers (guarded by st_m)
  mutable std::mutex st_m;
  std::map<std::string, peer_info, std::less<>> status;

  // I/O thread only
  std::map<std::string, link, std::less<>> links;

  std::atomic<std::uint64_t> sent{0}, received{0}, undeliverable{0}, dropped{0}, decode_errors{0};

  // -- any thread ---------------------------------------------------------------------------
  void wake_locked() { // q_m held
    if (signalled)
      return;
    signalled = true;
    zmq::message_t m;
    (void)wake_push->send(m, zmq::send_flags::dontwait);
  }

  result<void> forward(transport::envelope&& e) {
    auto a = e.to ? address::parse(*e.to) : std::nullopt;
    if (!a)
      return make_error(errc::invalid_argument, "envelope without a valid 'to'");
    auto key = peer_key(a->process, a->host);
    {
      std::lock_guard lk(st_m);
      auto it = status.find(key);
      if (it == status.end()) {
        dropped.fetch_add(1, std::memory_order_relaxed);
        return make_error(errc::no_route, "no gateway peer for " + key);
      }
      if (it->second.state != peer_state::up) {
        ++it->second.dropped;
        dropped.fetch_add(1, std::memory_order_relaxed);
        return make_error(errc::peer_down, "peer " + key + " is " + std::string(to_string(it->second.state)));
      }
    }
    std::lock_guard lk(q_m);
    outq.push_back(std::move(e));
    wake_locked();
    return {};
  }

  result<void> add_peer(peer_options p) {
    if (p.process.empty() || p.host.empty() || p.endpoint.empty())
      return make_error(errc::invalid_argument, "peer needs process, host and endpoint");
    if (p.process.find('@') != std::string::npos || p.host.find('@') != std::string::npos)
      return make_error(errc::invalid_argument, "peer process/host must not contain '@'");
    if (auto ep = transport::endpoint::parse(p.endpoint, transport::endpoint_use::connect); !ep)
      return make_error(errc::invalid_argument, ep.error().describe());
    auto key = peer_key(p.process, p.host);
    {
      std::lock_guard lk(st_m);
      if (status.contains(key))
        return make_error(errc::invalid_argument, "peer " + key + " already configured");
      status.emplace(key, peer_info{p.process, p.host, p.endpoint, peer_state::unknown, 0, 0, 0, 0});
    }
    std::lock_guard lk(q_m);
    new_peers.push_back(std::move(p));
    wake_locked();
    return {};
  }

  // -- I/O thread ---------------------------------------------------------------------------
  transport::envelope control(std::string_view kind) const {
    transport::envelope e;
    e.id = transport::new_message_id();
    e.kind = kind;
    e.from = self_from;
    e.ts_ns = transport::unix_now_ns();
    return e;
  }

  void open_link(peer_options p) {
    link l;
    l.key = peer_key(p.process, p.host);
    l.since = steady::now();
    transport::socket_options so;
    so.linger = std::chrono::milliseconds(0);
    so.send_hwm = opts.send_hwm;
    so.reconnect_interval = opts.reconnect_min;
    so.reconnect_interval_max = opts.reconnect_max;
    // Queue while (re)connecting: `forward` already refuses mail for peers known to be down, so
    // what queues here is mail sent in the detection window or just after a restart.
    so.immediate = false;
    auto d = transport::envelope_socket::make(ctx, zmq::socket_type::dealer, so);
    if (!d) {
      spdlog::error("gateway {}: cannot create a socket for peer {}: {}", bound, l.key, d.error().describe());
      return;
    }
    if (opts.curve && p.server_public_key) {
      if (auto r = transport::configure_curve_client(d->raw(), *opts.curve, *p.server_public_key); !r) {
        spdlog::error("gateway {}: CURVE setup for peer {} failed: {}", bound, l.key, r.error().describe());
        return;
      }
    }
    if (auto r = d->connect(p.endpoint); !r) {
      spdlog::error("gateway {}: cannot connect to peer {} at {}: {}", bound, l.key, p.endpoint, r.error().describe());
      return;
    }
    l.dealer.emplace(std::move(*d));
    l.opts = std::move(p);
    links.emplace(l.key, std::move(l));
  }

  void set_state(link& l, peer_state s) {
    peer_info snapshot;
    {
      std::lock_guard lk(st_m);
      auto& info = status[l.key];
      if (info.state == s)
        return;
      info.state = s;
      if (s == peer_state::up)
        ++info.ups;
      if (s == peer_state::down)
        ++info.downs;
      snapshot = info;
    }
    if (s == peer_state::up)
      spdlog::info("gateway {}: peer {} is up ({})", bound, l.key, l.opts.endpoint);
    else
      spdlog::warn("gateway {}: peer {} is down ({})", bound, l.key, l.opts.endpoint);
    if (opts.on_peer_event) {
      try {
        opts.on_peer_event(snapshot);
      } catch (...) {
        spdlog::error("gateway {}: on_peer_event threw", bound);
      }
    }
  }

  void send_out(std::vector<transport::envelope>& batch) {
    for (auto& e : batch) {
      auto a = address::parse(*e.to);
      auto it = a ? links.find(peer_key(a->process, a->host)) : links.end();
      bool ok = false;
      if (it != links.end() && it->second.dealer) {
        // Wait briefly at the high-water mark (backpressure) rather than drop at once.
        auto r = it->second.dealer->send(e, std::chrono::milliseconds(100));
        ok = r.has_value();
        if (!r)
          spdlog::debug("gateway {}: send to {} failed: {}", bound, it->first, r.error().describe());
      }
      std::lock_guard lk(st_m);
      if (ok) {
        sent.fetch_add(1, std::memory_order_relaxed);
        if (auto s = status.find(it->first); s != status.end())
          ++s->second.sent;
      } else {
        dropped.fetch_add(1, std::memory_order_relaxed);
        if (it != links.end())
          if (auto s = status.find(it->first); s != status.end())
            ++s->second.dropped;
      }
    }
    batch.clear();
  }

  void drain_router(transport::envelope& env, std::vector<std::uint8_t>& rid) {
    for (int i = 0; i < 4096; ++i) { // bounded, so heartbeats keep their rhythm under load
      auto r = router->receive(env, std::chrono::milliseconds(0), &rid);
      if (!r) {
        if (r.error().code == transport::errc::timeout)
          return;
        if (r.error().code == transport::errc::closed)
          return;
        decode_errors.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      mark_alive(env.from); // any traffic from a peer proves it is alive
      if (env.kind == ping_kind) {
        (void)router->send(rid, control(pong_kind));
        continue;
      }
      received.fetch_add(1, std::memory_order_relaxed);
      if (auto d = sys.deliver(std::move(env)); !d) {
        undeliverable.fetch_add(1, std::memory_order_relaxed);
        spdlog::debug("gateway {}: undeliverable envelope: {}", bound, d.error().message);
      }
      env = transport::envelope{};
    }
  }

  void mark_alive(const std::string& from) {
    auto a = address::parse(from);
    if (!a)
      return;
    auto it = links.find(peer_key(a->process, a->host));
    if (it == links.end())
      return;
    it->second.last_pong = steady::now();
    set_state(it->second, peer_state::up);
  }

  void drain_dealer(link& l, transport::envelope& env) {
    for (int i = 0; i < 1024; ++i) {
      auto r = l.dealer->receive(env, std::chrono::milliseconds(0));
      if (!r) {
        if (r.error().code == transport::errc::timeout || r.error().code == transport::errc::closed)
          return;
        decode_errors.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (env.kind == pong_kind) {
        l.last_pong = steady::now();
        set_state(l, peer_state::up);
      }
    }
  }

  void heartbeat(steady::time_point now) {
    auto window = opts.heartbeat_interval * opts.heartbeat_liveness;
    for (auto& [key, l] : links) {
      if (!l.dealer)
        continue;
      (void)l.dealer->send(control(ping_kind)); // queued while disconnected: harmless
      auto last = l.last_pong == steady::time_point{} ? l.since : l.last_pong;
      if (now - last > window)
        set_state(l, peer_state::down);
    }
  }

  void run() {
    transport::envelope env;
    std::vector<std::uint8_t> rid;
    std::vector<transport::envelope> batch;
    auto next_beat = steady::now();
    while (!stopping.load(std::memory_order_acquire)) {
      std::vector<zmq_pollitem_t> items;
      items.push_back({wake_pull->handle(), 0, ZMQ_POLLIN, 0});
      items.push_back({router->raw().handle(), 0, ZMQ_POLLIN, 0});
      std::vector<link*> order;
      for (auto& [k, l] : links)
        if (l.dealer) {
          items.push_back({l.dealer->raw().handle(), 0, ZMQ_POLLIN, 0});
          order.push_back(&l);
        }
      auto now = steady::now();
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_beat - now).count();
      if (zmq_poll(items.data(), static_cast<int>(items.size()), wait < 0 ? 0 : static_cast<long>(wait)) < 0) {
        if (zmq_errno() == ETERM)
          break;
        continue; // EINTR
      }
      if (items[0].revents & ZMQ_POLLIN) {
        zmq::message_t m;
        while (wake_pull->recv(m, zmq::recv_flags::dontwait)) {
        }
        std::vector<peer_options> peers;
        {
          std::lock_guard lk(q_m);
          batch.swap(outq);
          peers.swap(new_peers);
          signalled = false;
        }
        for (auto& p : peers)
          open_link(std::move(p));
        send_out(batch);
      }
      if (items[1].revents & ZMQ_POLLIN)
        drain_router(env, rid);
      for (std::size_t i = 0; i < order.size(); ++i)
        if (items[i + 2].revents & ZMQ_POLLIN)
          drain_dealer(*order[i], env);
      now = steady::now();
      if (now >= next_beat) {
        heartbeat(now);
        next_beat = now + opts.heartbeat_interval;
      }
    }
  }
};

// -- gateway -------------------------------------------------------------------------------------

gateway::gateway(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

gateway::~gateway() { stop(); }

result<std::unique_ptr<gateway>> gateway::start(actor_system& sys, gateway_options opts) {
  if (opts.heartbeat_interval.count() <= 0 || opts.heartbeat_liveness < 1)
    return make_error(errc::invalid_argument, "heartbeat_interval must be > 0 and heartbeat_liveness ≥ 1");
  if (opts.curve && opts.zap_allow_list.empty())
    return make_error(errc::invalid_argument, "CURVE needs a zap_allow_list");
  auto p = std::make_unique<impl>(sys, std::move(opts));
  auto& o = p->opts;
  p->self_from = "$gateway@" + sys.process() + '@' + sys.host();
  try {
    p->wake_pull.emplace(p->ctx, zmq::socket_type::pull);
    p->wake_push.emplace(p->ctx, zmq::socket_type::push);
    auto wake_ep = "inproc://gateway-wake";
    p->wake_pull->bind(wake_ep);
    p->wake_push->connect(wake_ep);
  } catch (const zmq::error_t& e) {
    return make_error(errc::transport, std::string("wake socket: ") + e.what());
  }
  if (o.curve) {
    transport::zap_options zo;
    zo.allow_list = o.zap_allow_list;
    auto zap = transport::zap_authenticator::start(p->ctx, zo);
    if (!zap)
      return transport_error("ZAP authenticator", zap.error());
    p->zap = std::move(*zap);
  }
  transport::socket_options so;
  so.linger = std::chrono::milliseconds(0);
  so.send_hwm = o.send_hwm;
  so.receive_hwm = o.send_hwm;
  auto r = transport::envelope_socket::make(p->ctx, zmq::socket_type::router, so);
  if (!r)
    return transport_error("ROUTER", r.error());
  p->router.emplace(std::move(*r));
  if (o.curve)
    if (auto c = transport::configure_curve_server(p->router->raw(), *o.curve); !c)
      return transport_error("CURVE server", c.error());
  if (auto b = p->router->bind(o.bind); !b)
    return transport_error("bind " + o.bind, b.error());
  p->bound = p->router->last_endpoint();
  for (auto& peer : o.peers)
    if (auto a = p->add_peer(peer); !a)
      return std::unexpected(a.error());
  impl* raw = p.get();
  p->thread = std::thread([raw] { raw->run(); });
  sys.set_remote_router([raw](transport::envelope&& e) { return raw->forward(std::move(e)); });
  return std::unique_ptr<gateway>(new gateway(std::move(p)));
}

void gateway::stop() {
  if (!impl_ || impl_->stopped)
    return;
  impl_->stopped = true;
  impl_->sys.set_remote_router(nullptr);
  impl_->stopping.store(true, std::memory_order_release);
  {
    std::lock_guard lk(impl_->q_m);
    impl_->signalled = false;
    impl_->wake_locked();
  }
  if (impl_->thread.joinable())
    impl_->thread.join();
  impl_->links.clear();
  impl_->router.reset();
  impl_->wake_push.reset();
  impl_->wake_pull.reset();
  if (impl_->zap)
    impl_->zap->stop();
  impl_->zap.reset();
  impl_->ctx.close();
}

std::string gateway::bound_endpoint() const { return impl_->bound; }

result<void> gateway::add_peer(peer_options peer) { return impl_->add_peer(std::move(peer)); }

std::vector<peer_info> gateway::peers() const {
  std::lock_guard lk(impl_->st_m);
  std::vector<peer_info> out;
  for (auto& [k, v] : impl_->status)
    out.push_back(v);
  return out;
}

peer_state gateway::peer_state_of(std::string_view process, std::string_view host) const {
  std::lock_guard lk(impl_->st_m);
  auto it = impl_->status.find(peer_key(process, host));
  return it == impl_->status.end() ? peer_state::unknown : it->second.state;
}

gateway_stats gateway::stats() const {
  gateway_stats s;
  s.sent = impl_->sent.load(std::memory_order_relaxed);
  s.received = impl_->received.load(std::memory_order_relaxed);
  s.undeliverable = impl_->undeliverable.load(std::memory_order_relaxed);
  s.dropped = impl_->dropped.load(std::memory_order_relaxed);
  s.decode_errors = impl_->decode_errors.load(std::memory_order_relaxed);
  return s;
}

} // namespace shoal::actors
