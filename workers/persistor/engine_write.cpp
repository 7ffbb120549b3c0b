// The persistor engine's blob writes: one create-only blob per batch (block mode), or appends to
// an open append blob with its marker, recovery of open appends after a crash, and rolling.
#include "workers/persistor/engine_internal.hpp"

#include "workers/blob_format.hpp"

namespace shoal::workers::persistor {

using namespace detail;

committed_blob engine::impl::describe(const batch& bt, std::string name) const {
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

std::string engine::impl::content_type() const {
  return opts.format == record_format::ndjson ? "application/x-ndjson" : "application/json";
}

// Block mode: one create-only blob per batch. False when stopped before success.
bool engine::impl::write_block(const batch& bt, committed_blob& out) {
  std::string name;
  retry_backoff retry;
  while (true) {
    if (name.empty()) {
      auto seq = next_seq();
      if (!seq) {
        spdlog::warn("persistor: sequence counter: {}", seq.error().describe());
        if (backoff(retry.next()))
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
    const auto delay = retry.next();
    spdlog::warn("persistor: writing {} failed, retrying in {} ms: {}", name, delay.count(),
                 put.error().describe());
    if (backoff(delay))
      return false;
  }
}

// Closes an append blob: writes its totals as metadata and registers it. Caller holds s.m.
void engine::impl::roll_append(append_state& s) {
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
bool engine::impl::write_append(const batch& bt, committed_blob& out) {
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
  retry_backoff retry;
  while (true) {
    if (!s.name.empty() && (s.blocks + 1 > opts.append_max_blocks ||
                            s.offset + bt.body.size() > opts.append_max_bytes))
      roll_append(s);
    if (s.name.empty()) {
      auto seq = next_seq();
      if (!seq) {
        if (backoff(retry.next()))
          return false;
        continue;
      }
      std::string name = blob_name(bt.dest, bt.partition, opts.host, opts.name, *seq);
      // The marker first: a crash after this leaves it for start() to find the blob by.
      storage::put_blob_options mo;
      mo.content_type = "text/plain";
      if (auto mk = blobs.put_blob(opts.container, marker_prefix() + name, name, mo); !mk) {
        spdlog::warn("persistor: writing the open marker of {} failed: {}", name, mk.error().describe());
        if (backoff(retry.next()))
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
        if (backoff(retry.next()))
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
    if (backoff(retry.next()))
      return false;
  }
}

// Registers the append blobs a crashed run of this persistor left open: each marker names one.
// The blob's totals are recounted from its records (the run died before writing them), then
// the blob is registered and the marker deleted. Idempotent: a crash in here repeats it.
// Runs in start(), before any thread. Errors: storage (the start fails; nothing is lost).
result<void> engine::impl::recover_open_appends() {
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
      if (auto ex = workers::extract_records(got->body); !ex) {
        // Registered anyway: the ETL quarantines what it cannot read, nothing is hidden.
        spdlog::warn("persistor: open append blob {} does not parse: {}", name, ex.error().describe());
      } else {
        format = ex->format == workers::blob_format::ndjson ? record_format::ndjson
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

void engine::impl::roll_all_appends() {
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
bool engine::impl::write_one(batch& bt) {
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

} // namespace shoal::workers::persistor
