#pragma once
// Private to workers/persistor (engine.cpp, engine_write.cpp, engine_register.cpp,
// engine_actors.cpp): the engine's shared state (engine::impl) and the messages between its
// actors. Not part of the persistor's interface; include it from nowhere else.

#include "actors/supervisor.hpp"
#include "storage/backoff.hpp"
#include "workers/persistor/engine.hpp"
#include "workers/persistor/slot_table.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace shoal::workers::persistor {
namespace detail {

/// Milliseconds of the steady clock (the batches' seal deadlines).
inline std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// -- messages between the engine's actors (process-local; bodies are slot ids) -------------------

struct batch_sealed { // → batcher: a sealed batch waits in the batch slots
  static constexpr std::string_view kind = "persistor.batch_sealed";
  std::uint64_t slot = 0;
  MSGPACK_DEFINE(slot);
};
struct writer_idle { // → batcher: writer `index` can take a batch
  static constexpr std::string_view kind = "persistor.writer_idle";
  std::uint32_t index = 0;
  MSGPACK_DEFINE(index);
};
struct inbox_ready { // → batcher: engine::submit queued records in the inbox
  static constexpr std::string_view kind = "persistor.inbox_ready";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};
struct flush_open { // → batcher (request, reply bool): seal every open batch now
  static constexpr std::string_view kind = "persistor.flush_open";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};
struct write_batch { // → writer: write the batch in this slot
  static constexpr std::string_view kind = "persistor.write_batch";
  std::uint64_t slot = 0;
  MSGPACK_DEFINE(slot);
};
struct catalog_entry { // → registrar: a committed blob (pending_ack slot) wants its registrations
  static constexpr std::string_view kind = "persistor.catalog_entry";
  std::uint64_t slot = 0;
  MSGPACK_DEFINE(slot);
};
struct catalog_flush { // registrar → itself: register everything collected so far
  static constexpr std::string_view kind = "persistor.catalog_flush";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};

// A committed blob on its way to the ack (and its registrations).
struct pending_ack {
  committed_blob blob;
  std::vector<ack_token> tokens;
  std::uint64_t body_bytes = 0; // counted in queued_bytes until acked
  bool acked = false;           // acked before its catalog entry (catalog_before_ack off)
};

constexpr std::size_t max_stages = 64;
inline constexpr const char* batcher_name = "batcher";
inline constexpr const char* registrar_name = "registrar";
inline std::string writer_name(std::uint32_t i) { return "writer-" + std::to_string(i); }

} // namespace detail

struct engine::impl {
  engine_options opts;
  storage::blob_client blobs;
  std::optional<work_table> etl;
  std::optional<storage::blob_catalog> catalog;
  commit_fn on_commit;
  engine_stats stats;

  std::atomic<bool> stopping{false};
  std::mutex stop_m;               // backoff sleeps wake on stop
  std::condition_variable stop_cv;

  // Bytes held, for saturated(): sealed-not-acked batches, plus each stage's open batches
  // (one counter per stage, written only by its owner).
  std::atomic<std::uint64_t> queued_bytes{0};
  struct alignas(64) padded_counter {
    std::atomic<std::uint64_t> v{0};
  };
  std::array<padded_counter, detail::max_stages> stage_bytes{};
  std::atomic<std::size_t> stages{0};

  // flush(): sealed records not yet acked, blobs not yet registered (ETL record, catalog).
  std::mutex idle_m;
  std::condition_variable idle_cv;
  std::uint64_t inflight_records = 0;
  std::uint64_t uncatalogued = 0; // blobs handed to the registrar and not through it yet

  slot_table<batch> batch_slots;
  slot_table<detail::pending_ack> ack_slots;

  // engine::submit's inbox, drained by the batcher actor into its own stage.
  std::mutex inbox_m;
  std::vector<std::pair<record, ack_token>> inbox;
  bool inbox_signalled = false;
  std::unique_ptr<batch_stage> own_stage; // used only on the batcher actor's thread

  std::array<std::atomic<std::uint64_t>, 4> fault_counts{}; // per fault_point

  std::mutex seq_m;               // the sequence counter
  std::uint64_t seq_next = 0;
  std::uint64_t seq_limit = 0;

  struct append_state {
    std::mutex m;
    std::string name;             // empty: none open
    std::uint64_t offset = 0;
    std::uint32_t blocks = 0;
    batch_summary summary;
    std::string dest, partition;
  };
  std::mutex append_m;
  std::map<std::pair<std::string, std::string>, std::shared_ptr<append_state>> appends;

  actors::actor_ref batcher_ref;
  // Last member: destroyed first, so no actor outlives the state above.
  std::unique_ptr<actors::actor_system> sys;

  impl(engine_options o, storage::blob_client bc, std::optional<work_table> e,
       std::optional<storage::blob_catalog> c, commit_fn f)
      : opts(std::move(o)), blobs(std::move(bc)), etl(std::move(e)), catalog(std::move(c)),
        on_commit(std::move(f)) {}

  std::string counter_blob() const { return "_shoal/seq/" + opts.host + "-" + opts.name; }
  // Markers of this persistor's open (unregistered) append blobs: prefix + blob name.
  std::string marker_prefix() const { return "_shoal/open/" + opts.host + "-" + opts.name + "/"; }

  void fault(fault_point p) {
    if (!opts.fault)
      return;
    const auto n = fault_counts[static_cast<std::size_t>(p)].fetch_add(1) + 1;
    opts.fault(p, n);
  }

  std::uint64_t held_bytes() const {
    std::uint64_t h = queued_bytes.load(std::memory_order_relaxed);
    const std::size_t n = stages.load(std::memory_order_acquire);
    for (std::size_t i = 0; i < n; ++i)
      h += stage_bytes[i].v.load(std::memory_order_relaxed);
    return h;
  }

  // Hands sealed batches to the batcher actor (by slot), counting them as in flight first.
  void dispatch(std::vector<batch>&& sealed);

  // A writer threw while writing `b`: hands the batch back to the batcher, which gives it to
  // the next idle writer. Its records stay counted in flight. Nothing to do when the tokens
  // were already handed on (acked, or queued for the registrar).
  void requeue(batch&& b, std::string_view writer, std::string_view why);

  // Sleeps up to `d` unless the engine stops. True when stopping.
  bool backoff(std::chrono::milliseconds d) {
    std::unique_lock lk(stop_m);
    return stop_cv.wait_for(lk, d, [&] { return stopping.load(); });
  }

  // The waits of one retry loop: storage's backoff policy (storage/backoff.hpp) from 200 ms,
  // doubling to 10 s, with ±20 % jitter. next() is the wait after the next failed attempt.
  struct retry_backoff {
    int attempt = 0;
    std::chrono::milliseconds next() {
      static constexpr storage::backoff_policy policy{.base_delay = std::chrono::milliseconds(200),
                                                      .max_delay = std::chrono::milliseconds(10'000),
                                                      .jitter = 0.2};
      return storage::backoff_delay(policy, ++attempt, storage::backoff_random_unit());
    }
  };

  // Calls f() until it succeeds, waiting retry_backoff between attempts. False when the engine
  // stopped before.
  template <class F> bool retry_until_ok(const char* what, const std::string& blob, F&& f) {
    retry_backoff retry;
    while (true) {
      auto r = f();
      if (r)
        return true;
      stats.write_retries.fetch_add(1, std::memory_order_relaxed);
      const auto delay = retry.next();
      spdlog::warn("persistor: {} {} failed, retrying in {} ms: {}", what, blob, delay.count(),
                   r.error().describe());
      if (backoff(delay))
        return false;
    }
  }

  static storage::blob_catalog_entry catalog_entry_of(const committed_blob& c);

  // Both registrations, retried until done. False when stopped before.
  bool register_fully(const committed_blob& c);

  // Hands a durable, registered batch back to the source and releases what it held.
  void finish(detail::pending_ack& p);

  // Reserves the next block of sequence numbers: read the counter blob, write it + reserve with
  // If-Match (or create-only), retrying on a lost race. Caller holds seq_m.
  result<void> reserve_seq();

  result<std::uint64_t> next_seq();

  // The ETL record of a committed blob (idempotent: an existing id is left as it is).
  result<void> register_etl(const committed_blob& c);

  // The ETL records of several committed blobs in one work_table::enqueue call (one entity
  // group transaction per shard partition, ≤ 100 records each; idempotent like the single one).
  result<void> register_etl_many(std::span<const detail::pending_ack> blobs);

  // The catalog entry of a committed blob (idempotent for the same entry).
  result<void> register_in_catalog(const committed_blob& c);

  committed_blob describe(const batch& bt, std::string name) const;

  std::string content_type() const;

  // Block mode: one create-only blob per batch. False when stopped before success.
  bool write_block(const batch& bt, committed_blob& out);

  // Closes an append blob: writes its totals as metadata and registers it. Caller holds s.m.
  void roll_append(append_state& s);

  // Append mode: append the batch to the open append blob of its partition, rolling first when
  // the block or size cap would be passed. False when stopped before success.
  bool write_append(const batch& bt, committed_blob& out);

  // Registers the append blobs a crashed run of this persistor left open: each marker names one.
  // The blob's totals are recounted from its records (the run died before writing them), then
  // the blob is registered and the marker deleted. Idempotent: a crash in here repeats it.
  // Runs in start(), before any thread. Errors: storage (the start fails; nothing is lost).
  result<void> recover_open_appends();

  void roll_all_appends();

  // Writes one sealed batch, registers it and acks it (or hands it to the registrar, which
  // does). Runs on a writer actor's thread. False when the engine stopped before: the batch is
  // abandoned unacked (its sources redeliver). If it throws before the batch's tokens were
  // acked or handed to the registrar, `bt` still holds the whole batch (requeue() it).
  bool write_one(batch& bt);
};

namespace detail {

/// The engine's actors for `e`, in start order: the registrar (when there is an ETL queue or a
/// catalog), the batcher and opts.writers writers (engine_actors.cpp).
std::vector<actors::child_spec> engine_actor_specs(engine::impl* e);

} // namespace detail
} // namespace shoal::workers::persistor
