// The persistor engine's registrations: the sequence counter behind blob names, each committed
// blob's ETL record and catalog entry, and the ack that follows them.
#include "workers/persistor/engine_internal.hpp"

#include <cstdlib>

namespace shoal::workers::persistor {

using namespace detail;

storage::blob_catalog_entry engine::impl::catalog_entry_of(const committed_blob& c) {
  return {.blob = c.name, .dest = c.dest, .date = c.date, .host = c.host,
          .format = std::string(to_string(c.format)), .record_count = c.summary.record_count,
          .container = c.container};
}

// Both registrations, retried until done. False when stopped before.
bool engine::impl::register_fully(const committed_blob& c) {
  return retry_until_ok("registering", c.name, [&] { return register_etl(c); }) &&
         retry_until_ok("cataloguing", c.name, [&] { return register_in_catalog(c); });
}

// Hands a durable, registered batch back to the source and releases what it held.
void engine::impl::finish(pending_ack& p) {
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
result<void> engine::impl::reserve_seq() {
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

result<std::uint64_t> engine::impl::next_seq() {
  std::lock_guard lk(seq_m);
  if (seq_next >= seq_limit)
    if (auto r = reserve_seq(); !r)
      return std::unexpected(r.error());
  return seq_next++;
}

// The ETL record of a committed blob (idempotent: an existing id is left as it is).
result<void> engine::impl::register_etl(const committed_blob& c) {
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
result<void> engine::impl::register_etl_many(std::span<const pending_ack> blobs) {
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
result<void> engine::impl::register_in_catalog(const committed_blob& c) {
  if (!catalog)
    return {};
  auto r = catalog->register_blob(catalog_entry_of(c));
  if (!r)
    return std::unexpected(error::from_storage(r.error(), "registering " + c.name + " in the catalog"));
  stats.catalogued.fetch_add(1, std::memory_order_relaxed);
  return {};
}

} // namespace shoal::workers::persistor
