// The persistor's push source: a ROUTER (CURVE where producers cross hosts) whose records go
// straight into a batch stage, acked once their blob is committed (transport/ENVELOPE.md).
#include "workers/persistor/sources_internal.hpp"


#include "actors/supervisor.hpp"
#include "transport/socket.hpp"
#include "workers/json_limits.hpp"
#include "workers/persistor/slot_table.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <list>
#include <map>
#include <mutex>
#include <thread>
#include <span>
#include <unordered_map>
#include <unordered_set>


namespace shoal::workers::persistor {

using namespace detail;

namespace {

nlohmann::json committed_json(const committed_blob& c) {
  return {{"container", c.container}, {"blob", c.name},
          {"dest", c.dest},           {"date", c.date},
          {"host", c.host},           {"format", std::string(to_string(c.format))},
          {"record_count", c.summary.record_count},
          {"first_event_time", format_time(c.summary.first_event_time)},
          {"last_event_time", format_time(c.summary.last_event_time)},
          {"bytes", c.bytes},         {"append", c.append}};
}


// -- push -----------------------------------------------------------------------------------------

// What run_push and the push source actor share. The completion queue is filled by the engine's
// writer/registrar threads (one lock per committed blob) and emptied by the source.
struct push_shared {
  push_options popts;
  source_stats* stats = nullptr;
  engine* eng = nullptr;            // set before the source is spawned
  std::function<void(const std::string&)> on_ready;
  zmq::context_t ctx{1};            // outlives the source's sockets (the actor holds this)
  std::optional<transport::curve_key_pair> curve; // server keys of the ROUTER; none = plain
  std::unique_ptr<transport::zap_authenticator> zap; // admits the producers' keys (in ctx)
  std::mutex m;                     // guards everything below
  std::vector<ack_token> tokens;    // committed, not yet acked
  std::vector<committed_blob> blobs; // committed, not yet announced
  bool signalled = false;           // an acks_ready is on its way
  actors::actor_ref source;         // the running source actor
  std::string init_error;           // why the source could not start
  bool ready_announced = false;
};

// The ROUTER's owner: reads bursts of frames, formats each record straight into its batch_stage
// (no lock, no copy beyond the frame decode and the payload), and sends the acks, all on its
// own thread (ZeroMQ sockets are single-threaded).
class push_source final : public actors::actor {
public:
  /// Flush ids of one producer waiting for their answer at most (take_flush()).
  static constexpr std::size_t max_waiting_flushes = 1024;

  push_source(actors::actor_config& cfg, std::shared_ptr<push_shared> sh) : actor(cfg), sh_(std::move(sh)) {}

protected:
  actors::result<void> init() override {
    auto bad = [&](std::string why) -> actors::result<void> {
      std::lock_guard lk(sh_->m);
      sh_->init_error = why;
      return std::unexpected(actors::error{actors::errc::init_failed, std::move(why)});
    };
    const auto& popts = sh_->popts;
    transport::socket_options so;
    so.receive_hwm = popts.receive_hwm;
    so.send_hwm = 100'000;
    so.router_mandatory = true;
    so.linger = std::chrono::milliseconds(2000);
    auto router = transport::envelope_socket::make(sh_->ctx, zmq::socket_type::router, so);
    if (!router)
      return bad("persistor socket: " + router.error().describe());
    if (sh_->curve)
      if (auto c = transport::configure_curve_server(router->raw(), *sh_->curve, producer_zap_domain); !c)
        return bad("persistor socket CURVE: " + c.error().describe());
    if (auto b = router->bind(popts.endpoint); !b)
      return bad("binding " + popts.endpoint + ": " + b.error().describe());
    router_.emplace(std::move(*router));
    if (!popts.committed_endpoint.empty()) {
      auto p = transport::envelope_socket::make(sh_->ctx, zmq::socket_type::pub, so);
      if (!p)
        return bad("committed socket: " + p.error().describe());
      if (auto b = p->bind(popts.committed_endpoint); !b)
        return bad("binding " + popts.committed_endpoint + ": " + b.error().describe());
      pub_.emplace(std::move(*p));
    }
    auto st = sh_->eng->make_stage();
    if (!st)
      return bad(st.error().describe());
    stage_ = std::move(*st);
    out_.from = popts.address;
    bool announce = false;
    {
      std::lock_guard lk(sh_->m);
      sh_->source = self();
      sh_->signalled = false;
      announce = !sh_->ready_announced;
      sh_->ready_announced = true;
    }
    if (announce && sh_->on_ready)
      sh_->on_ready(router_->last_endpoint());
    if (auto t = tell(self(), poll_tick{}); !t)
      return std::unexpected(t.error());
    return {};
  }

  actors::behavior make_behavior() override {
    return {
        [this](const poll_tick&) { poll(); },
        [this](const acks_ready&) { send_acks(); },
        [this](const stop_reading&) -> bool {
          reading_ = false;
          stage_->seal_all();
          return true;
        },
        [this](const drain&) -> bool {
          send_acks();
          return true;
        },
    };
  }

private:
  struct waiting {
    transport::message_id id;
    std::uint32_t route = 0;          // the producer that sent it (index into routes_)
    std::vector<std::uint32_t> more;  // other producers that sent the same id meanwhile (rare)
    bool from(std::uint32_t r) const { return route == r || std::find(more.begin(), more.end(), r) != more.end(); }
  };

  // One or more persist.flush envelopes of a producer waiting for the acks of its records.
  struct flush_waiter {
    std::vector<transport::message_id> ids; // the flush envelopes answered with it, oldest first
    std::uint32_t route = 0;                // their producer (index into routes_)
    std::uint64_t seen = 0;                 // route_seen_ of the producer when it was made
    std::unordered_set<ack_token> tokens;   // its records not acked yet (no earlier waiter's)
  };

  // The index of the current frame's producer (route_) in routes_: records in flight name their
  // producer by index, with no copy of its routing id per record. Producers are few (one per
  // connection), and consecutive frames mostly come from the same one.
  std::uint32_t route_index() {
    if (last_route_ < routes_.size() && routes_[last_route_] == route_)
      return last_route_;
    auto it = std::find(routes_.begin(), routes_.end(), route_);
    if (it == routes_.end())
      it = routes_.insert(routes_.end(), route_);
    last_route_ = static_cast<std::uint32_t>(it - routes_.begin());
    return last_route_;
  }

  void poll() {
    if (!reading_)
      return;
    send_acks();
    source_stats& stats = *sh_->stats;
    if (sh_->eng->saturated()) {
      // Back-pressure: frames stay in the ROUTER's queue (then the producers' HWM).
      stats.paused_ms.fetch_add(2, std::memory_order_relaxed);
      start_timer(std::chrono::milliseconds(2), [this] { poll(); });
      return;
    }
    // Wait for the first frame only when no other mail (acks) is queued for us. With no record
    // in flight no ack can come, only stop or drain, so an idle source waits longer: a frame
    // still ends the wait at once, and the process does not wake 500 times a second for nothing.
    const auto first_wait = self().stats().queued > 0 ? std::chrono::milliseconds(0)
                            : inflight_.empty()       ? std::chrono::milliseconds(100)
                                                      : std::chrono::milliseconds(2);
    std::uint64_t received = 0, bad = 0;
    for (int burst = 0; burst < 2000; ++burst) {
      auto got = router_->receive(in_, burst == 0 ? first_wait : std::chrono::milliseconds(0), &route_);
      if (!got) {
        if (got.error().code == transport::errc::timeout)
          break;
        ++bad; // counted by the socket too; the frame is gone, the producer will re-send
        continue;
      }
      if (in_.kind == kind_flush) {
        take_flush();
        continue;
      }
      if (in_.kind != kind_record) {
        ++bad;
        continue;
      }
      ++received;
      take_record();
    }
    stats.received.fetch_add(received, std::memory_order_relaxed);
    stats.bad_frames.fetch_add(bad, std::memory_order_relaxed);
    arm();
    (void)tell(self(), poll_tick{}); // to our own mailbox: never blocks
  }

  // One received persist.record → the stage. The payload is copied once from the decoded frame
  // into the reused record, then formatted straight into its batch's body.
  void take_record() {
    source_stats& stats = *sh_->stats;
    const std::uint32_t route = route_index();
    if (auto it = by_id_.find(in_.id); it != by_id_.end()) {
      stats.duplicates.fetch_add(1, std::memory_order_relaxed);
      auto& w = inflight_[it->second];
      if (!w.from(route)) {
        w.more.push_back(route);
        note_record_of(route); // a later flush of this producer waits for it too
      }
      return;
    }
    record& r = rec_;
    static constexpr char hex[] = "0123456789abcdef"; // transport::to_hex, in place: no allocation
    r.message_id.resize(2 * in_.id.size());
    for (std::size_t i = 0; i < in_.id.size(); ++i) {
      r.message_id[2 * i] = hex[in_.id[i] >> 4];
      r.message_id[2 * i + 1] = hex[in_.id[i] & 0xF];
    }
    r.producer.assign(in_.from);
    r.producer_key.assign(router_->peer_user_id()); // set by our ZAP handler on CURVE links
    r.ingest_time = now_ms();
    // One memcpy (assigning from the byte vector's iterators copies element by element).
    r.payload.assign(reinterpret_cast<const char*>(in_.body.data()), in_.body.size());
    r.dest.clear();
    r.properties.clear();
    const std::string* explicit_time = nullptr;
    std::string_view field = sh_->popts.event_time_field;
    for (const auto& [k, v] : in_.hdr) {
      if (k == "dest")
        r.dest = v;
      else if (k == "event_time")
        explicit_time = &v;
      else if (k == "event_time_field")
        field = v;
      else
        r.properties[k] = v;
    }
    set_event_time(r, explicit_time, field);
    const ack_token tok = next_token_++;
    if (auto sub = stage_->add(r, tok); !sub) {
      stats.rejected.fetch_add(1, std::memory_order_relaxed);
      transport::envelope rej;
      rej.id = transport::new_message_id();
      rej.kind = std::string(kind_reject);
      rej.from = sh_->popts.address;
      rej.ts_ns = transport::unix_now_ns();
      rej.corr = in_.id;
      const std::string& why = sub.error().message;
      rej.body.assign(why.begin(), why.end());
      (void)router_->send(route_, rej, std::chrono::milliseconds(100));
      return;
    }
    inflight_.emplace(tok, waiting{in_.id, route, {}});
    by_id_.emplace(in_.id, tok);
    note_record_of(route);
  }

  // Route `r` has one more record in flight that a flush of it must wait for.
  void note_record_of(std::uint32_t r) {
    if (route_seen_.size() <= r)
      route_books(r);
    ++route_seen_[r];
  }

  // One received persist.flush: seals the open batches holding records this producer (its
  // routing id) sent and that are not acked yet, and acks the flush id once all of those are
  // acked (at once when there are none).
  //
  // Bounded whatever the producer does (a stalled `shoal send` sends one every few ms while its
  // records wait for slow storage; each once copied every record in flight, and the copies of
  // thousands of flushes took the persistor past 1.5 GB): the waiting flushes of one producer
  // form a chain in arrival order, each holding only the records none before it holds, and a
  // flush answered by the next one's answer too is not a waiter of its own:
  //  - a flush with no record of its producer since the latest waiting flush of that producer
  //    (or whose new records are all acked already) joins that one: same records, same answer;
  //  - a waiter whose own records are all acked while an earlier one still waits merges into
  //    the earlier one; the first waiter of a producer is answered once its records are.
  // So the records held by waiting flushes are each held once (<= records in flight), and at
  // most max_waiting_flushes ids per producer wait for an answer: beyond that the oldest id is
  // dropped (never answered; a flush is a hint, transport/ENVELOPE.md). O(records in flight)
  // for a flush that brings new records, O(waiting flushes of its producer) otherwise.
  void take_flush() {
    sh_->stats->flushes.fetch_add(1, std::memory_order_relaxed);
    const std::uint32_t r = route_index();
    route_books(r);
    flush_waiter* prev = nullptr;
    for (auto it = flushes_.rbegin(); it != flushes_.rend() && !prev; ++it)
      if (it->route == r)
        prev = &*it;
    if (prev && prev->seen == route_seen_[r]) {
      join(*prev, in_.id);
      return;
    }
    flush_waiter w{{}, r, route_seen_[r], {}};
    for (const auto& [tok, wt] : inflight_)
      if (wt.from(r) && !held_by_earlier(r, tok))
        w.tokens.insert(tok);
    if (w.tokens.empty()) {
      if (prev) {
        prev->seen = w.seen;
        join(*prev, in_.id);
      } else {
        send_ack(route_, std::span(&in_.id, 1));
      }
      return;
    }
    stage_->seal_holding([&w](ack_token t) { return w.tokens.contains(t); });
    flush_tokens_ += w.tokens.size();
    flushes_.push_back(std::move(w));
    join(flushes_.back(), in_.id);
  }

  // Per-route books sized for route `r`.
  void route_books(std::uint32_t r) {
    if (route_seen_.size() <= r) {
      route_seen_.resize(r + 1, 0);
      route_flush_ids_.resize(r + 1, 0);
    }
  }

  // A waiting flush of route `r` before the newest one holds `tok`.
  bool held_by_earlier(std::uint32_t r, ack_token tok) const {
    for (const auto& f : flushes_)
      if (f.route == r && f.tokens.contains(tok))
        return true;
    return false;
  }

  // Flush `id` is answered with waiter `w`; the producer's oldest waiting id goes beyond the cap.
  void join(flush_waiter& w, const transport::message_id& id) {
    w.ids.push_back(id);
    if (++route_flush_ids_[w.route] > max_waiting_flushes)
      for (auto& f : flushes_)
        if (f.route == w.route && !f.ids.empty()) {
          f.ids.erase(f.ids.begin());
          --route_flush_ids_[w.route];
          break;
        }
    publish_flush_books();
  }

  void publish_flush_books() {
    std::size_t ids = 0;
    for (auto n : route_flush_ids_)
      ids += n;
    sh_->stats->flushes_waiting.store(ids, std::memory_order_relaxed);
    sh_->stats->flush_records.store(flush_tokens_, std::memory_order_relaxed);
  }

  // One timer for the stage's oldest open batch (later batches never fall due earlier).
  void arm() {
    if (timer_armed_)
      return;
    if (auto next = stage_->seal_due()) {
      timer_armed_ = true;
      start_timer(*next, [this] {
        timer_armed_ = false;
        arm();
      });
    }
  }

  void send_acks() {
    {
      std::lock_guard lk(sh_->m);
      tokens_.swap(sh_->tokens);
      blobs_.swap(sh_->blobs);
      sh_->signalled = false;
    }
    for (const auto& c : blobs_) {
      transport::envelope e;
      e.id = transport::new_message_id();
      e.kind = std::string(kind_committed);
      e.from = sh_->popts.address;
      e.ts_ns = transport::unix_now_ns();
      e.hdr["ct"] = "application/json";
      const std::string body = committed_json(c).dump();
      e.body.assign(body.begin(), body.end());
      if (pub_)
        (void)pub_->send(e); // drops are counted by the socket; the work table is the fallback
    }
    blobs_.clear();
    if (tokens_.empty())
      return;
    per_route_.resize(routes_.size());
    for (ack_token t : tokens_) {
      auto it = inflight_.find(t);
      if (it == inflight_.end())
        continue; // from before a restart of this actor: that producer re-sends
      per_route_[it->second.route].push_back(it->second.id);
      for (auto r : it->second.more)
        per_route_[r].push_back(it->second.id);
      by_id_.erase(it->second.id);
      inflight_.erase(it);
      for (auto& f : flushes_)
        flush_tokens_ -= f.tokens.erase(t);
    }
    tokens_.clear();
    // Flushes whose records are all acked: the first waiter of its producer has its ids go out
    // with the records' acks; a later one merges into the earlier waiter (answered with it).
    if (!flushes_.empty()) {
      earlier_.assign(routes_.size(), nullptr);
      for (auto f = flushes_.begin(); f != flushes_.end();) {
        flush_waiter*& before = earlier_[f->route];
        if (!f->tokens.empty()) {
          before = &*f;
          ++f;
          continue;
        }
        if (before) {
          before->ids.insert(before->ids.end(), f->ids.begin(), f->ids.end());
          before->seen = std::max(before->seen, f->seen);
        } else {
          route_flush_ids_[f->route] -= f->ids.size();
          per_route_[f->route].insert(per_route_[f->route].end(), f->ids.begin(), f->ids.end());
        }
        f = flushes_.erase(f);
      }
      publish_flush_books();
    }
    for (std::size_t r = 0; r < per_route_.size(); ++r) {
      if (per_route_[r].empty())
        continue;
      send_ack(routes_[r], per_route_[r]);
      per_route_[r].clear(); // capacity kept for the next acks
    }
  }

  // persist.ack of `ids` to `route`, at most 4096 ids per envelope.
  void send_ack(const std::vector<std::uint8_t>& route, std::span<const transport::message_id> ids) {
    for (std::size_t i = 0; i < ids.size(); i += 4096) {
      const std::size_t n = std::min<std::size_t>(4096, ids.size() - i);
      out_.id = transport::new_message_id();
      out_.kind = std::string(kind_ack);
      out_.ts_ns = transport::unix_now_ns();
      out_.corr = ids[i];
      out_.hdr.clear();
      out_.body.resize(n * 16);
      for (std::size_t k = 0; k < n; ++k)
        std::memcpy(out_.body.data() + k * 16, ids[i + k].data(), 16);
      if (router_->send(route, out_, std::chrono::milliseconds(100)))
        sh_->stats->acked.fetch_add(n, std::memory_order_relaxed);
    }
  }

  std::shared_ptr<push_shared> sh_;  // first member: the context outlives the sockets below
  std::optional<transport::envelope_socket> router_;
  std::optional<transport::envelope_socket> pub_;
  std::unique_ptr<batch_stage> stage_;
  std::unordered_map<ack_token, waiting> inflight_;
  std::unordered_map<transport::message_id, ack_token, message_id_hash> by_id_;
  ack_token next_token_ = 1;
  bool reading_ = true;
  bool timer_armed_ = false;
  transport::envelope in_, out_;
  std::vector<std::uint8_t> route_;          // routing id of the frame being handled
  std::vector<std::vector<std::uint8_t>> routes_; // producers seen, by index
  std::uint32_t last_route_ = 0;             // index of the previous frame's producer
  std::vector<std::vector<transport::message_id>> per_route_; // acks being sent, by producer
  record rec_;                               // reused: its buffers keep their capacity
  std::vector<ack_token> tokens_;            // swapped with the completion queue
  std::vector<committed_blob> blobs_;
  std::list<flush_waiter> flushes_;          // persist.flush envelopes not acked yet, in order
  std::vector<std::uint64_t> route_seen_;    // by producer: records it sent that wait (re-sends of its own not counted)
  std::vector<std::size_t> route_flush_ids_; // by producer: flush ids waiting
  std::size_t flush_tokens_ = 0;             // records held by waiting flushes (each once)
  std::vector<flush_waiter*> earlier_;       // send_acks: the last waiter seen, by producer
};

} // namespace

result<void> run_push(const engine_options& eopts, storage::blob_client blobs,
                      std::optional<work_table> etl, std::optional<storage::blob_catalog> catalog,
                      const push_options& popts, const std::atomic<bool>& stop, source_stats& stats,
                      std::chrono::milliseconds flush_timeout,
                      const std::function<void(const std::string&)>& on_ready) {
  auto sh = std::make_shared<push_shared>();
  sh->popts = popts;
  sh->stats = &stats;
  sh->on_ready = on_ready;
  // CURVE where producers cross hosts: refuse to start without keys; ZAP before any bind.
  auto curve = push_server_keys(popts.endpoint, popts.curve);
  if (!curve)
    return std::unexpected(curve.error());
  sh->curve = std::move(*curve);
  if (sh->curve) {
    auto zap = start_producer_zap(sh->ctx, popts.curve);
    if (!zap)
      return std::unexpected(zap.error());
    sh->zap = std::move(*zap);
    spdlog::info("persistor: {} is a CURVE server (public key {}); producers admitted from {}",
                 popts.endpoint, sh->curve->public_key, popts.curve.allow_dir);
  }
  // The source actor holds `sh` and `sh` holds the source's ref: break that cycle on every way
  // out, or the actor, its cell and its mailbox are never freed (LeakSanitizer found it).
  struct forget_source {
    push_shared& sh;
    ~forget_source() {
      std::lock_guard lk(sh.m);
      sh.source = {};
    }
  } forget{*sh};
  const bool announce = !popts.committed_endpoint.empty();
  // Engine threads → the source: park the tokens, wake the source once per batch of commits.
  auto eng = engine::start(eopts, std::move(blobs), std::move(etl), std::move(catalog),
                           [sh, announce](const std::vector<ack_token>& t, const committed_blob& c) {
                             actors::actor_ref wake;
                             {
                               std::lock_guard lk(sh->m);
                               sh->tokens.insert(sh->tokens.end(), t.begin(), t.end());
                               if (announce)
                                 sh->blobs.push_back(c);
                               if (!sh->signalled && sh->source) {
                                 sh->signalled = true;
                                 wake = sh->source;
                               }
                             }
                             if (wake)
                               (void)sh->eng->system().tell(wake, acks_ready{});
                           });
  if (!eng)
    return std::unexpected(eng.error());
  sh->eng = eng->get();
  auto esc = std::make_shared<escalation>();
  auto sup = (*eng)->system().spawn<actors::supervisor>(
      {.name = "sources"}, sources_supervisor(esc),
      std::vector{actors::child_spec::of<push_source>({.name = "source", .mailbox = source_mailbox}, sh)});
  if (!sup) {
    std::lock_guard lk(sh->m);
    return fail(errc::invalid_argument, sh->init_error.empty() ? sup.error().message : sh->init_error);
  }
  actors::actor_ref source;
  {
    std::lock_guard lk(sh->m);
    source = sh->source;
  }
  if (auto why = wait_for_stop(stop, *esc)) {
    eng->reset();
    return fail(errc::io, "persistor source keeps failing: " + *why);
  }
  spdlog::info("persistor: stopping, flushing open batches");
  auto& sys = (*eng)->system();
  if (auto s = sys.request<bool>(source, stop_reading{}, flush_timeout).get(); !s)
    spdlog::warn("persistor: stopping the source: {}", s.error().message);
  auto flushed = (*eng)->flush(flush_timeout);
  if (auto d = sys.request<bool>(source, drain{}, std::chrono::seconds(10)).get(); !d)
    spdlog::warn("persistor: sending the last acks: {}", d.error().message);
  eng->reset(); // stops every actor; the ROUTER lingers up to 2 s to deliver the last acks
  if (!flushed)
    return flushed;
  return {};
}

} // namespace shoal::workers::persistor
