#include "workers/persistor/engine.hpp"

#include "workers/etl/blob_format.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace shoal::workers::persistor {
namespace {

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string date_of(std::string_view partition) { // "YYYY/MM/DD/HH" → "YYYY-MM-DD"
  std::string d(partition.substr(0, 10));
  std::replace(d.begin(), d.end(), '/', '-');
  return d;
}

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

  std::mutex m;                   // guards everything below up to `stopping`
  std::condition_variable work_cv; // writers and timer: a batch sealed, or stop
  std::condition_variable idle_cv; // flush(): records committed
  batcher b;
  std::deque<batch> sealed;
  // A committed blob waiting for its catalog entry; its tokens are acked after it.
  struct pending_ack {
    committed_blob blob;
    std::vector<ack_token> tokens;
    std::uint64_t body_bytes = 0; // counted in queued_bytes until acked
    bool acked = false;           // acked before its catalog entry (catalog_before_ack off)
  };
  std::deque<pending_ack> catalog_queue; // committed, ETL-registered, not yet in the catalog
  std::array<std::atomic<std::uint64_t>, 3> fault_counts{}; // per fault_point
  std::uint64_t queued_bytes = 0;  // sealed + being written
  std::uint64_t pending_records = 0; // submitted, not yet committed
  bool stopping = false;
  std::atomic<std::uint64_t> held_bytes{0};

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

  std::vector<std::thread> threads;

  impl(engine_options o, storage::blob_client bc, std::optional<work_table> e,
       std::optional<storage::blob_catalog> c, commit_fn f)
      : opts(std::move(o)), blobs(std::move(bc)), etl(std::move(e)), catalog(std::move(c)),
        on_commit(std::move(f)), b(opts.limits, opts.format) {}

  std::string counter_blob() const { return "_shoal/seq/" + opts.host + "-" + opts.name; }
  // Markers of this persistor's open (unregistered) append blobs: prefix + blob name.
  std::string marker_prefix() const { return "_shoal/open/" + opts.host + "-" + opts.name + "/"; }

  void fault(fault_point p) {
    if (!opts.fault)
      return;
    const auto n = fault_counts[static_cast<std::size_t>(p)].fetch_add(1) + 1;
    opts.fault(p, n);
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

  void update_held_locked() {
    held_bytes.store(b.open_bytes() + queued_bytes, std::memory_order_relaxed);
  }

  void push_sealed_locked(std::vector<batch>&& v) {
    for (auto& x : v) {
      queued_bytes += x.body.size();
      sealed.push_back(std::move(x));
    }
    if (!v.empty())
      work_cv.notify_all();
    update_held_locked();
  }

  // Sleeps up to `d` unless the engine stops. True when stopping.
  bool backoff(std::chrono::milliseconds d) {
    std::unique_lock lk(m);
    return work_cv.wait_for(lk, d, [&] { return stopping; });
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
    {
      std::lock_guard lk(m);
      queued_bytes -= p.body_bytes;
      pending_records -= p.tokens.size();
      update_held_locked();
    }
    idle_cv.notify_all();
  }

  // The catalog is written by one registrar thread, in commit order: its WAL counter row is
  // ETag-guarded, so parallel writers would only contend for it. Acks follow each entry.
  void registrar_loop() {
    while (true) {
      pending_ack* front = nullptr; // stays valid: the deque only grows at the back meanwhile
      {
        std::unique_lock lk(m);
        work_cv.wait(lk, [&] { return stopping || !catalog_queue.empty(); });
        if (stopping)
          return;
        front = &catalog_queue.front();
      }
      if (!retry_until_ok("cataloguing", front->blob.name, [&] { return register_in_catalog(front->blob); }))
        return;
      pending_ack p;
      {
        std::lock_guard lk(m);
        p = std::move(catalog_queue.front());
        catalog_queue.pop_front();
      }
      if (!p.acked)
        finish(p);
      idle_cv.notify_all();
    }
  }

  committed_blob describe(const batch& bt, std::string name) const {
    committed_blob c;
    c.container = opts.container;
    c.name = std::move(name);
    c.dest = bt.dest;
    c.date = date_of(bt.partition);
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
        // Name: {dest}/{YYYY}/{MM}/{DD}/{HH}/{file}.
        const auto slash = name.find('/');
        batch fake;
        fake.dest = name.substr(0, slash);
        fake.partition = slash == std::string::npos ? "" : name.substr(slash + 1, 13);
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

  void writer_loop() {
    while (true) {
      batch bt;
      {
        std::unique_lock lk(m);
        work_cv.wait(lk, [&] { return stopping || !sealed.empty(); });
        if (stopping)
          return;
        bt = std::move(sealed.front());
        sealed.pop_front();
      }
      committed_blob c;
      const bool ok = opts.append_blobs ? write_append(bt, c) : write_block(bt, c);
      if (!ok)
        return; // stopping: the batch is abandoned unacked (its sources will redeliver)
      pending_ack p{std::move(c), std::move(bt.tokens), bt.body.size()};
      bt.body = {}; // the bytes are stored; only the tokens wait for the registration
      if (!p.blob.append) {
        fault(fault_point::blob_written);
        if (!retry_until_ok("registering", p.blob.name, [&] { return register_etl(p.blob); }))
          return;
        if (catalog && opts.catalog_before_ack) {
          std::lock_guard lk(m);
          catalog_queue.push_back(std::move(p));
          work_cv.notify_all();
          continue; // the registrar acks it after the catalog entry
        }
        if (catalog) {
          finish(p);
          p.acked = true;
          std::lock_guard lk(m);
          catalog_queue.push_back(std::move(p));
          work_cv.notify_all();
          continue; // the registrar writes the entry after the ack
        }
      }
      finish(p);
    }
  }

  void timer_loop() {
    std::unique_lock lk(m);
    while (!stopping) {
      auto next = b.next_due();
      const std::int64_t now = steady_ms();
      if (next && *next <= now) {
        push_sealed_locked(b.due(now));
        continue;
      }
      const auto wait = next ? std::chrono::milliseconds(std::min<std::int64_t>(*next - now, 100))
                             : std::chrono::milliseconds(100);
      work_cv.wait_for(lk, wait);
    }
  }
};

engine::engine(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

engine::~engine() {
  {
    std::lock_guard lk(impl_->m);
    impl_->stopping = true;
  }
  impl_->work_cv.notify_all();
  impl_->idle_cv.notify_all();
  for (auto& t : impl_->threads)
    t.join();
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
  for (std::uint32_t i = 0; i < raw->opts.writers; ++i)
    raw->threads.emplace_back([raw] { raw->writer_loop(); });
  raw->threads.emplace_back([raw] { raw->timer_loop(); });
  if (raw->catalog)
    raw->threads.emplace_back([raw] { raw->registrar_loop(); });
  return std::unique_ptr<engine>(new engine(std::move(p)));
}

result<void> engine::submit(const record& r, ack_token token) {
  if (auto v = validate_dest(r.dest); !v)
    return v;
  std::lock_guard lk(impl_->m);
  if (impl_->stopping)
    return fail(errc::cancelled, "persistor is stopping");
  impl_->stats.records_in.fetch_add(1, std::memory_order_relaxed);
  impl_->pending_records += 1;
  impl_->push_sealed_locked(impl_->b.add(r, token, steady_ms()));
  impl_->update_held_locked();
  return {};
}

bool engine::saturated() const noexcept {
  return impl_->held_bytes.load(std::memory_order_relaxed) > impl_->opts.max_inflight_bytes;
}

result<void> engine::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lk(impl_->m);
  impl_->push_sealed_locked(impl_->b.flush_all());
  const bool done = impl_->idle_cv.wait_for(lk, timeout, [&] {
    return (impl_->pending_records == 0 && impl_->catalog_queue.empty()) || impl_->stopping;
  });
  lk.unlock();
  if (impl_->opts.append_blobs)
    impl_->roll_all_appends();
  if (!done)
    return fail(errc::timeout, "flush: records still not committed after " +
                                   std::to_string(timeout.count()) + " ms");
  return {};
}

const engine_stats& engine::stats() const noexcept { return impl_->stats; }

} // namespace shoal::workers::persistor
