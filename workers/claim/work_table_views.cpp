// The work table's operator views: get, list, counts, oldest_waiting, has_open, and the
// partition walk they (and check) use.

#include "workers/claim/work_table_internal.hpp"

namespace shoal::workers {

using namespace std::chrono;

// -- the view of a record -------------------------------------------------------------------------

// The view of a record from its record row and, while it is open, its ticket.
record_view work_table::impl::view(const table_entity& rec, const table_entity* ticket) const {
  record_view v;
  v.partition_key = rec.partition_key;
  v.row_key = rec.row_key;
  auto dash = rec.partition_key.rfind('-');
  v.queue = dash == std::string::npos ? rec.partition_key : rec.partition_key.substr(0, dash);
  v.shard = shard_from_partition(rec.partition_key);
  v.id = id_from_key(rec.row_key);
  const table_entity& st = ticket ? *ticket : rec;
  v.status = status_prop(st).value_or(record_status::pending); // "open" without its ticket: pending
  v.owner = str_prop(st, p_owner);
  v.gen = int_prop(st, p_gen);
  v.attempts = static_cast<std::int32_t>(int_prop(st, p_attempts));
  v.not_before = time_prop(st, p_not_before);
  v.lease_until = time_prop(st, p_lease_until);
  v.last_error = st.find(p_last_error) ? str_prop(st, p_last_error) : str_prop(rec, p_last_error);
  v.payload = str_prop(rec, p_payload);
  v.payload_blob = str_prop(rec, p_payload_blob);
  v.payload_bytes = int_prop(rec, p_payload_bytes);
  v.created = time_prop(rec, p_created);
  v.updated = time_prop(st, p_updated);
  const auto& ts = st.timestamp ? st.timestamp : rec.timestamp;
  if (ts) v.timestamp = as_sys(*ts);
  v.etag = st.etag;
  return v;
}

// A view of a ticket alone (list): the record row's created time is not known.
record_view work_table::impl::view_of_ticket(const table_entity& t) const {
  table_entity rec = keys_of(t.partition_key, ticket_record_key(t.row_key));
  copy_payload(t, rec);
  return view(rec, &t);
}

result<void> work_table_detail::for_each_partition(const storage::table_client& table, std::string_view queue, std::vector<std::string> select,
                                const std::function<bool(const std::string&, partition_rows&)>& fn) {
  storage::table_query q;
  q.filter = queue_filter(queue);
  q.select = std::move(select);
  std::string current;
  partition_rows rows;
  bool stop = false;
  auto flush = [&] {
    if (!current.empty() && !stop) stop = !fn(current, rows);
    rows = partition_rows{};
  };
  auto n = table.for_each(q, [&](const table_entity& e) {
    if (e.partition_key != current) {
      flush();
      current = e.partition_key;
      if (stop) return false;
    }
    if (is_ticket(e.row_key)) rows.tickets.emplace(e.row_key, e);
    else if (is_meta(e.row_key)) rows.meta = e;
    else rows.records.push_back(e);
    return true;
  });
  if (!n) return std::unexpected(storage_error(n.error(), "reading queue " + std::string(queue)));
  flush();
  return {};
}

// -- views ------------------------------------------------------------------------------------------

result<record_view> work_table::get(std::string_view queue, std::string_view id, bool resolve_payload) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  auto rk = escape_key(id);
  if (!rk) return std::unexpected(rk.error());
  auto pk = partition_key(queue, shard_of(id, m.opts.work.shards));
  auto e = m.table.get(pk, *rk);
  if (!e) {
    if (e.error().code == storage::errc::not_found)
      return workers::fail(errc::not_found, "no record '" + std::string(id) + "' in queue '" + std::string(queue) + "'");
    return std::unexpected(storage_error(e.error(), "reading record '" + std::string(id) + "'"));
  }
  std::optional<table_entity> ticket;
  if (str_prop(*e, p_status) == s_open) {
    auto tk = str_prop(*e, p_ticket);
    auto t = tk.empty() ? storage::result<table_entity>(std::unexpected(storage::error::invalid("no ticket"))) : m.table.get(pk, tk);
    if (t) ticket = std::move(*t);
    else if (t.error().code != storage::errc::not_found && t.error().code != storage::errc::invalid_argument)
      return std::unexpected(storage_error(t.error(), "reading the ticket of record '" + std::string(id) + "'"));
  }
  auto v = m.view(*e, ticket ? &*ticket : nullptr);
  if (resolve_payload && !v.payload_blob.empty()) {
    auto p = m.read_payload(*e);
    if (!p) return std::unexpected(p.error());
    v.payload = std::move(*p);
  }
  return v;
}

result<std::vector<record_view>> work_table::list(std::string_view queue, std::optional<record_status> status,
                                                  std::size_t max) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  std::vector<record_view> out;
  if (max == 0) return out;
  auto ok = for_each_partition(m.table, queue, {}, [&](const std::string&, partition_rows& rows) {
    for (const auto& rec : rows.records) {
      const table_entity* t = nullptr;
      if (str_prop(rec, p_status) == s_open) {
        auto it = rows.tickets.find(str_prop(rec, p_ticket));
        if (it != rows.tickets.end()) t = &it->second;
      }
      auto v = m.view(rec, t);
      if (status && v.status != *status) continue;
      out.push_back(std::move(v));
      if (out.size() >= max) return false;
    }
    return true;
  });
  if (!ok) return std::unexpected(ok.error());
  return out;
}

result<record_counts> work_table::counts(std::string_view queue) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  storage::table_query q;
  q.filter = queue_filter(queue);
  q.select = {"PartitionKey", "RowKey", p_status, p_done_removed}; // keys are returned only when selected
  record_counts out;
  auto n = m.table.for_each(q, [&](const table_entity& e) {
    const auto shard = shard_from_partition(e.partition_key);
    if (is_meta(e.row_key)) {
      const auto removed = static_cast<std::size_t>(std::max<std::int64_t>(0, int_prop(e, p_done_removed)));
      if (removed > 0) {
        out.by_status[record_status::done] += removed;
        out.by_shard[shard][record_status::done] += removed;
        out.total += removed;
        out.swept += removed;
      }
      return true;
    }
    if (!is_ticket(e.row_key) && str_prop(e, p_status) == s_open) return true; // counted by its ticket
    auto st = status_prop(e).value_or(record_status::pending);
    ++out.by_status[st];
    ++out.by_shard[shard][st];
    ++out.total;
    return true;
  });
  if (!n) return std::unexpected(storage_error(n.error(), "counting queue " + std::string(queue)));
  return out;
}

result<std::optional<std::pair<std::chrono::system_clock::time_point, bool>>>
work_table::oldest_waiting(std::string_view queue, std::size_t max_scan) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  const auto now = m.clock.now().value_or(std::chrono::system_clock::now());
  storage::table_query q;
  // Tickets that are pending, plus layout-1 record rows that still say so (not yet migrated).
  q.filter = queue_filter(queue) && table_filter::eq(p_status, std::string("pending"));
  q.select = {"RowKey", p_not_before, p_updated, p_created};
  q.max_entities = max_scan;
  std::optional<std::chrono::system_clock::time_point> oldest;
  std::size_t seen = 0;
  auto n = m.table.for_each(q, [&](const table_entity& e) {
    ++seen;
    std::optional<std::chrono::system_clock::time_point> since;
    if (is_ticket(e.row_key)) {
      const sys_tp due = time_prop(e, p_not_before), upd = time_prop(e, p_updated);
      if (due > now) return true; // backing off: not waiting yet
      since = std::max(due, upd);
    } else if (e.properties.contains(p_created)) {
      since = time_prop(e, p_created);
    }
    if (since && *since != sys_tp{} && (!oldest || *since < *oldest)) oldest = since;
    return true;
  });
  if (!n) return std::unexpected(storage_error(n.error(), "reading the pending records of " + std::string(queue)));
  if (!oldest) return std::optional<std::pair<std::chrono::system_clock::time_point, bool>>{};
  return std::optional{std::pair{*oldest, seen >= max_scan}};
}

result<bool> work_table::has_open(std::string_view queue) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  for (std::uint32_t shard = 0; shard < m.opts.work.shards; ++shard) {
    const std::string pk = partition_key(queue, shard);
    if (auto ok = m.ensure_layout(pk); !ok) return std::unexpected(ok.error());
    storage::table_query q;
    q.filter = table_filter::partition(pk) && ticket_range();
    q.select = {"PartitionKey"};
    q.page_size = 1;
    q.max_entities = 1;
    auto all = m.table.query_all(q);
    if (!all) return std::unexpected(storage_error(all.error(), "checking queue " + std::string(queue)));
    if (!all->empty()) return true;
  }
  return false;
}

} // namespace shoal::workers
