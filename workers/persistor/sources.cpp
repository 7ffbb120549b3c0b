#include "workers/persistor/sources.hpp"

#include "transport/socket.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace shoal::workers::persistor {
namespace {

unix_ms now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::uint64_t unix_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

// Fills r.event_time from an explicit text or a payload field; falls back to the ingest time
// and records why in the properties (the record is never refused for its time).
void set_event_time(record& r, const std::string* explicit_time, std::string_view field) {
  r.event_time = r.ingest_time;
  if (explicit_time) {
    if (auto t = parse_event_time(*explicit_time))
      r.event_time = *t;
    else
      r.properties["event_time_error"] = t.error().message;
  } else if (!field.empty()) {
    if (auto t = event_time_of(r.payload, field))
      r.event_time = *t;
    else
      r.properties["event_time_error"] = t.error().message;
  }
}

// What the engine hands back to the push loop.
struct completion_queue {
  std::mutex m;
  std::vector<ack_token> tokens;
  std::vector<committed_blob> blobs;
};

nlohmann::json committed_json(const committed_blob& c) {
  return {{"container", c.container}, {"blob", c.name},
          {"dest", c.dest},           {"date", c.date},
          {"host", c.host},           {"format", std::string(to_string(c.format))},
          {"record_count", c.summary.record_count},
          {"first_event_time", format_time(c.summary.first_event_time)},
          {"last_event_time", format_time(c.summary.last_event_time)},
          {"bytes", c.bytes},         {"append", c.append}};
}

} // namespace

result<record> record_from_queue_text(std::string_view text, std::string_view default_dest,
                                      std::string_view event_time_field) {
  record r;
  r.ingest_time = now_ms();
  r.dest = std::string(default_dest);
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

result<void> run_push(const engine_options& eopts, storage::blob_client blobs,
                      std::optional<work_table> etl, std::optional<storage::blob_catalog> catalog,
                      const push_options& popts, const std::atomic<bool>& stop, source_stats& stats,
                      std::chrono::milliseconds flush_timeout,
                      const std::function<void(const std::string&)>& on_ready) {
  zmq::context_t ctx(1);
  transport::socket_options so;
  so.receive_hwm = popts.receive_hwm;
  so.send_hwm = 100'000;
  so.router_mandatory = true;
  so.linger = std::chrono::milliseconds(2000);
  auto router = transport::envelope_socket::make(ctx, zmq::socket_type::router, so);
  if (!router)
    return fail(errc::invalid_argument, "persistor socket: " + router.error().describe());
  if (auto b = router->bind(popts.endpoint); !b)
    return fail(errc::invalid_argument, "binding " + popts.endpoint + ": " + b.error().describe());
  std::optional<transport::envelope_socket> pub;
  if (!popts.committed_endpoint.empty()) {
    auto p = transport::envelope_socket::make(ctx, zmq::socket_type::pub, so);
    if (!p)
      return fail(errc::invalid_argument, "committed socket: " + p.error().describe());
    if (auto b = p->bind(popts.committed_endpoint); !b)
      return fail(errc::invalid_argument,
                  "binding " + popts.committed_endpoint + ": " + b.error().describe());
    pub.emplace(std::move(*p));
  }

  completion_queue cq;
  const bool announce = pub.has_value();
  auto eng = engine::start(eopts, std::move(blobs), std::move(etl), std::move(catalog),
                           [&cq, announce](const std::vector<ack_token>& t, const committed_blob& c) {
                             std::lock_guard lk(cq.m);
                             cq.tokens.insert(cq.tokens.end(), t.begin(), t.end());
                             if (announce)
                               cq.blobs.push_back(c);
                           });
  if (!eng)
    return std::unexpected(eng.error());
  if (on_ready)
    on_ready(router->last_endpoint());

  struct waiting {
    transport::message_id id;
    std::vector<std::vector<std::uint8_t>> routes;
  };
  std::unordered_map<ack_token, waiting> inflight;
  std::unordered_map<std::string, ack_token> by_id; // 16 id bytes → token
  ack_token next_token = 1;

  transport::envelope out;
  out.from = popts.address;
  auto send_acks = [&] {
    std::vector<ack_token> tokens;
    std::vector<committed_blob> done_blobs;
    {
      std::lock_guard lk(cq.m);
      tokens.swap(cq.tokens);
      done_blobs.swap(cq.blobs);
    }
    for (const auto& c : done_blobs) {
      transport::envelope e;
      e.id = transport::new_message_id();
      e.kind = std::string(kind_committed);
      e.from = popts.address;
      e.ts_ns = unix_ns();
      e.hdr["ct"] = "application/json";
      const std::string body = committed_json(c).dump();
      e.body.assign(body.begin(), body.end());
      (void)pub->send(e); // drops are counted by the socket; the work table is the fallback
    }
    if (tokens.empty())
      return;
    std::map<std::vector<std::uint8_t>, std::vector<transport::message_id>> per_route;
    for (ack_token t : tokens) {
      auto it = inflight.find(t);
      if (it == inflight.end())
        continue;
      for (auto& r : it->second.routes)
        per_route[r].push_back(it->second.id);
      by_id.erase(std::string(it->second.id.begin(), it->second.id.end()));
      inflight.erase(it);
    }
    for (auto& [route, ids] : per_route) {
      for (std::size_t i = 0; i < ids.size(); i += 4096) {
        const std::size_t n = std::min<std::size_t>(4096, ids.size() - i);
        out.id = transport::new_message_id();
        out.kind = std::string(kind_ack);
        out.ts_ns = unix_ns();
        out.corr = ids[i];
        out.hdr.clear();
        out.body.resize(n * 16);
        for (std::size_t k = 0; k < n; ++k)
          std::memcpy(out.body.data() + k * 16, ids[i + k].data(), 16);
        if (router->send(route, out, std::chrono::milliseconds(100)))
          stats.acked.fetch_add(n, std::memory_order_relaxed);
      }
    }
  };

  transport::envelope in;
  std::vector<std::uint8_t> route;
  while (!stop.load(std::memory_order_relaxed)) {
    send_acks();
    if ((*eng)->saturated()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      stats.paused_ms.fetch_add(2, std::memory_order_relaxed);
      continue;
    }
    for (int burst = 0; burst < 2000; ++burst) {
      auto got = router->receive(in, std::chrono::milliseconds(burst == 0 ? 2 : 0), &route);
      if (!got) {
        if (got.error().code == transport::errc::timeout)
          break;
        stats.bad_frames.fetch_add(1, std::memory_order_relaxed);
        continue; // counted by the socket too; the frame is gone, the producer will re-send
      }
      if (in.kind != kind_record) {
        stats.bad_frames.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      stats.received.fetch_add(1, std::memory_order_relaxed);
      const std::string key(in.id.begin(), in.id.end());
      if (auto it = by_id.find(key); it != by_id.end()) {
        stats.duplicates.fetch_add(1, std::memory_order_relaxed);
        auto& routes = inflight[it->second].routes;
        if (std::find(routes.begin(), routes.end(), route) == routes.end())
          routes.push_back(route);
        continue;
      }
      record r;
      r.message_id = transport::to_hex(in.id);
      r.producer = in.from;
      r.ingest_time = now_ms();
      r.payload.assign(in.body.begin(), in.body.end());
      const std::string* explicit_time = nullptr;
      std::string field = popts.event_time_field;
      for (const auto& [k, v] : in.hdr) {
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
      const ack_token tok = next_token++;
      auto sub = (*eng)->submit(r, tok);
      if (!sub) {
        stats.rejected.fetch_add(1, std::memory_order_relaxed);
        transport::envelope rej;
        rej.id = transport::new_message_id();
        rej.kind = std::string(kind_reject);
        rej.from = popts.address;
        rej.ts_ns = unix_ns();
        rej.corr = in.id;
        const std::string why = sub.error().message;
        rej.body.assign(why.begin(), why.end());
        (void)router->send(route, rej, std::chrono::milliseconds(100));
        continue;
      }
      inflight.emplace(tok, waiting{in.id, {route}});
      by_id.emplace(key, tok);
    }
  }
  spdlog::info("persistor: stopping, flushing open batches");
  auto flushed = (*eng)->flush(flush_timeout);
  send_acks();
  eng->reset();
  if (!flushed)
    return flushed;
  return {};
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
  struct receipt {
    std::string message_id;
    std::string pop_receipt;
  };
  struct shared_state {
    std::mutex m;
    std::condition_variable cv;
    std::unordered_map<ack_token, receipt> receipts;
    std::deque<receipt> to_delete;
    ack_token next = 1;
    bool deleters_stop = false;
  } st;

  auto eng = engine::start(eopts, std::move(blobs), std::move(etl), std::move(catalog),
                           [&st](const std::vector<ack_token>& t, const committed_blob&) {
                             std::lock_guard lk(st.m);
                             for (ack_token k : t) {
                               auto it = st.receipts.find(k);
                               if (it == st.receipts.end())
                                 continue;
                               st.to_delete.push_back(std::move(it->second));
                               st.receipts.erase(it);
                             }
                             st.cv.notify_all();
                           });
  if (!eng)
    return std::unexpected(eng.error());
  engine& e = **eng;

  auto deleter = [&] {
    while (true) {
      receipt r;
      {
        std::unique_lock lk(st.m);
        st.cv.wait(lk, [&] { return st.deleters_stop || !st.to_delete.empty(); });
        if (st.to_delete.empty())
          return;
        r = std::move(st.to_delete.front());
        st.to_delete.pop_front();
      }
      auto d = queues.delete_message(popts.queue, r.message_id, r.pop_receipt);
      if (d || d.error().code == storage::errc::not_found)
        stats.acked.fetch_add(1, std::memory_order_relaxed);
      else
        // Stale receipt (it became visible again and was received anew): it will be stored
        // again and deleted then; at-least-once.
        spdlog::warn("persistor: deleting queue message {}: {}", r.message_id, d.error().describe());
    }
  };

  auto poison = [&](const storage::queue_message& m) {
    std::string reason;
    auto rec = record_from_queue_text(m.text, popts.default_dest, popts.event_time_field);
    if (m.undecodable)
      reason = "message text is not valid base64";
    else if (!rec)
      reason = rec.error().message;
    else
      reason = "no blob committed after being received " + std::to_string(m.dequeue_count) +
               " times";
    reason = "dequeued " + std::to_string(m.dequeue_count) + " times (max_dequeue " +
             std::to_string(popts.max_dequeue) + "): " + reason;
    nlohmann::json j = {{"reason", reason},
                        {"queue", popts.queue},
                        {"message_id", m.message_id},
                        {"dequeue_count", m.dequeue_count},
                        {"text", m.text.substr(0, 32 * 1024)}};
    auto put = queues.put_message(popts.poison_queue, j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    if (!put) {
      spdlog::warn("persistor: parking poison message {}: {}", m.message_id, put.error().describe());
      return; // it stays in the queue and is tried again
    }
    if (auto d = queues.delete_message(popts.queue, m.message_id, m.pop_receipt); !d)
      spdlog::warn("persistor: deleting poison message {}: {}", m.message_id, d.error().describe());
    stats.poisoned.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("persistor: message {} parked in {}: {}", m.message_id, popts.poison_queue, reason);
  };

  auto puller = [&] {
    storage::get_messages_options go;
    go.count = storage::max_messages_per_get;
    go.visibility_timeout = popts.visibility_timeout;
    while (!stop.load(std::memory_order_relaxed)) {
      if (e.saturated()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        stats.paused_ms.fetch_add(5, std::memory_order_relaxed);
        continue;
      }
      auto got = queues.get_messages(popts.queue, go);
      if (!got) {
        spdlog::warn("persistor: reading queue {}: {}", popts.queue, got.error().describe());
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        continue;
      }
      if (got->empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      for (auto& m : *got) {
        if (m.dequeue_count > popts.max_dequeue) {
          poison(m);
          continue;
        }
        auto rec = m.undecodable ? result<record>(fail(errc::invalid_argument, "not base64"))
                                 : record_from_queue_text(m.text, popts.default_dest,
                                                          popts.event_time_field);
        if (!rec) {
          // Left in the queue to come back soon; after max_dequeue tries it is parked.
          stats.rejected.fetch_add(1, std::memory_order_relaxed);
          storage::update_message_options uo;
          uo.visibility_timeout = std::chrono::seconds(1);
          (void)queues.update_message(popts.queue, m.message_id, m.pop_receipt, uo);
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
          std::lock_guard lk(st.m);
          tok = st.next++;
          st.receipts.emplace(tok, receipt{m.message_id, m.pop_receipt});
        }
        if (!e.submit(*rec, tok)) {
          std::lock_guard lk(st.m);
          st.receipts.erase(tok);
        }
      }
    }
  };

  std::vector<std::thread> threads;
  for (std::uint32_t i = 0; i < popts.pullers; ++i)
    threads.emplace_back(puller);
  std::vector<std::thread> deleters;
  // Deletes are one request per message: more of them in flight than gets.
  for (std::uint32_t i = 0; i < std::max<std::uint32_t>(popts.pullers * 4, 8); ++i)
    deleters.emplace_back(deleter);
  for (auto& t : threads)
    t.join();
  spdlog::info("persistor: stopping, flushing open batches");
  auto flushed = e.flush(flush_timeout);
  {
    std::lock_guard lk(st.m);
    st.deleters_stop = true;
  }
  st.cv.notify_all();
  for (auto& t : deleters)
    t.join();
  eng->reset();
  if (!flushed)
    return flushed;
  return {};
}

} // namespace shoal::workers::persistor
