// The work table's housekeeping: the layout check and migration (layout 1 → 2), sweep of old
// done records (with the history copy), and the invariant check (SCHEMA.md "Migration",
// "Invariants").

#include "workers/claim/work_table_internal.hpp"

namespace shoal::workers {

using namespace std::chrono;

// -- layout ---------------------------------------------------------------------------------------

// Makes sure partition `pk` is on layout 2: once per partition and process, a point read of
// its meta row; a partition without one is migrated (SCHEMA.md "Migration").
result<void> work_table::impl::ensure_layout(const std::string& pk, migrate_result* stats, bool force) const {
  if (!force && layout_known(pk)) return {};
  if (stats) ++stats->partitions;
  auto meta = table.get(pk, meta_key);
  if (meta && int_prop(*meta, p_layout) >= layout_version && !force) {
    std::lock_guard lock(layout_mu);
    layout2.insert(pk);
    if (stats) ++stats->already;
    return {};
  }
  if (!meta && meta.error().code != storage::errc::not_found)
    return std::unexpected(storage_error(meta.error(), "reading the meta row of " + pk));
  if (meta && int_prop(*meta, p_layout) >= layout_version && stats) ++stats->already;
  if (auto ok = migrate_partition(pk, stats); !ok) return ok;
  table_entity m = keys_of(pk, meta_key);
  m.set(p_layout, layout_version);
  if (auto w = single(op(table_operation_kind::insert_or_merge, m)); !w)
    return std::unexpected(storage_error(w.error(), "writing the meta row of " + pk));
  std::lock_guard lock(layout_mu);
  layout2.insert(pk);
  return {};
}

// Gives every layout-1 pending/claimed record of `pk` its ticket: per record one transaction
// of a conditional merge of the record (status open, ticket) and the ticket's insert.
result<void> work_table::impl::migrate_partition(const std::string& pk, migrate_result* stats) const {
  storage::table_query q;
  q.filter = table_filter::partition(pk) &&
             (table_filter::eq(p_status, s_pending) || table_filter::eq(p_status, s_claimed)) && record_rows();
  auto legacy = table.query_all(q);
  if (!legacy) return std::unexpected(storage_error(legacy.error(), "listing layout-1 records of " + pk));
  if (legacy->empty()) return {};
  auto now = server_now();
  if (!now) return std::unexpected(now.error());
  std::vector<table_entity> todo = std::move(*legacy);
  for (int round = 0; round < 4 && !todo.empty(); ++round) {
    std::vector<std::vector<table_operation>> changes;
    std::vector<table_entity> sources;
    for (auto& e : todo) {
      if (e.row_key.size() > max_record_key_chars) {
        if (stats)
          stats->skipped.push_back(id_from_key(e.row_key) + ": id too long for a ticket key (" +
                                   std::to_string(e.row_key.size()) + " > " + std::to_string(max_record_key_chars) + ")");
        continue;
      }
      const std::string st = str_prop(e, p_status) == s_claimed ? s_claimed : s_pending;
      auto t = make_ticket(pk, e.row_key, time_prop(e, p_not_before), st, str_prop(e, p_owner), int_prop(e, p_gen),
                           static_cast<std::int32_t>(int_prop(e, p_attempts)),
                           e.find(p_lease_until) ? tt(time_prop(e, p_lease_until)) : epoch_tt(), str_prop(e, p_last_error), e, *now);
      table_entity patch = keys_of(pk, e.row_key);
      patch.set(p_status, s_open);
      patch.set(p_ticket, t.row_key);
      changes.push_back({op(table_operation_kind::merge, std::move(patch), e.etag), op(table_operation_kind::insert, std::move(t))});
      sources.push_back(std::move(e));
    }
    auto res = apply_changes(changes, on_412::resubmit, nullptr);
    std::vector<table_entity> again;
    for (std::size_t i = 0; i < res.size(); ++i) {
      if (res[i].ok()) {
        claim_counters::add(counters.migrated);
        if (stats) ++stats->migrated;
        continue;
      }
      if (res[i].err.code == storage::errc::precondition_failed || res[i].maybe_landed) {
        // The record changed since it was read (a layout-1 claimer, or our retried request
        // landed): read it again and migrate what it is now.
        auto cur = table.get(pk, sources[i].row_key);
        if (cur && (str_prop(*cur, p_status) == s_pending || str_prop(*cur, p_status) == s_claimed)) again.push_back(std::move(*cur));
        else if (!cur && cur.error().code != storage::errc::not_found)
          return std::unexpected(storage_error(cur.error(), "re-reading a layout-1 record of " + pk));
        continue;
      }
      if (stats) stats->skipped.push_back(id_from_key(sources[i].row_key) + ": " + res[i].err.describe());
    }
    todo = std::move(again);
  }
  for (const auto& e : todo)
    if (stats) stats->skipped.push_back(id_from_key(e.row_key) + ": kept changing during the migration");
  return {};
}

// -- housekeeping -----------------------------------------------------------------------------------

result<sweep_result> work_table::sweep(std::string_view queue, std::span<const std::uint32_t> shards,
                                       std::optional<milliseconds> retention) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  std::vector<std::uint32_t> which(shards.begin(), shards.end());
  if (which.empty())
    for (std::uint32_t s = 0; s < m.opts.work.shards; ++s) which.push_back(s);
  auto now = m.server_now();
  if (!now) return std::unexpected(now.error());
  const sys_tp cutoff = *now - retention.value_or(milliseconds(m.opts.work.done_retention_ms));
  sweep_result out;
  for (auto shard : which) {
    if (shard >= m.opts.work.shards)
      return workers::fail(errc::invalid_argument, "shard " + std::to_string(shard) + " out of range");
    const std::string pk = partition_key(queue, shard);
    ++out.partitions;
    storage::table_query q;
    q.filter = table_filter::partition(pk) && table_filter::eq(p_status, s_done) && table_filter::lt(p_updated, tt(cutoff));
    if (!m.history) q.select = {"PartitionKey", "RowKey", p_status};
    auto done = m.table.query_all(q);
    if (!done) return std::unexpected(storage_error(done.error(), "listing done records of " + pk));
    if (done->empty()) continue;
    // The meta row: its count of removed records moves with every deleting transaction.
    std::optional<table_entity> meta;
    auto read_meta = [&]() -> result<void> {
      auto mr = m.table.get(pk, meta_key);
      if (mr) meta = std::move(*mr);
      else if (mr.error().code == storage::errc::not_found) meta.reset();
      else return std::unexpected(storage_error(mr.error(), "reading the meta row of " + pk));
      return {};
    };
    if (auto ok = read_meta(); !ok) return std::unexpected(ok.error());
    std::size_t pos = 0;
    while (pos < done->size()) {
      std::vector<table_entity*> chunk;
      std::size_t bytes = 0;
      while (pos < done->size() && chunk.size() < max_tx_ops - 1) {
        const std::size_t b = 1200 + 2 * (*done)[pos].row_key.size() + json_string_bytes(str_prop((*done)[pos], p_payload)) +
                              json_string_bytes(str_prop((*done)[pos], p_last_error));
        if (!chunk.empty() && bytes + b > max_tx_body_bytes) break;
        bytes += b;
        chunk.push_back(&(*done)[pos++]);
      }
      if (m.history) {
        // Copies first (idempotent upserts): a crash before the delete leaves a copy of a record
        // that is still here, which the next sweep writes again.
        storage::table_transaction copies;
        for (auto* e : chunk) {
          table_entity c = *e;
          c.etag.clear();
          c.timestamp.reset();
          copies.insert_or_replace(std::move(c));
        }
        if (auto r = m.history->submit_transaction(copies); !r)
          return std::unexpected(storage_error(r.error(), "copying done records of " + pk + " to " + m.history->name()));
      }
      for (int round = 0; round < 8 && !chunk.empty(); ++round) {
        storage::table_transaction tx;
        for (auto* e : chunk) tx.delete_entity(pk, e->row_key, e->etag);
        const std::int64_t before = meta ? int_prop(*meta, p_done_removed) : 0;
        table_entity mp = keys_of(pk, meta_key);
        mp.set(p_done_removed, before + static_cast<std::int64_t>(chunk.size()));
        if (meta) tx.merge(mp, meta->etag);
        else tx.insert(mp);
        auto r = m.submit(tx);
        if (r) {
          out.removed += chunk.size();
          if (m.history) out.archived += chunk.size();
          claim_counters::add(m.counters.swept, chunk.size());
          meta = mp;
          meta->etag = r->etags.empty() ? std::string() : r->etags.back();
          if (meta->etag.empty()) {
            if (auto ok = read_meta(); !ok) return std::unexpected(ok.error());
          }
          break;
        }
        const auto& err = r.error();
        if (err.failed_index && *err.failed_index < chunk.size() &&
            (err.code == storage::errc::precondition_failed || err.code == storage::errc::not_found)) {
          chunk.erase(chunk.begin() + static_cast<std::ptrdiff_t>(*err.failed_index)); // requeued or purged meanwhile
          continue;
        }
        if (err.failed_index && *err.failed_index == chunk.size()) { // another sweeper moved the meta row
          if (auto ok = read_meta(); !ok) return std::unexpected(ok.error());
          continue;
        }
        return std::unexpected(storage_error(err, "removing done records of " + pk));
      }
    }
  }
  return out;
}

result<migrate_result> work_table::migrate(std::string_view queue) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  migrate_result out;
  for (std::uint32_t s = 0; s < m.opts.work.shards; ++s)
    if (auto ok = m.ensure_layout(partition_key(queue, s), &out, true); !ok) return std::unexpected(ok.error());
  return out;
}

result<check_result> work_table::check(std::string_view queue) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  check_result out;
  auto problem = [&](std::string s) {
    if (out.problems.size() < 1000) out.problems.push_back(std::move(s));
  };
  auto ok = for_each_partition(m.table, queue, {"PartitionKey", "RowKey", p_status, p_ticket, p_owner, p_gen},
                               [&](const std::string& pk, partition_rows& rows) {
    out.records += rows.records.size();
    out.tickets += rows.tickets.size();
    std::set<std::string, std::less<>> pointed;
    for (const auto& rec : rows.records) {
      const auto st = str_prop(rec, p_status);
      const auto tk = str_prop(rec, p_ticket);
      const auto where = pk + "/" + id_from_key(rec.row_key);
      if (st == s_open) {
        ++out.open;
        auto it = rows.tickets.find(tk);
        if (tk.empty()) problem(where + ": open without a ticket key");
        else if (it == rows.tickets.end()) problem(where + ": open, its ticket " + tk + " is missing");
        else if (ticket_record_key(tk) != rec.row_key) problem(where + ": its ticket " + tk + " names another record");
        pointed.insert(tk);
      } else if (st == s_done || st == s_dead) {
        if (!tk.empty()) problem(where + ": " + st + " but still names ticket " + tk);
      } else if (st == s_pending || st == s_claimed) {
        problem(where + ": layout 1 (" + st + " without a ticket): run `shoal records migrate`");
      } else {
        problem(where + ": unknown status '" + st + "'");
      }
    }
    for (const auto& [tk, t] : rows.tickets) {
      const auto st = str_prop(t, p_status);
      if (st != s_pending && st != s_claimed) problem(pk + "/" + tk + ": ticket with status '" + st + "'");
      if (!pointed.contains(tk)) problem(pk + "/" + tk + ": ticket of no open record (" + std::string(ticket_record_key(tk)) + ")");
    }
    return true;
  });
  if (!ok) return std::unexpected(ok.error());
  return out;
}

} // namespace shoal::workers
