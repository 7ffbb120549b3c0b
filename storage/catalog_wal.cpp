// The catalog's write path: insert/remove/insert_many, validation, the WAL append with its
// counter race, and the fast checkpoint move (steps 1, 2, 4+5 of catalog.hpp).

#include "storage/catalog.hpp"

#include "storage/backoff.hpp"
#include "storage/catalog_internal.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <mutex>
#include <thread>
#include <utility>

namespace shoal::storage {

using namespace catalog_detail;

// -- writes ---------------------------------------------------------------------------------------

void catalog::backoff(int attempt) const {
  // storage/backoff.hpp's policy: contention_delay doubling per lost race, ±50 %, capped.
  const auto delay = backoff_delay({opts_.contention_delay, opts_.max_contention_delay, 0.5}, attempt + 1,
                                   opts_.random_unit ? opts_.random_unit() : backoff_random_unit());
  if (opts_.sleep)
    opts_.sleep(delay);
  else
    std::this_thread::sleep_for(delay);
}

result<catalog_write_result> catalog::insert(const catalog_fields& record) const {
  auto w = write(catalog_op::insert, std::span(&record, 1));
  if (!w)
    return std::unexpected(w.error());
  return w->front();
}

result<std::vector<catalog_write_result>> catalog::insert_many(std::span<const catalog_fields> records) const {
  return write(catalog_op::insert, records);
}

result<catalog_write_result> catalog::remove(const catalog_fields& record) const {
  // Only the row key and the index values identify a record; the WAL keeps just those.
  catalog_fields keys;
  for (const auto& k : schema_.index_keys)
    if (auto it = record.find(k); it != record.end())
      keys.emplace(k, it->second);
  if (auto it = record.find(schema_.row_key); it != record.end())
    keys.emplace(schema_.row_key, it->second);
  auto w = write(catalog_op::remove, std::span(&keys, 1));
  if (!w)
    return std::unexpected(w.error());
  return w->front();
}

result<catalog_wal_entry> catalog::prepare(catalog_op op, const catalog_fields& record) const {
  auto rk_it = record.find(schema_.row_key);
  if (rk_it == record.end() || rk_it->second.empty())
    return std::unexpected(error::invalid("record lacks the row key field '" + schema_.row_key + "'"));
  for (const auto& k : schema_.index_keys)
    if (!record.contains(k))
      return std::unexpected(error::invalid("record lacks the index key field '" + k + "'"));
  for (const auto& [k, v] : record) {
    if (auto ok = validate_property_name(k); !ok)
      return std::unexpected(error::invalid("record field '" + k + "': " + ok.error().message));
    if (k[0] == '_')
      return std::unexpected(error::invalid("record field '" + k + "' starts with '_', which the catalog reserves"));
  }
  catalog_wal_entry entry;
  entry.op = op;
  entry.record = record;
  entry.op_id = random_hex128();
  entry.writer = opts_.writer_id;
  if (auto ok = validate_entity(entry_to_entity(entry)); !ok)
    return std::unexpected(with_context(ok.error(), "WAL entry"));
  const std::string rk = row_key(schema_, record);
  for (const auto& k : schema_.index_keys) {
    table_entity e;
    e.partition_key = partition_key(k, record.at(k));
    e.row_key = rk;
    for (const auto& [f, v] : record)
      e.set(f, v);
    e.set(std::string(seq_prop), std::int64_t{0});
    e.set(std::string(del_prop), false);
    if (auto ok = validate_entity(e); !ok)
      return std::unexpected(with_context(ok.error(), "index entity for key '" + k + "'"));
  }
  return entry;
}

result<std::vector<catalog_write_result>> catalog::write(catalog_op op, std::span<const catalog_fields> records) const {
  std::vector<catalog_write_result> out;
  if (records.empty())
    return out;

  // 1. Validate everything that will be written before anything is.
  std::vector<catalog_wal_entry> entries;
  entries.reserve(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    auto e = prepare(op, records[i]);
    if (!e)
      return std::unexpected(records.size() == 1 ? e.error()
                                                 : with_context(e.error(), "record " + std::to_string(i) + " of " +
                                                                               std::to_string(records.size())));
    entries.push_back(std::move(*e));
  }
  out.resize(entries.size());

  // 2. Sequence numbers and WAL append, atomically: one transaction per group of at most 99
  // entries (plus the counter), groups in order, so the records get ascending numbers.
  std::vector<table_entity> wal_rows;
  wal_rows.reserve(entries.size());
  for (const auto& e : entries)
    wal_rows.push_back(entry_to_entity(e));
  for (auto [b, e] : batch_ranges(wal_rows, table_limits::max_batch_operations - 1)) {
    int attempts = 1;
    if (auto r = append(std::span(entries).subspan(b, e - b), attempts); !r)
      return std::unexpected(r.error());
    for (std::size_t i = b; i < e; ++i) {
      out[i].seq = entries[i].seq;
      out[i].sequence_attempts = attempts;
    }
  }
  if (opts_.fault && opts_.fault(write_stage::after_wal_append, 0))
    return std::unexpected(fault_error(write_stage::after_wal_append, 0));

  // 3. Fan-out.
  auto applied = entries.size() == 1 ? apply(entries.front(), true) : apply_many(entries, true);
  if (!applied)
    return std::unexpected(applied.error());
  const std::size_t index_entities = entries.size() * schema_.index_keys.size();

  // 4+5 fast: when this writer's last answer says the checkpoint stands right before our
  // entries (and they are contiguous: no other writer's entry among them), every entry up to
  // ours is applied, so the checkpoint can move past ours at once, If-Match the ETag we hold:
  // one request instead of marking the entries applied, reading the checkpoint, scanning the
  // WAL and writing it. An entry at or below the checkpoint counts as applied whatever its
  // `applied` flag says. Any doubt (no cached value, a 412: another writer moved it) takes the
  // general path below.
  const std::uint64_t first = out.front().seq, last = out.back().seq;
  std::optional<std::pair<std::uint64_t, std::string>> known;
  {
    std::lock_guard lk(cache_->m);
    known = cache_->checkpoint;
  }
  const bool fast = known && known->first + 1 == first && last - first + 1 == entries.size();
  if (fast) {
    // (No marks on this path: a stop here leaves the entries for the next advance or recover.)
    if (opts_.fault && opts_.fault(write_stage::after_mark_applied, index_entities))
      return std::unexpected(fault_error(write_stage::after_mark_applied, index_entities));
    auto moved = wal_.merge(seq_row(checkpoint_rk, last), known->second);
    if (moved) {
      {
        std::lock_guard lk(cache_->m);
        cache_->checkpoint.emplace(last, moved->etag);
      }
      for (auto& w : out)
        w.checkpoint = last;
      return out;
    }
    std::lock_guard lk(cache_->m);
    cache_->checkpoint.reset();
  }

  // 4. Mark applied.
  if (auto r = mark_applied_many(entries); !r)
    return std::unexpected(with_context(r.error(), entries.size() == 1
                                                       ? "marking WAL entry " + std::to_string(out.front().seq) + " applied"
                                                       : "marking WAL entries " + std::to_string(out.front().seq) +
                                                             ".." + std::to_string(out.back().seq) + " applied"));
  if (!fast && opts_.fault && opts_.fault(write_stage::after_mark_applied, index_entities))
    return std::unexpected(fault_error(write_stage::after_mark_applied, index_entities));

  // 5. Checkpoint, once for the whole call. The writes are complete; a failed advance is caught
  // up later.
  auto cp = advance(nullptr, nullptr, false);
  if (cp)
    for (auto& w : out)
      w.checkpoint = *cp;
  else
    spdlog::warn("catalog {}: checkpoint advance after seq {} failed: {}", name_, out.back().seq,
                 cp.error().describe());
  return out;
}

result<void> catalog::append(std::span<catalog_wal_entry> entries, int& attempts) const {
  const std::uint64_t k = entries.size();
  const int max_attempts = std::max(1, opts_.max_sequence_attempts);
  for (int attempt = 1; attempt <= max_attempts; ++attempt) {
    attempts = attempt;
    // The counter as our own last append left it, if we hold that: no read (a stale value is a
    // 412 that costs the read after all). Else read it.
    std::optional<std::pair<std::uint64_t, std::string>> known;
    {
      std::lock_guard lk(cache_->m);
      known = std::exchange(cache_->counter, std::nullopt);
    }
    const bool cached = known.has_value();
    if (!known) {
      auto counter = wal_.get(wal_pk, counter_rk);
      if (!counter)
        return std::unexpected(with_context(counter.error(), "reading the WAL counter of catalog '" + name_ + "'"));
      known.emplace(int_prop(*counter, "seq"), counter->etag);
    }
    const std::uint64_t n = known->first;
    // One MERGE reserves n+1..n+k; the k entries commit with it or not at all.
    table_transaction tx;
    tx.merge(seq_row(counter_rk, n + k), known->second);
    for (std::uint64_t i = 0; i < k; ++i) {
      entries[i].seq = n + 1 + i;
      tx.insert(entry_to_entity(entries[i]));
    }
    auto done = wal_.submit_transaction(tx);
    if (done) {
      if (!done->etags.empty()) {
        std::lock_guard lk(cache_->m);
        cache_->counter.emplace(n + k, done->etags.front());
      }
      return {};
    }
    const auto& err = done.error();
    if (cached && err.code == errc::precondition_failed && err.attempts <= 1) {
      --attempt; // another writer moved the counter since our last append: read it, no back-off
      continue;
    }
    // The transaction may have committed although we saw a failure (an answer lost in transit
    // and a retry that then hit the changed counter, or a timeout): entry n+1 carries our first
    // op_id exactly when it did (and then so do n+2..n+k: the transaction is atomic).
    if (err.code == errc::precondition_failed || err.code == errc::conflict || err.attempts > 1 || err.retryable) {
      auto stored = wal_.get(wal_pk, pad(n + 1));
      if (stored) {
        if (const auto* id = stored->get<std::string>("op_id"); id && *id == entries.front().op_id)
          return {};
      } else if (stored.error().code != errc::not_found) {
        return std::unexpected(with_context(stored.error(), "checking WAL entry " + std::to_string(n + 1)));
      }
      if (err.code == errc::conflict && err.failed_index && *err.failed_index >= 1) {
        // Entry n+failed_index exists but the counter said n: the counter was rolled back by
        // hand. Move it forward past the highest entry rather than loop forever.
        const std::uint64_t found = n + *err.failed_index;
        spdlog::warn("catalog {}: WAL entry {} exists while the counter is {}; repairing the counter", name_, found, n);
        table_query q;
        q.filter = table_filter::partition(wal_pk) && table_filter::gt("RowKey", pad(n)) &&
                   table_filter::le("RowKey", max_pad());
        std::uint64_t top = found;
        auto seen = wal_.for_each(q, [&top](const table_entity& e) {
          if (auto s = parse_seq(e.row_key))
            top = std::max(top, *s);
          return true;
        });
        if (!seen)
          return std::unexpected(seen.error());
        (void)wal_.merge(seq_row(counter_rk, top), known->second);
        continue;
      }
      if (err.code == errc::precondition_failed || err.code == errc::conflict || err.retryable) {
        backoff(attempt);
        continue;
      }
    }
    return std::unexpected(with_context(err, "appending to the WAL of catalog '" + name_ + "'"));
  }
  return std::unexpected(make_error(errc::conflict, "catalog '" + name_ + "': lost the WAL counter race " +
                                                        std::to_string(max_attempts) + " times"));
}

} // namespace shoal::storage
