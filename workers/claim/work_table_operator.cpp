// The work table's operator changes: requeue and purge of selected records.

#include "workers/claim/work_table_internal.hpp"

namespace shoal::workers {

using namespace std::chrono;

// -- operator changes -------------------------------------------------------------------------------

namespace {

// A record selected by requeue/purge: its row and, while open, its ticket.
struct target {
  table_entity record;
  std::optional<table_entity> ticket;
};

} // namespace

// The records `which` selects, by (PK, RK).
static result<std::vector<target>> select_targets(const work_table& t, const storage::table_client& table, std::string_view queue,
                                                  const record_selector& which) {
  const auto shards = t.options().work.shards;
  std::map<std::pair<std::string, std::string>, target> found;
  auto add_record = [&](table_entity rec) -> result<void> {
    target tg{std::move(rec), std::nullopt};
    if (str_prop(tg.record, p_status) == s_open) {
      auto tk = str_prop(tg.record, p_ticket);
      if (!tk.empty()) {
        auto tr = table.get(tg.record.partition_key, tk);
        if (tr) tg.ticket = std::move(*tr);
        else if (tr.error().code != storage::errc::not_found)
          return std::unexpected(storage_error(tr.error(), "reading a ticket of " + tg.record.partition_key));
      }
    }
    auto key = std::pair{tg.record.partition_key, tg.record.row_key};
    found.insert_or_assign(std::move(key), std::move(tg));
    return {};
  };
  for (const auto& id : which.ids) {
    auto rk = escape_key(id);
    if (!rk) return std::unexpected(rk.error());
    auto pk = partition_key(queue, shard_of(id, shards));
    auto e = table.get(pk, *rk);
    if (!e) {
      if (e.error().code == storage::errc::not_found) continue;
      return std::unexpected(storage_error(e.error(), "reading record '" + id + "'"));
    }
    if (auto ok = add_record(std::move(*e)); !ok) return std::unexpected(ok.error());
  }
  // Settled records by status: record rows. Open ones (pending, claimed, stuck): their tickets.
  table_filter settled, live;
  for (auto s : which.statuses) {
    if (s == record_status::done || s == record_status::dead) settled = settled || table_filter::eq(p_status, std::string(to_string(s)));
    else live = live || table_filter::eq(p_status, std::string(to_string(s)));
  }
  if (which.stuck) {
    auto now = t.clock().now();
    if (!now) {
      if (auto ok = t.sync_clock(); !ok) return std::unexpected(ok.error());
      now = t.clock().now();
    }
    live = live || (table_filter::eq(p_status, s_claimed) && table_filter::lt(p_lease_until, tt(*now)));
  }
  if (!settled.empty()) {
    storage::table_query q;
    q.filter = queue_filter(queue) && settled && record_rows();
    auto all = table.query_all(q);
    if (!all) return std::unexpected(storage_error(all.error(), "selecting records of " + std::string(queue)));
    for (auto& e : *all)
      if (auto ok = add_record(std::move(e)); !ok) return std::unexpected(ok.error());
  }
  if (!live.empty()) {
    storage::table_query q;
    q.filter = queue_filter(queue) && ticket_range() && live;
    auto all = table.query_all(q);
    if (!all) return std::unexpected(storage_error(all.error(), "selecting records of " + std::string(queue)));
    for (auto& tk : *all) {
      auto rk = std::string(ticket_record_key(tk.row_key));
      if (rk.empty() || found.contains({tk.partition_key, rk})) continue;
      auto rec = table.get(tk.partition_key, rk);
      if (!rec) {
        if (rec.error().code == storage::errc::not_found) continue;
        return std::unexpected(storage_error(rec.error(), "reading a record of " + tk.partition_key));
      }
      found.insert_or_assign(std::pair{tk.partition_key, rk}, target{std::move(*rec), std::move(tk)});
    }
  }
  std::vector<target> out;
  for (auto& [k, tg] : found) out.push_back(std::move(tg));
  return out;
}

result<std::size_t> work_table::requeue(std::string_view queue, const record_selector& which) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  for (std::uint32_t s = 0; s < m.opts.work.shards; ++s)
    if (auto ok = m.ensure_layout(partition_key(queue, s)); !ok) return std::unexpected(ok.error());
  auto targets = select_targets(*this, m.table, queue, which);
  if (!targets) return std::unexpected(targets.error());
  auto now = m.server_now();
  if (!now) return std::unexpected(now.error());
  // The transaction that requeues one target, or none (open without a ticket: check() says so).
  auto requeue_ops = [&](const target& tg) -> std::optional<std::vector<table_operation>> {
    const auto& rec = tg.record;
    const auto& pk = rec.partition_key;
    const std::string k0 = ticket_key(sys_tp{}, rec.row_key); // claimable at once
    std::vector<table_operation> ops;
    if (tg.ticket) {
      const auto& t = *tg.ticket;
      if (t.row_key == k0) {
        table_entity p = keys_of(pk, k0);
        p.set(p_status, s_pending);
        p.set(p_attempts, std::int32_t{0});
        p.set(p_lease_until, epoch_tt());
        p.set(p_not_before, epoch_tt());
        p.set(p_updated, tt(*now));
        ops.push_back(op(table_operation_kind::merge, std::move(p), t.etag));
      } else {
        auto nt = make_ticket(pk, rec.row_key, sys_tp{}, s_pending, str_prop(t, p_owner), int_prop(t, p_gen), 0, epoch_tt(),
                              str_prop(t, p_last_error), t, *now);
        table_entity rp = keys_of(pk, rec.row_key);
        rp.set(p_ticket, k0);
        rp.set(p_updated, tt(*now));
        ops.push_back(del(pk, t.row_key, t.etag));
        ops.push_back(op(table_operation_kind::insert, std::move(nt)));
        ops.push_back(op(table_operation_kind::merge, std::move(rp), rec.etag));
      }
    } else if (str_prop(rec, p_status) == s_done || str_prop(rec, p_status) == s_dead) {
      auto nt = make_ticket(pk, rec.row_key, sys_tp{}, s_pending, str_prop(rec, p_owner), int_prop(rec, p_gen), 0, epoch_tt(),
                            str_prop(rec, p_last_error), rec, *now);
      table_entity rp = keys_of(pk, rec.row_key);
      rp.set(p_status, s_open);
      rp.set(p_ticket, k0);
      rp.set(p_attempts, std::int32_t{0});
      rp.set(p_updated, tt(*now));
      ops.push_back(op(table_operation_kind::merge, std::move(rp), rec.etag));
      ops.push_back(op(table_operation_kind::insert, std::move(nt)));
    } else {
      return std::nullopt;
    }
    return ops;
  };
  // Whether a target read again is still one `which` selects (a holder's renewal or a claim
  // changed it meanwhile: an id named, or a status still matching, is requeued all the same; a
  // "stuck" claim whose lease was renewed is not stuck any more).
  auto still_selected = [&](const target& tg) {
    if (std::find(which.ids.begin(), which.ids.end(), id_from_key(tg.record.row_key)) != which.ids.end()) return true;
    const table_entity& st = tg.ticket ? *tg.ticket : tg.record;
    auto s = status_prop(st);
    if (s && which.statuses.contains(*s)) return true;
    return which.stuck && tg.ticket && str_prop(*tg.ticket, p_status) == s_claimed && time_prop(*tg.ticket, p_lease_until) < *now;
  };
  std::size_t n = 0;
  std::vector<target> todo = std::move(*targets);
  for (int round = 0; round < 4 && !todo.empty(); ++round) {
    std::map<std::string, std::vector<std::size_t>> groups;
    std::vector<std::vector<table_operation>> all_ops(todo.size());
    for (std::size_t i = 0; i < todo.size(); ++i) {
      auto ops = requeue_ops(todo[i]);
      if (!ops) continue;
      all_ops[i] = std::move(*ops);
      groups[todo[i].record.partition_key].push_back(i);
    }
    std::vector<target> again;
    for (auto& [pk, idx] : groups) {
      std::vector<std::vector<table_operation>> changes;
      for (auto i : idx) changes.push_back(all_ops[i]);
      auto res = m.apply_changes(changes, on_412::resubmit, nullptr);
      for (std::size_t k = 0; k < res.size(); ++k) {
        if (res[k].ok()) {
          ++n;
          continue;
        }
        if (res[k].err.code != storage::errc::precondition_failed && res[k].err.code != storage::errc::not_found && !res[k].maybe_landed)
          continue;
        // Changed since it was read: read it again.
        const auto& rec = todo[idx[k]].record;
        auto cur = m.table.get(pk, rec.row_key);
        if (!cur) continue; // purged meanwhile
        target tg{std::move(*cur), std::nullopt};
        if (str_prop(tg.record, p_status) == s_open) {
          auto t = m.table.get(pk, str_prop(tg.record, p_ticket));
          if (!t) continue;
          tg.ticket = std::move(*t);
        }
        if (still_selected(tg)) again.push_back(std::move(tg));
      }
    }
    todo = std::move(again);
  }
  return n;
}

result<std::size_t> work_table::purge(std::string_view queue, const record_selector& which) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  for (std::uint32_t s = 0; s < m.opts.work.shards; ++s)
    if (auto ok = m.ensure_layout(partition_key(queue, s)); !ok) return std::unexpected(ok.error());
  auto targets = select_targets(*this, m.table, queue, which);
  if (!targets) return std::unexpected(targets.error());
  std::map<std::string, std::vector<std::pair<std::vector<table_operation>, std::string>>> groups;
  for (const auto& tg : *targets) {
    std::vector<table_operation> ops{del(tg.record.partition_key, tg.record.row_key, tg.record.etag)};
    if (tg.ticket) ops.push_back(del(tg.ticket->partition_key, tg.ticket->row_key, tg.ticket->etag));
    groups[tg.record.partition_key].push_back({std::move(ops), str_prop(tg.record, p_payload_blob)});
  }
  std::size_t n = 0;
  for (auto& [pk, items] : groups) {
    std::vector<std::vector<table_operation>> changes;
    for (auto& it : items) changes.push_back(it.first);
    auto res = m.apply_changes(changes, on_412::resubmit, nullptr);
    for (std::size_t i = 0; i < res.size(); ++i) {
      if (!res[i].ok()) continue;
      ++n;
      const auto& ref = items[i].second;
      if (!ref.empty() && m.blobs) {
        auto slash = ref.find('/');
        if (slash != std::string::npos) (void)m.blobs->delete_blob(std::string_view(ref).substr(0, slash), std::string_view(ref).substr(slash + 1));
      }
    }
  }
  return n;
}

} // namespace shoal::workers
