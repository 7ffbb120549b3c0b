// The work table's row helpers: ticket keys, key ranges, property reads, payload columns, and
// the operations and tickets every piece builds (SCHEMA.md "Keys", "Properties").

#include "workers/claim/work_table_internal.hpp"

#include "storage/encoding.hpp"

#include <cstdio>

namespace shoal::workers::work_table_detail {

using namespace std::chrono;

table_time tt(sys_tp t) { return storage::to_table_time(t); }
table_time epoch_tt() { return table_time{}; }
sys_tp as_sys(table_time t) { return sys_tp(duration_cast<system_clock::duration>(t.time_since_epoch())); }

// "%|{due}|{rk}": due truncated to the 100 ns of Edm.DateTime, the same value as not_before.
std::string ticket_key(sys_tp due, std::string_view rk) {
  std::string k(ticket_prefix);
  k += storage::format_iso8601(as_sys(tt(due)));
  k += '|';
  k += rk;
  return k;
}
// Every ticket due strictly before `now` sorts below this key.
std::string ticket_bound(sys_tp now) { return std::string(ticket_prefix) + storage::format_iso8601(as_sys(tt(now))); }
bool is_ticket(std::string_view rk) { return rk.starts_with(ticket_prefix); }
bool is_meta(std::string_view rk) { return rk.starts_with("%~"); }
// The record RowKey a ticket belongs to ("" when the key is malformed).
std::string_view ticket_record_key(std::string_view tk) {
  if (!is_ticket(tk) || tk.size() <= ticket_head_chars || tk[ticket_head_chars - 1] != '|') return {};
  return tk.substr(ticket_head_chars);
}
table_filter ticket_range() {
  return table_filter::ge("RowKey", std::string(ticket_prefix)) && table_filter::lt("RowKey", std::string(ticket_end));
}
// Rows that are neither tickets nor meta: record rows.
table_filter record_rows() {
  return table_filter::lt("RowKey", std::string(ticket_prefix)) || table_filter::ge("RowKey", std::string(ticket_end));
}

// Bytes `s` takes as a JSON string value (escapes included).
std::size_t json_string_bytes(std::string_view s) {
  std::size_t n = s.size() + 2;
  for (unsigned char c : s) {
    if (c < 0x20) n += 5;
    else if (c == '"' || c == '\\') n += 1;
  }
  return n;
}

// Cuts `s` to at most `max` bytes without splitting a UTF-8 sequence.
std::string truncate_utf8(std::string_view s, std::size_t max) {
  if (s.size() <= max) return std::string(s);
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n));
}

std::int64_t int_prop(const table_entity& e, std::string_view name) {
  return e.get_int64(name).value_or(0);
}

std::string str_prop(const table_entity& e, std::string_view name) {
  return e.get_string(name).value_or(std::string{});
}

sys_tp time_prop(const table_entity& e, std::string_view name) {
  return e.get_time(name).value_or(sys_tp{});
}

// The status of a ticket or a layout-1 record row (pending/claimed), or of a settled record.
std::optional<record_status> status_prop(const table_entity& e) {
  auto s = parse_record_status(str_prop(e, p_status));
  if (!s) return std::nullopt;
  return *s;
}

// Parses "{queue}-{shard:02x}".
std::uint32_t shard_from_partition(std::string_view pk) {
  auto dash = pk.rfind('-');
  if (dash == std::string_view::npos) return 0;
  std::uint32_t v = 0;
  for (char c : pk.substr(dash + 1)) {
    int d = storage::hex_value(c);
    v = v * 16 + static_cast<std::uint32_t>(std::max(d, 0));
  }
  return v;
}

std::string id_from_key(std::string_view rk) {
  auto id = unescape_key(rk);
  return id ? *id : std::string(rk);
}

std::string payload_blob_name(std::string_view queue, std::uint32_t shard, std::string_view rk) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%02x", shard & 0xFFu);
  return "work/" + std::string(queue) + "/" + buf + "/" + std::string(rk) + ".payload";
}

table_filter queue_filter(std::string_view queue) {
  return table_filter::starts_with("PartitionKey", std::string(queue) + "-");
}

error storage_error(const storage::error& e, std::string_view what) {
  error out = error::from_storage(e, what);
  if (e.code == storage::errc::not_found) out.code = errc::not_found;
  return out;
}

table_entity keys_of(std::string_view pk, std::string_view rk) {
  table_entity e;
  e.partition_key = std::string(pk);
  e.row_key = std::string(rk);
  return e;
}

table_operation op(table_operation_kind k, table_entity e, std::string if_match) {
  return table_operation{k, std::move(e), std::move(if_match)};
}
table_operation del(std::string_view pk, std::string_view rk, std::string if_match) {
  return op(table_operation_kind::delete_entity, keys_of(pk, rk), std::move(if_match));
}

// Copies the payload columns of `from` (a record row or a ticket) into `to`.
void copy_payload(const table_entity& from, table_entity& to) {
  for (const char* p : {p_payload, p_payload_blob, p_payload_bytes})
    if (const auto* v = from.find(p)) to.set(p, *v);
}

// A ticket for record row key `rk` due at `due` with the given state; payload from `src`.
table_entity make_ticket(std::string_view pk, std::string_view rk, sys_tp due, const std::string& status,
                         const std::string& owner, std::int64_t gen, std::int32_t attempts, table_time lease_until,
                         const std::string& last_error, const table_entity& payload_src, sys_tp now) {
  table_entity t = keys_of(pk, ticket_key(due, rk));
  t.set(p_status, status);
  t.set(p_owner, owner);
  t.set(p_gen, gen);
  t.set(p_attempts, attempts);
  t.set(p_lease_until, lease_until);
  t.set(p_not_before, tt(due));
  if (!last_error.empty()) t.set(p_last_error, last_error);
  copy_payload(payload_src, t);
  t.set(p_updated, tt(now));
  return t;
}

} // namespace shoal::workers::work_table_detail
