#include "workers/persistor/engine.hpp"

#include "actors/supervisor.hpp"
#include "workers/blob_format.hpp"
#include "workers/persistor/slot_table.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <unistd.h>
#include <unordered_map>

namespace shoal::workers::persistor {
namespace {

std::int64_t steady_ms() {
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
constexpr const char* batcher_name = "batcher";
constexpr const char* registrar_name = "registrar";
std::string writer_name(std::uint32_t i) { return "writer-" + std::to_string(i); }

} // namespace

std::string local_host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0')
    return "localhost";
  std::string out;
  for (const char* p = buf; *p != '\0' && *p != '.'; ++p)
    if (std::isalnum(static_cast<unsigned char>(*p)) || *p == '-')
      out += *p;
  return out.empty() ? "localhost" : out;
}

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
  std::array<padded_counter, max_stages> stage_bytes{};
  std::atomic<std::size_t> stages{0};

  // flush(): sealed records not yet acked, blobs not yet registered (ETL record, catalog).
  std::mutex idle_m;
  std::condition_variable idle_cv;
  std::uint64_t inflight_records = 0;
  std::uint64_t uncatalogued = 0; // blobs handed to the registrar and not through it yet

  slot_table<batch> batch_slots;
  slot_table<pending_ack> ack_slots;

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
  void dispatch(std::vector<batch>&& sealed) {
    for (auto& b : sealed) {
      {
        std::lock_guard lk(idle_m);
        inflight_records += b.tokens.size();
      }
      queued_bytes.fetch_add(b.body.size(), std::memory_order_relaxed);
      const std::uint64_t id = batch_slots.put(std::move(b));
      if (auto r = sys->tell(batcher_ref, batch_sealed{id}); !r)
        // Only when stopping (the batcher is gone): the batch is abandoned unacked.
        spdlog::debug("persistor: dropping sealed batch: {}", r.error().message);
    }
  }

  // A writer threw while writing `b`: hands the batch back to the batcher, which gives it to
  // the next idle writer. Its records stay counted in flight. Nothing to do when the tokens
  // were already handed on (acked, or queued for the registrar).
  void requeue(batch&& b, std::string_view writer, std::string_view why) {
    if (b.tokens.empty())
      return;
    spdlog::warn("persistor: {} failed writing a batch of {} record(s) for '{}': {}; the batch is queued again",
                 writer, b.tokens.size(), b.dest, why);
    const std::uint64_t id = batch_slots.put(std::move(b));
    if (auto r = sys->tell(batcher_ref, batch_sealed{id}); !r)
      spdlog::debug("persistor: dropping a re-queued batch: {}", r.error().message);
  }

  // Sleeps up to `d` unless the engine stops. True when stopping.
  bool backoff(std::chrono::milliseconds d) {
    std::unique_lock lk(stop_m);
    return stop_cv.wait_for(lk, d, [&] { return stopping.load(); });
  }

  template <class F> bool retry_until_ok(const char* what, const std::string& blob, F&& f) {
    std::chrono::milliseconds delay{200};
    while (true) {
      auto r = f();
      if (r)
        return true;
      stats.write_retries.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("persistor: {} {} failed, retrying in {} ms: {}", what, blob, delay.count(),
                   r.error().describe());
      if (backoff(delay))
        return false;
      delay = std::min(delay * 2, std::chrono::milliseconds(10'000));
    }
  }

  static storage::blob_catalog_entry catalog_entry_of(const committed_blob& c) {
    return {.blob = c.name, .dest = c.dest, .date = c.date, .host = c.host,
            .format = std::string(to_string(c.format)), .record_count = c.summary.record_count,
            .container = c.container};
  }

  // Both registrations, retried until done. False when stopped before.
  bool register_fully(const committed_blob& c) {
    return retry_until_ok("registering", c.name, [&] { return register_etl(c); }) &&
           retry_until_ok("cataloguing", c.name, [&] { return register_in_catalog(c); });
  }

  // Hands a durable, registered batch back to the source and releases what it held.
  void finish(pending_ack& p) {
    if (!p.blob.append) {
      stats.blobs_committed.fetch_add(1, std::memory_order_relaxed);
      fault(fault_point::registered);
    }
    stats.records_committed.fetch_add(p.tokens.size(), std::memory_order_relaxed);
    stats.bytes_committed.fetch_add(p.body_bytes, std::memory_order_relaxed);
    if (on_commit)
      on_commit(p.tokens, p.blob);
    fault(fault_point::acked);
    queued_bytes.fetch_sub(p.body_bytes, std::memory_order_relaxed);
    {
      std::lock_guard lk(idle_m);
      inflight_records -= p.tokens.size();
    }
    idle_cv.notify_all();
  }

  // Reserves the next block of sequence numbers: read the counter blob, write it + reserve with
  // If-Match (or create-only), retrying on a lost race. Caller holds seq_m.
  result<void> reserve_seq() {
    const std::string name = counter_blob();
    for (int attempt = 0; attempt < 50; ++attempt) {
      std::uint64_t base = 0;
      std::optional<std::string> etag;
      auto got = blobs.get_blob(opts.container, name);
      if (got) {
        base = std::strtoull(got->body.c_str(), nullptr, 10);
        etag = got->properties.etag;
      } else if (got.error().code != storage::errc::not_found) {
        return std::unexpected(error::from_storage(got.error(), "reading the sequence counter " + name));
      }
      storage::put_blob_options po;
      po.content_type = "text/plain";
      if (etag)
        po.if_match = etag;
      else
        po.create_only = true;
      const std::uint64_t limit = base + opts.seq_reserve;
      auto put = blobs.put_blob(opts.container, name, std::to_string(limit), po);
      if (put) {
        seq_next = base + 1; // seq numbers start at 1
        seq_limit = limit + 1;
        return {};
      }
      if (put.error().code != storage::errc::conflict &&
          put.error().code != storage::errc::precondition_failed)
        return std::unexpected(error::from_storage(put.error(), "writing the sequence counter " + name));
    }
    return fail(errc::conflict, "sequence counter " + name + " keeps changing under us");
  }

  result<std::uint64_t> next_seq() {
    std::lock_guard lk(seq_m);
    if (seq_next >= seq_limit)
      if (auto r = reserve_seq(); !r)
        return std::unexpected(r.error());
    return seq_next++;
  }

  // The ETL record of a committed blob (idempotent: an existing id is left as it is).
  result<void> register_etl(const committed_blob& c) {
    if (!etl)
      return {};
    new_record nr{.id = c.name, .payload = c.name};
    auto r = etl->enqueue(opts.etl_queue, std::span<const new_record>(&nr, 1));
    if (!r)
      return std::unexpected(r.error());
    stats.registered.fetch_add(1, std::memory_order_relaxed);
    return {};
  }

  // The ETL records of several committed blobs in one work_table::enqueue call (one entity
  // group transaction per shard partition, ≤ 100 records each; idempotent like the single one).
  result<void> register_etl_many(std::span<const pending_ack> blobs) {
    if (!etl || blobs.empty())
      return {};
    std::vector<new_record> recs;
    recs.reserve(blobs.size());
    for (const auto& p : blobs)
      recs.push_back(new_record{.id = p.blob.name, .payload = p.blob.name});
    auto r = etl->enqueue(opts.etl_queue, recs);
    if (!r)
      return std::unexpected(r.error());
    stats.registered.fetch_add(blobs.size(), std::memory_order_relaxed);
    return {};
  }

  // The catalog entry of a committed blob (idempotent for the same entry).
  result<void> register_in_catalog(const committed_blob& c) {
    if (!catalog)
      return {};
    storage::blob_catalog_entry e{.blob = c.name, .dest = c.dest, .date = c.date, .host = c.host,
                                  .format = std::string(to_string(c.format)),
                                  .record_count = c.summary.record_count, .container = c.container};
    auto r = catalog->register_blob(e);
    if (!r)
      return std::unexpected(error::from_storage(r.error(), "registering " + c.name + " in the catalog"));
    stats.catalogued.fetch_add(1, std::memory_order_relaxed);
    return {};
  }

  committed_blob describe(const batch& bt, std::string name) const {
    committed_blob c;
    c.container = opts.container;
    c.name = std::move(name);
    c.dest = bt.dest;
    c.date = partition_date(bt.partition);
    c.host = opts.host;
    c.format = opts.format;
    c.summary = bt.summary;
    c.bytes = bt.body.size();
    return c;
  }

  std::string content_type() const {
    return opts.format == record_format::ndjson ? "application/x-ndjson" : "application/json";
  }

  // Block mode: one create-only blob per batch. False when stopped before success.
  bool write_block(const batch& bt, committed_blob& out) {
    std::string name;
    std::chrono::milliseconds delay{200};
    while (true) {
      if (name.empty()) {
        auto seq = next_seq();
        if (!seq) {
          spdlog::warn("persistor: sequence counter: {}", seq.error().describe());
          if (backoff(delay))
            return false;
          continue;
        }
        name = blob_name(bt.dest, bt.partition, opts.host, opts.name, *seq);
      }
      storage::put_blob_options po;
      po.content_type = content_type();
      po.metadata = blob_metadata(bt.summary, opts.format);
      po.create_only = true;
      const auto t0 = std::chrono::steady_clock::now();
      auto put = blobs.put_blob(opts.container, name, bt.body, po);
      spdlog::debug("persistor: put {} ({} records, {} bytes) in {} us", name, bt.tokens.size(),
                    bt.body.size(),
                    std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
      if (put) {
        out = describe(bt, name);
        return true;
      }
      if (put.error().code == storage::errc::conflict) {
        // A blob of an earlier run has this name: never overwrite it, take the next number.
        stats.seq_collisions.fetch_add(1, std::memory_order_relaxed);
        spdlog::warn("persistor: {} exists already; skipping to the next sequence number", name);
        name.clear();
        continue;
      }
      stats.write_retries.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("persistor: writing {} failed, retrying in {} ms: {}", name, delay.count(),
                   put.error().describe());
      if (backoff(delay))
        return false;
      delay = std::min(delay * 2, std::chrono::milliseconds(10'000));
    }
  }

  // Closes an append blob: writes its totals as metadata and registers it. Caller holds s.m.
  void roll_append(append_state& s) {
    if (s.name.empty())
      return;
    batch fake;
    fake.dest = s.dest;
    fake.partition = s.partition;
    fake.summary = s.summary;
    committed_blob c = describe(fake, s.name);
    c.bytes = s.offset;
    retry_until_ok("setting metadata of", s.name, [&]() -> result<void> {
      auto r = blobs.set_metadata(opts.container, s.name, blob_metadata(s.summary, opts.format));
      if (!r)
        return std::unexpected(error::from_storage(r.error(), "set metadata"));
      return {};
    });
    if (!register_fully(c))
      return; // stopping: the marker stays, the next start registers the blob
    if (auto d = blobs.delete_blob(opts.container, marker_prefix() + s.name); !d &&
        d.error().code != storage::errc::not_found)
      spdlog::warn("persistor: deleting the open marker of {}: {} (the next start registers it "
                   "again, idempotently)", s.name, d.error().describe());
    s.name.clear();
  }

  // Append mode: append the batch to the open append blob of its partition, rolling first when
  // the block or size cap would be passed. False when stopped before success.
  bool write_append(const batch& bt, committed_blob& out) {
    std::shared_ptr<append_state> sp;
    {
      std::lock_guard lk(append_m);
      auto& slot = appends[{bt.dest, bt.partition}];
      if (!slot)
        slot = std::make_shared<append_state>();
      sp = slot;
    }
    append_state& s = *sp;
    std::lock_guard lk(s.m);
    std::chrono::milliseconds delay{200};
    while (true) {
      if (!s.name.empty() && (s.blocks + 1 > opts.append_max_blocks ||
                              s.offset + bt.body.size() > opts.append_max_bytes))
        roll_append(s);
      if (s.name.empty()) {
        auto seq = next_seq();
        if (!seq) {
          if (backoff(delay))
            return false;
          continue;
        }
        std::string name = blob_name(bt.dest, bt.partition, opts.host, opts.name, *seq);
        // The marker first: a crash after this leaves it for start() to find the blob by.
        storage::put_blob_options mo;
        mo.content_type = "text/plain";
        if (auto mk = blobs.put_blob(opts.container, marker_prefix() + name, name, mo); !mk) {
          spdlog::warn("persistor: writing the open marker of {} failed: {}", name, mk.error().describe());
          if (backoff(delay))
            return false;
          continue;
        }
        storage::create_append_blob_options co;
        co.content_type = content_type();
        co.create_only = true;
        co.metadata = {{"format", std::string(to_string(opts.format))}};
        auto cr = blobs.create_append_blob(opts.container, name, co);
        if (!cr) {
          if (cr.error().code == storage::errc::conflict) {
            stats.seq_collisions.fetch_add(1, std::memory_order_relaxed);
            continue;
          }
          spdlog::warn("persistor: creating append blob {} failed: {}", name, cr.error().describe());
          if (backoff(delay))
            return false;
          continue;
        }
        s.name = std::move(name);
        s.offset = 0;
        s.blocks = 0;
        s.summary = {};
        s.summary.first_event_time = bt.summary.first_event_time;
        s.summary.last_event_time = bt.summary.last_event_time;
        s.dest = bt.dest;
        s.partition = bt.partition;
      }
      storage::append_block_options ao;
      ao.expected_offset = s.offset;
      auto ar = blobs.append_block(opts.container, s.name, bt.body, ao);
      if (ar) {
        s.offset += bt.body.size();
        s.blocks += 1;
        s.summary.record_count += bt.summary.record_count;
        s.summary.first_event_time = std::min(s.summary.first_event_time, bt.summary.first_event_time);
        s.summary.last_event_time = std::max(s.summary.last_event_time, bt.summary.last_event_time);
        out = describe(bt, s.name);
        out.append = true;
        return true;
      }
      if (ar.error().code == storage::errc::precondition_failed ||
          ar.error().code == storage::errc::limit_exceeded) {
        // Someone else wrote to it, or it is full: close it and start another.
        spdlog::warn("persistor: append to {} refused ({}); rolling", s.name, ar.error().describe());
        roll_append(s);
        continue;
      }
      spdlog::warn("persistor: append to {} failed: {}", s.name, ar.error().describe());
      if (backoff(delay))
        return false;
      delay = std::min(delay * 2, std::chrono::milliseconds(10'000));
    }
  }

  // Registers the append blobs a crashed run of this persistor left open: each marker names one.
  // The blob's totals are recounted from its records (the run died before writing them), then
  // the blob is registered and the marker deleted. Idempotent: a crash in here repeats it.
  // Runs in start(), before any thread. Errors: storage (the start fails; nothing is lost).
  result<void> recover_open_appends() {
    storage::list_blobs_options lo;
    lo.prefix = marker_prefix();
    std::vector<std::string> markers;
    auto pager = blobs.list_blobs_pager(opts.container, lo);
    while (true) {
      auto page = pager.next();
      if (!page)
        return std::unexpected(error::from_storage(page.error(), "listing " + lo.prefix));
      if (!*page)
        break;
      for (const auto& item : (*page)->blobs)
        markers.push_back(item.name);
    }
    for (const auto& marker : markers) {
      const std::string name = marker.substr(lo.prefix.size());
      auto got = blobs.get_blob(opts.container, name);
      if (!got && got.error().code != storage::errc::not_found)
        return std::unexpected(error::from_storage(got.error(), "reading open append blob " + name));
      if (got && !got->body.empty()) {
        batch_summary sum;
        record_format format = opts.format;
        if (auto ex = etl::extract_records(got->body); !ex) {
          // Registered anyway: the ETL quarantines what it cannot read, nothing is hidden.
          spdlog::warn("persistor: open append blob {} does not parse: {}", name, ex.error().describe());
        } else {
          format = ex->format == etl::blob_format::ndjson ? record_format::ndjson
                                                          : record_format::persistor_v1;
          bool timed = false;
          for (const auto& r : ex->records) {
            auto t = parse_event_time(r.event_time);
            if (!t)
              continue;
            sum.first_event_time = timed ? std::min(sum.first_event_time, *t) : *t;
            sum.last_event_time = timed ? std::max(sum.last_event_time, *t) : *t;
            timed = true;
          }
          sum.record_count = ex->records.size();
        }
        if (auto md = blobs.set_metadata(opts.container, name, blob_metadata(sum, format)); !md)
          return std::unexpected(error::from_storage(md.error(), "setting metadata of " + name));
        // Name: {dest}/{partition}/{file}, the partition of any depth (an earlier run may have
        // used another one).
        const auto slash = name.find('/');
        batch fake;
        fake.dest = name.substr(0, slash);
        fake.partition = std::string(partition_of_blob(name));
        fake.summary = sum;
        committed_blob c = describe(fake, name);
        c.format = format;
        c.bytes = got->body.size();
        if (auto r = register_etl(c); !r)
          return std::unexpected(r.error());
        if (auto r = register_in_catalog(c); !r)
          return std::unexpected(r.error());
        stats.recovered_appends.fetch_add(1, std::memory_order_relaxed);
        spdlog::info("persistor: registered append blob {} ({} records) left open by an earlier run",
                     name, sum.record_count);
      } else if (got) {
        (void)blobs.delete_blob(opts.container, name); // empty: nothing was acked from it
      }
      if (auto d = blobs.delete_blob(opts.container, marker); !d &&
          d.error().code != storage::errc::not_found)
        return std::unexpected(error::from_storage(d.error(), "deleting marker " + marker));
    }
    return {};
  }

  void roll_all_appends() {
    std::vector<std::shared_ptr<append_state>> all;
    {
      std::lock_guard lk(append_m);
      for (auto& [k, v] : appends)
        all.push_back(v);
    }
    for (auto& s : all) {
      std::lock_guard lk(s->m);
      roll_append(*s);
    }
  }

  // Writes one sealed batch, registers it and acks it (or hands it to the registrar, which
  // does). Runs on a writer actor's thread. False when the engine stopped before: the batch is
  // abandoned unacked (its sources redeliver). If it throws before the batch's tokens were
  // acked or handed to the registrar, `bt` still holds the whole batch (requeue() it).
  bool write_one(batch& bt) {
    fault(fault_point::writing);
    committed_blob c;
    const bool ok = opts.append_blobs ? write_append(bt, c) : write_block(bt, c);
    if (!ok)
      return false;
    pending_ack p{std::move(c), std::move(bt.tokens), bt.body.size(), false};
    // Until the tokens are handed on, an exception gives them back to the batch.
    struct give_back {
      batch& bt;
      pending_ack& p;
      int unwinding = std::uncaught_exceptions();
      ~give_back() {
        if (std::uncaught_exceptions() > unwinding && !p.tokens.empty())
          bt.tokens = std::move(p.tokens);
      }
    } guard{bt, p};
    if (p.blob.append) {
      finish(p);
      return true;
    }
    fault(fault_point::blob_written);
    bt.body = {}; // stored: only the tokens wait for the registrations and the ack
    if (!etl && !catalog) {
      finish(p);
      return true;
    }
    // The registrar enqueues the ETL records of every blob committed since its last round in
    // one call (one transaction per shard partition), then their catalog entries, and acks.
    {
      std::lock_guard lk(idle_m);
      uncatalogued += 1;
    }
    const std::uint64_t id = ack_slots.put(std::move(p));
    auto reg = sys->lookup(registrar_name);
    if (!reg || !sys->tell(*reg, catalog_entry{id})) {
      // Only when stopping: the registrar is gone; an unacked blob is redelivered.
      std::lock_guard lk(idle_m);
      uncatalogued -= 1;
      return false;
    }
    return true;
  }
};

namespace {

// -- actors ---------------------------------------------------------------------------------------

// Owns the stage of engine::submit's records and the queue of sealed batches; gives each sealed
// batch to an idle writer (oldest first), and seals open batches when their delay passes.
class batcher_actor final : public actors::actor {
public:
  batcher_actor(actors::actor_config& cfg, engine::impl* e) : actor(cfg), e_(e) {}

protected:
  actors::behavior make_behavior() override {
    return {
        [this](const batch_sealed& m) {
          sealed_.push_back(m.slot);
          assign();
        },
        [this](const writer_idle& m) {
          if (m.index >= idle_.size())
            idle_.resize(m.index + 1, false);
          idle_[m.index] = true;
          assign();
        },
        [this](const inbox_ready&) { drain_inbox(); },
        [this](const flush_open&) -> bool {
          drain_inbox();
          e_->own_stage->seal_all();
          return true;
        },
    };
  }

private:
  void drain_inbox() {
    {
      std::lock_guard lk(e_->inbox_m);
      taken_.swap(e_->inbox);
      e_->inbox_signalled = false;
    }
    for (auto& [r, token] : taken_)
      (void)e_->own_stage->add(r, token); // dest checked by submit; cancelled only when stopping
    taken_.clear();
    arm();
  }
  // One timer for the oldest open batch: later batches never fall due earlier.
  void arm() {
    if (timer_armed_)
      return;
    if (auto next = e_->own_stage->seal_due()) {
      timer_armed_ = true;
      start_timer(*next, [this] {
        timer_armed_ = false;
        arm();
      });
    }
  }
  void assign() {
    for (std::uint32_t i = 0; i < idle_.size() && !sealed_.empty(); ++i) {
      if (!idle_[i])
        continue;
      if (i >= writers_.size())
        writers_.resize(i + 1);
      if (!writers_[i]) {
        auto w = sys().lookup(writer_name(i));
        if (!w)
          continue;
        writers_[i] = *w;
      }
      if (!tell(writers_[i], write_batch{sealed_.front()}))
        continue; // stopping, or restarting: it says writer_idle again once up
      sealed_.pop_front();
      idle_[i] = false;
    }
  }
  engine::impl* e_;
  std::deque<std::uint64_t> sealed_;   // batch slots waiting for a writer, oldest first
  std::vector<bool> idle_;             // per writer index
  std::vector<actors::actor_ref> writers_;
  std::vector<std::pair<record, ack_token>> taken_; // drained inbox (capacity reused)
  bool timer_armed_ = false;
};

// Writes batches with blocking blob I/O on its own thread, one at a time.
class writer_actor final : public actors::actor {
public:
  writer_actor(actors::actor_config& cfg, engine::impl* e, std::uint32_t index)
      : actor(cfg), e_(e), index_(index) {}

protected:
  actors::result<void> init() override {
    // Also after a restart: the batcher then knows it may send work again.
    if (auto b = sys().lookup(batcher_name))
      (void)tell(*b, writer_idle{index_});
    return {};
  }
  actors::behavior make_behavior() override {
    return {[this](const write_batch& m) {
      auto b = e_->batch_slots.take(m.slot);
      if (b) {
        bool written = false;
        try {
          written = e_->write_one(*b);
        } catch (const std::exception& ex) {
          e_->requeue(std::move(*b), writer_name(index_), ex.what());
          throw; // the supervisor restarts this writer, which then says writer_idle
        } catch (...) {
          e_->requeue(std::move(*b), writer_name(index_), "unknown exception");
          throw;
        }
        if (!written)
          return; // stopping
      }
      if (auto bt = sys().lookup(batcher_name))
        (void)tell(*bt, writer_idle{index_});
    }};
  }

private:
  engine::impl* e_;
  std::uint32_t index_;
};

// Registers committed blobs in commit order: it collects every blob queued before its own
// catalog_flush comes round, then enqueues their ETL records in one work_table::enqueue call (one
// entity group transaction per shard partition) while another thread registers their catalog
// entries in one register_blobs call (one WAL append), acking each blob after both
// (catalog_before_ack), or after its ETL record when the catalog entry may follow the ack. Both registrations are
// idempotent, so a round retried after a failure (or a crash) writes nothing twice.
class registrar_actor final : public actors::actor {
public:
  registrar_actor(actors::actor_config& cfg, engine::impl* e) : actor(cfg), e_(e) {}

protected:
  actors::behavior make_behavior() override {
    return {
        [this](const catalog_entry& m) {
          if (auto p = e_->ack_slots.take(m.slot))
            pending_.push_back(std::move(*p));
          if (!flush_queued_ && tell(self(), catalog_flush{}))
            flush_queued_ = true;
        },
        [this](const catalog_flush&) {
          flush_queued_ = false;
          register_pending();
        },
    };
  }

private:
  void register_pending() {
    if (pending_.empty())
      return;
    const std::string what = pending_.size() == 1
                                 ? pending_.front().blob.name
                                 : std::to_string(pending_.size()) + " blobs from " + pending_.front().blob.name;
    // The catalog entries are written while the ETL records are (they do not depend on each
    // other): a round costs the longer of the two, not their sum.
    std::future<bool> catalogued;
    if (e_->catalog) {
      std::vector<storage::blob_catalog_entry> entries;
      entries.reserve(pending_.size());
      for (const auto& p : pending_)
        entries.push_back(engine::impl::catalog_entry_of(p.blob));
      catalogued = std::async(std::launch::async, [this, what, entries = std::move(entries)] {
        return e_->retry_until_ok("cataloguing", what, [&]() -> result<void> {
          auto r = e_->catalog->register_blobs(entries);
          if (!r)
            return std::unexpected(error::from_storage(r.error(), "registering " + what + " in the catalog"));
          return {};
        });
      });
    }
    const auto t0 = std::chrono::steady_clock::now();
    const bool enqueued = e_->retry_until_ok("registering", what, [&] { return e_->register_etl_many(pending_); });
    const auto t_etl = std::chrono::steady_clock::now();
    if (enqueued && (!e_->catalog || !e_->opts.catalog_before_ack))
      for (auto& p : pending_) { // acked now; the catalog entry (if any) follows
        e_->finish(p);
        p.acked = true;
      }
    const bool ok = enqueued && (!catalogued.valid() || catalogued.get());
    if (!ok)
      return; // stopping: unacked ones are redelivered by their sources
    if (e_->catalog)
      e_->stats.catalogued.fetch_add(pending_.size(), std::memory_order_relaxed);
    spdlog::debug("persistor: registered {} blob(s): ETL records in {} ms, both in {} ms", pending_.size(),
                  std::chrono::duration_cast<std::chrono::milliseconds>(t_etl - t0).count(),
                  std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
    for (auto& p : pending_)
      if (!p.acked)
        e_->finish(p);
    {
      std::lock_guard lk(e_->idle_m);
      e_->uncatalogued -= pending_.size();
    }
    pending_.clear();
    e_->idle_cv.notify_all();
  }
  engine::impl* e_;
  std::vector<pending_ack> pending_; // committed, waiting for their registrations
  bool flush_queued_ = false;
};

} // namespace

// -- batch_stage ----------------------------------------------------------------------------------

batch_stage::batch_stage(engine::impl* e, std::size_t slot)
    : eng_(e), b_(e->opts.limits, e->opts.format, e->opts.partition), slot_(slot) {}

batch_stage::~batch_stage() { eng_->stage_bytes[slot_].v.store(0, std::memory_order_relaxed); }

result<void> batch_stage::add(const record& r, ack_token token) {
  if (auto v = validate_dest(r.dest); !v)
    return v;
  if (auto v = check_payload(r, eng_->opts.format); !v)
    return v;
  if (eng_->stopping.load(std::memory_order_relaxed))
    return fail(errc::cancelled, "persistor is stopping");
  eng_->stats.records_in.fetch_add(1, std::memory_order_relaxed);
  auto sealed = b_.add(r, token, steady_ms());
  if (!sealed.empty())
    dispatch(std::move(sealed));
  eng_->stage_bytes[slot_].v.store(b_.open_bytes(), std::memory_order_relaxed);
  return {};
}

std::optional<std::chrono::milliseconds> batch_stage::seal_due() {
  const std::int64_t now = steady_ms();
  auto sealed = b_.due(now);
  if (!sealed.empty())
    dispatch(std::move(sealed));
  eng_->stage_bytes[slot_].v.store(b_.open_bytes(), std::memory_order_relaxed);
  auto next = b_.next_due();
  if (!next)
    return std::nullopt;
  return std::chrono::milliseconds(std::max<std::int64_t>(*next - now, 0));
}

void batch_stage::seal_all() {
  dispatch(b_.flush_all());
  eng_->stage_bytes[slot_].v.store(0, std::memory_order_relaxed);
}

void batch_stage::seal_holding(const std::function<bool(ack_token)>& holds) {
  auto sealed = b_.seal_holding(holds);
  if (!sealed.empty())
    dispatch(std::move(sealed));
  eng_->stage_bytes[slot_].v.store(b_.open_bytes(), std::memory_order_relaxed);
}

void batch_stage::dispatch(std::vector<batch>&& sealed) { eng_->dispatch(std::move(sealed)); }

// -- engine ---------------------------------------------------------------------------------------

engine::engine(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

engine::~engine() {
  {
    std::lock_guard lk(impl_->stop_m);
    impl_->stopping.store(true);
  }
  impl_->stop_cv.notify_all();
  impl_->idle_cv.notify_all();
  if (impl_->sys)
    impl_->sys->shutdown(); // sources, then the engine's actors; each joins its thread
  impl_->own_stage.reset();
}

result<std::unique_ptr<engine>> engine::start(engine_options opts, storage::blob_client blobs,
                                              std::optional<work_table> etl,
                                              std::optional<storage::blob_catalog> catalog,
                                              commit_fn on_commit) {
  if (opts.writers < 1 || opts.writers > 64)
    return fail(errc::invalid_argument, "persistor writers must be between 1 and 64");
  if (opts.limits.max_records < 1 || opts.limits.max_bytes < 1)
    return fail(errc::invalid_argument, "persistor batch limits must be at least 1");
  if (opts.append_max_blocks < 1 || opts.append_max_blocks >= storage::max_blob_blocks)
    return fail(errc::invalid_argument, "append_max_blocks must be between 1 and 49999");
  if (auto v = validate_dest(opts.host); !v)
    return fail(errc::invalid_argument, "persistor host: " + v.error().message);
  if (auto v = validate_dest(opts.name); !v)
    return fail(errc::invalid_argument, "persistor name: " + v.error().message);
  if (opts.seq_reserve < 1)
    opts.seq_reserve = 1;
  auto created = blobs.create_container_if_not_exists(opts.container);
  if (!created)
    return std::unexpected(error::from_storage(created.error(), "creating container " + opts.container));
  auto p = std::make_unique<impl>(std::move(opts), std::move(blobs), std::move(etl),
                                  std::move(catalog), std::move(on_commit));
  {
    std::lock_guard lk(p->seq_m);
    if (auto r = p->reserve_seq(); !r)
      return std::unexpected(r.error());
  }
  if (auto r = p->recover_open_appends(); !r)
    return std::unexpected(r.error());

  impl* raw = p.get();
  std::unique_ptr<engine> eng(new engine(std::move(p)));
  raw->stages.store(1);
  raw->own_stage.reset(new batch_stage(raw, 0));
  actors::system_options so;
  so.process = "persistor-" + raw->opts.name;
  so.host = raw->opts.host;
  raw->sys = std::make_unique<actors::actor_system>(so);
  // Mailboxes block rather than refuse: every message here carries a slot or a wake-up that
  // must not be lost, and none is sent per record.
  const actors::mailbox_options mb{.capacity = 1u << 16, .policy = actors::overflow_policy::block};
  std::vector<actors::child_spec> children;
  if (raw->catalog || raw->etl)
    children.push_back(actors::child_spec::of<registrar_actor>({.name = registrar_name, .mailbox = mb}, raw));
  children.push_back(actors::child_spec::of<batcher_actor>({.name = batcher_name, .mailbox = mb}, raw));
  for (std::uint32_t i = 0; i < raw->opts.writers; ++i)
    children.push_back(actors::child_spec::of<writer_actor>({.name = writer_name(i), .mailbox = mb}, raw, i));
  actors::supervisor_options sup;
  sup.on_escalate = [](const actors::error& e) {
    spdlog::error("persistor: actors keep failing; giving up on them: {}", e.message);
  };
  auto s = raw->sys->spawn<actors::supervisor>({.name = "persistor"}, sup, std::move(children));
  if (!s)
    return fail(errc::io, "persistor actors: " + s.error().message);
  auto b = raw->sys->lookup(batcher_name);
  if (!b)
    return fail(errc::io, "persistor actors: no batcher");
  raw->batcher_ref = *b;
  return eng;
}

result<void> engine::submit(const record& r, ack_token token) {
  if (auto v = validate_dest(r.dest); !v)
    return v;
  if (auto v = check_payload(r, impl_->opts.format); !v)
    return v;
  if (impl_->stopping.load(std::memory_order_relaxed))
    return fail(errc::cancelled, "persistor is stopping");
  bool wake = false;
  {
    std::lock_guard lk(impl_->inbox_m);
    impl_->inbox.emplace_back(r, token);
    wake = !impl_->inbox_signalled;
    impl_->inbox_signalled = true;
  }
  if (wake)
    if (auto t = impl_->sys->tell(impl_->batcher_ref, inbox_ready{}); !t) {
      std::lock_guard lk(impl_->inbox_m);
      impl_->inbox_signalled = false;
      return fail(errc::cancelled, "persistor is stopping: " + t.error().message);
    }
  return {};
}

bool engine::saturated() const noexcept { return impl_->held_bytes() > impl_->opts.max_inflight_bytes; }

result<void> engine::flush(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto sealed = impl_->sys->request<bool>(impl_->batcher_ref, flush_open{}, timeout).get();
  if (!sealed)
    return fail(errc::timeout, "flush: sealing the open batches: " + sealed.error().message);
  std::uint64_t records = 0, entries = 0;
  bool done = false;
  {
    std::unique_lock lk(impl_->idle_m);
    done = impl_->idle_cv.wait_until(lk, deadline, [&] {
      return (impl_->inflight_records == 0 && impl_->uncatalogued == 0) || impl_->stopping.load();
    });
    records = impl_->inflight_records;
    entries = impl_->uncatalogued;
  }
  if (impl_->opts.append_blobs)
    impl_->roll_all_appends();
  if (!done) {
    if (records > 0)
      return fail(errc::timeout, "flush: " + std::to_string(records) +
                                     " records still not committed after " +
                                     std::to_string(timeout.count()) + " ms");
    return fail(errc::timeout, "flush: every record is acked, but " + std::to_string(entries) +
                                   " blobs are still waiting for their catalog entry after " +
                                   std::to_string(timeout.count()) + " ms");
  }
  return {};
}

const engine_stats& engine::stats() const noexcept { return impl_->stats; }

result<std::unique_ptr<batch_stage>> engine::make_stage() {
  std::size_t slot = impl_->stages.load();
  while (true) {
    if (slot >= max_stages)
      return fail(errc::limit_exceeded, "a persistor engine has at most 63 source stages");
    if (impl_->stages.compare_exchange_weak(slot, slot + 1))
      break;
  }
  return std::unique_ptr<batch_stage>(new batch_stage(impl_.get(), slot));
}

actors::actor_system& engine::system() noexcept { return *impl_->sys; }

} // namespace shoal::workers::persistor
