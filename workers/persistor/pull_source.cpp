// The persistor's pull source: pullers that read a storage queue with a randomized back-off
// when it is empty, and a deleter that removes the messages whose blob is committed.
#include "workers/persistor/sources_internal.hpp"


#include "actors/supervisor.hpp"
#include "storage/backoff.hpp"
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

// -- pull -----------------------------------------------------------------------------------------

struct receipt {
  std::string message_id;
  std::string pop_receipt;
};

struct pull_shared {
  pull_options popts;
  storage::queue_client queues;
  source_stats* stats = nullptr;
  engine* eng = nullptr;            // set before the actors are spawned
  std::atomic<bool> reading{true};
  std::uint32_t deleters = 1;
  std::mutex m;                     // guards receipts, next
  std::unordered_map<ack_token, receipt> receipts;
  ack_token next = 1;
  std::atomic<std::uint64_t> rr{0}; // round robin over deleters
  slot_table<std::vector<receipt>> to_delete;

  explicit pull_shared(storage::queue_client q) : queues(std::move(q)) {}

  // Moves a message whose receive count passed max_dequeue to the poison queue, with why.
  void poison(const storage::queue_message& m) {
    std::string reason;
    auto rec = record_from_queue_text(m.text, popts.default_dest, popts.event_time_field);
    if (m.undecodable)
      reason = "message text is not valid base64";
    else if (!rec)
      reason = rec.error().message;
    else
      reason = "no blob committed after being received " + std::to_string(m.dequeue_count) + " times";
    reason = "dequeued " + std::to_string(m.dequeue_count) + " times (max_dequeue " +
             std::to_string(popts.max_dequeue) + "): " + reason;
    nlohmann::json j = {{"reason", reason},
                        {"queue", popts.queue},
                        {"message_id", m.message_id},
                        {"dequeue_count", m.dequeue_count},
                        {"text", m.text.substr(0, 32 * 1024)}};
    auto put = queues.put_message(popts.poison_queue,
                                  j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    if (!put) {
      spdlog::warn("persistor: parking poison message {}: {}", m.message_id, put.error().describe());
      return; // it stays in the queue and is tried again
    }
    if (auto d = queues.delete_message(popts.queue, m.message_id, m.pop_receipt); !d)
      spdlog::warn("persistor: deleting poison message {}: {}", m.message_id, d.error().describe());
    stats->poisoned.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("persistor: message {} parked in {}: {}", m.message_id, popts.poison_queue, reason);
  }

  // The engine's commit path: the receipts of the committed tokens go to the deleters, split
  // evenly (each delete is one request).
  void committed(const std::vector<ack_token>& tokens) {
    std::vector<receipt> done;
    {
      std::lock_guard lk(m);
      for (ack_token k : tokens) {
        auto it = receipts.find(k);
        if (it == receipts.end())
          continue;
        done.push_back(std::move(it->second));
        receipts.erase(it);
      }
    }
    if (done.empty())
      return;
    const std::size_t parts = std::min<std::size_t>(deleters, done.size());
    const std::size_t per = (done.size() + parts - 1) / parts;
    for (std::size_t off = 0; off < done.size(); off += per) {
      std::vector<receipt> chunk(std::make_move_iterator(done.begin() + static_cast<std::ptrdiff_t>(off)),
                                 std::make_move_iterator(done.begin() + static_cast<std::ptrdiff_t>(std::min(off + per, done.size()))));
      const std::uint64_t id = to_delete.put(std::move(chunk));
      const auto k = rr.fetch_add(1, std::memory_order_relaxed) % deleters;
      auto ref = eng->system().lookup("deleter-" + std::to_string(k));
      if (!ref || !eng->system().tell(*ref, delete_receipts{id}))
        (void)to_delete.take(id); // stopping: the messages reappear and are stored again
    }
  }
};

// One puller: gets up to 32 messages at a time and submits them to the engine (whose batcher
// actor batches them with the other pullers' records), with blocking queue I/O on its thread.
class puller_actor final : public actors::actor {
public:
  puller_actor(actors::actor_config& cfg, std::shared_ptr<pull_shared> sh) : actor(cfg), sh_(std::move(sh)) {}

protected:
  actors::result<void> init() override {
    go_.count = storage::max_messages_per_get;
    go_.visibility_timeout = sh_->popts.visibility_timeout;
    if (auto t = tell(self(), poll_tick{}); !t)
      return std::unexpected(t.error());
    return {};
  }
  actors::behavior make_behavior() override {
    return {
        [this](const poll_tick&) { pull(); },
        [this](const wake_up&) {
          if (empty_gets_ == 0)
            return; // not backing off: already pulling
          empty_gets_ = 0;
          ++generation_; // the pending back-off timer no longer pulls
          pull();
        },
        [this](const stop_reading&) -> bool { return true; }, // queued behind the current get
    };
  }

private:
  void again_in(std::chrono::milliseconds d) {
    start_timer(d, [this, g = generation_] {
      if (g == generation_)
        pull();
    });
  }
  // After an empty get: the next wait of the randomized exponential back-off, storage's one
  // backoff policy (storage/backoff.hpp) from idle_poll_min, capped at idle_poll_max, ±50 %.
  std::chrono::milliseconds next_idle_wait() {
    const auto& po = sh_->popts;
    const storage::backoff_policy policy{.base_delay = po.idle_poll_min, .max_delay = po.idle_poll_max,
                                         .jitter = 0.5};
    const auto wait = storage::backoff_delay(policy, ++empty_gets_, storage::backoff_random_unit());
    return std::max(wait, std::chrono::milliseconds(1));
  }
  // Messages after a quiet spell: the other pullers are probably backing off; wake them.
  void wake_siblings() {
    for (std::uint32_t i = 0; i < sh_->popts.pullers; ++i) {
      auto ref = sys().lookup("puller-" + std::to_string(i));
      if (ref && *ref != self())
        (void)tell(*ref, wake_up{});
    }
  }
  void pull() {
    if (!sh_->reading.load(std::memory_order_relaxed))
      return;
    const auto& popts = sh_->popts;
    source_stats& stats = *sh_->stats;
    if (sh_->eng->saturated()) {
      stats.paused_ms.fetch_add(5, std::memory_order_relaxed);
      return again_in(std::chrono::milliseconds(5));
    }
    auto got = sh_->queues.get_messages(popts.queue, go_);
    if (!got) {
      spdlog::warn("persistor: reading queue {}: {}", popts.queue, got.error().describe());
      return again_in(std::chrono::milliseconds(500));
    }
    if (got->empty()) {
      stats.empty_gets.fetch_add(1, std::memory_order_relaxed);
      return again_in(next_idle_wait());
    }
    if (empty_gets_ != 0) {
      empty_gets_ = 0;
      wake_siblings();
    }
    for (auto& m : *got) {
      if (m.dequeue_count > popts.max_dequeue) {
        sh_->poison(m);
        continue;
      }
      auto rec = m.undecodable ? result<record>(workers::fail(errc::invalid_argument, "not base64"))
                               : record_from_queue_text(m.text, popts.default_dest, popts.event_time_field);
      if (!rec) {
        // Left in the queue to come back soon; after max_dequeue tries it is parked.
        stats.rejected.fetch_add(1, std::memory_order_relaxed);
        storage::update_message_options uo;
        uo.visibility_timeout = std::chrono::seconds(1);
        (void)sh_->queues.update_message(popts.queue, m.message_id, m.pop_receipt, uo);
        continue;
      }
      stats.received.fetch_add(1, std::memory_order_relaxed);
      if (rec->message_id.empty())
        rec->message_id = m.message_id;
      rec->producer = "queue:" + popts.queue;
      rec->properties["queue_message_id"] = m.message_id;
      rec->properties["dequeue_count"] = std::to_string(m.dequeue_count);
      ack_token tok = 0;
      {
        std::lock_guard lk(sh_->m);
        tok = sh_->next++;
        sh_->receipts.emplace(tok, receipt{m.message_id, m.pop_receipt});
      }
      if (auto sub = sh_->eng->submit(*rec, tok); !sub) {
        {
          std::lock_guard lk(sh_->m);
          sh_->receipts.erase(tok);
        }
        if (sub.error().code == errc::invalid_argument) {
          // A record that can never be stored (ndjson payload nested too deep): back soon, then
          // parked in the poison queue after max_dequeue tries, like an undecodable one.
          stats.rejected.fetch_add(1, std::memory_order_relaxed);
          storage::update_message_options uo;
          uo.visibility_timeout = std::chrono::seconds(1);
          (void)sh_->queues.update_message(popts.queue, m.message_id, m.pop_receipt, uo);
        }
      }
    }
    (void)tell(self(), poll_tick{});
  }
  std::shared_ptr<pull_shared> sh_;
  storage::get_messages_options go_;
  int empty_gets_ = 0; // empty gets in a row: the back-off's attempt number; 0 = not backing off
  std::uint64_t generation_ = 0;            // bumped by wake_up: stale back-off timers do nothing
};

// Deletes committed queue messages (one request each) on its own thread.
class deleter_actor final : public actors::actor {
public:
  deleter_actor(actors::actor_config& cfg, std::shared_ptr<pull_shared> sh) : actor(cfg), sh_(std::move(sh)) {}

protected:
  actors::behavior make_behavior() override {
    return {
        [this](const delete_receipts& m) {
          auto rs = sh_->to_delete.take(m.slot);
          if (!rs)
            return;
          for (const auto& r : *rs) {
            auto d = sh_->queues.delete_message(sh_->popts.queue, r.message_id, r.pop_receipt);
            if (d || d.error().code == storage::errc::not_found)
              sh_->stats->acked.fetch_add(1, std::memory_order_relaxed);
            else
              // Stale receipt (it became visible again and was received anew): it will be
              // stored again and deleted then; at-least-once.
              spdlog::warn("persistor: deleting queue message {}: {}", r.message_id, d.error().describe());
          }
        },
        [](const drain&) -> bool { return true; }, // queued behind every delete before it
    };
  }

private:
  std::shared_ptr<pull_shared> sh_;
};

} // namespace

result<record> record_from_queue_text(std::string_view text, std::string_view default_dest,
                                      std::string_view event_time_field) {
  record r;
  r.ingest_time = now_ms();
  r.dest = std::string(default_dest);
  // `data` is re-serialized with nlohmann's recursive dump: bound the nesting first.
  if (auto deep = check_json_depth(text, "queue message"); !deep)
    return fail(errc::invalid_argument, deep.error().message);
  auto j = nlohmann::json::parse(text, nullptr, false);
  std::string explicit_time;
  bool has_time = false;
  if (!j.is_discarded() && j.is_object() && j.contains("data")) {
    const auto& d = j["data"];
    r.payload = d.is_string() ? d.get<std::string>() : d.dump();
    if (j.contains("dest")) {
      if (!j["dest"].is_string())
        return fail(errc::invalid_argument, "queue message: \"dest\" must be a string");
      r.dest = j["dest"].get<std::string>();
    }
    if (j.contains("id") && j["id"].is_string())
      r.message_id = j["id"].get<std::string>();
    if (j.contains("event_time")) {
      const auto& e = j["event_time"];
      explicit_time = e.is_string() ? e.get<std::string>() : e.dump();
      has_time = true;
    }
  } else {
    r.payload = std::string(text);
  }
  if (auto v = validate_dest(r.dest); !v)
    return fail(errc::invalid_argument, "queue message: " + v.error().message);
  set_event_time(r, has_time ? &explicit_time : nullptr, event_time_field);
  return r;
}

result<void> run_pull(const engine_options& eopts, storage::blob_client blobs,
                      storage::queue_client queues, std::optional<work_table> etl,
                      std::optional<storage::blob_catalog> catalog, const pull_options& popts,
                      const std::atomic<bool>& stop, source_stats& stats,
                      std::chrono::milliseconds flush_timeout) {
  for (const std::string& q : {popts.queue, popts.poison_queue}) {
    auto c = queues.create_queue(q);
    if (!c)
      return std::unexpected(error::from_storage(c.error(), "creating queue " + q));
  }
  auto sh = std::make_shared<pull_shared>(std::move(queues));
  sh->popts = popts;
  sh->stats = &stats;
  // Deletes are one request per message: more of them in flight than gets.
  sh->deleters = std::max<std::uint32_t>(popts.pullers * 4, 8);
  auto eng = engine::start(eopts, std::move(blobs), std::move(etl), std::move(catalog),
                           [sh](const std::vector<ack_token>& t, const committed_blob&) { sh->committed(t); });
  if (!eng)
    return std::unexpected(eng.error());
  sh->eng = eng->get();
  std::vector<actors::child_spec> children;
  for (std::uint32_t i = 0; i < sh->deleters; ++i)
    children.push_back(actors::child_spec::of<deleter_actor>(
        {.name = "deleter-" + std::to_string(i), .mailbox = source_mailbox}, sh));
  for (std::uint32_t i = 0; i < popts.pullers; ++i)
    children.push_back(actors::child_spec::of<puller_actor>(
        {.name = "puller-" + std::to_string(i), .mailbox = source_mailbox}, sh));
  auto esc = std::make_shared<escalation>();
  auto& sys = (*eng)->system();
  auto sup = sys.spawn<actors::supervisor>({.name = "sources"}, sources_supervisor(esc), std::move(children));
  if (!sup)
    return fail(errc::io, "persistor pullers: " + sup.error().message);
  if (auto why = wait_for_stop(stop, *esc)) {
    eng->reset();
    return fail(errc::io, "persistor pullers keep failing: " + *why);
  }
  sh->reading.store(false);
  // Each puller answers once its current get is submitted.
  for (std::uint32_t i = 0; i < popts.pullers; ++i)
    if (auto p = sys.lookup("puller-" + std::to_string(i)))
      (void)sys.request<bool>(*p, stop_reading{}, flush_timeout).get();
  spdlog::info("persistor: stopping, flushing open batches");
  auto flushed = (*eng)->flush(flush_timeout);
  for (std::uint32_t i = 0; i < sh->deleters; ++i)
    if (auto d = sys.lookup("deleter-" + std::to_string(i)))
      (void)sys.request<bool>(*d, drain{}, flush_timeout).get();
  eng->reset();
  if (!flushed)
    return flushed;
  return {};
}

} // namespace shoal::workers::persistor
