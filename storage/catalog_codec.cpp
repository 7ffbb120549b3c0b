// The catalog's row codec: WAL rows and their JSON `record`, counter/checkpoint rows, index
// entities, continuation tokens (layout: catalog.hpp).

#include "storage/catalog_internal.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <limits>

namespace shoal::storage::catalog_detail {

std::string pad(std::uint64_t seq) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%020llu", static_cast<unsigned long long>(seq));
  return buf;
}

// The last possible padded sequence: an upper bound that excludes `counter` and `checkpoint`.
const std::string& max_pad() {
  static const std::string s = pad(std::numeric_limits<std::uint64_t>::max());
  return s;
}

std::optional<std::uint64_t> parse_seq(std::string_view rk) {
  if (rk.size() != 20)
    return std::nullopt;
  std::uint64_t v = 0;
  for (char c : rk) {
    if (c < '0' || c > '9')
      return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

std::uint64_t int_prop(const table_entity& e, std::string_view name) {
  const std::int64_t v = e.get_int64(name).value_or(0);
  return v < 0 ? 0 : static_cast<std::uint64_t>(v);
}

std::string record_to_json(const catalog_fields& r) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : r)
    j[k] = v;
  return j.dump();
}

result<catalog_fields> record_from_json(std::string_view text) {
  try {
    auto j = nlohmann::json::parse(text);
    if (!j.is_object())
      return std::unexpected(make_error(errc::bad_response, "WAL record is not a JSON object"));
    catalog_fields out;
    for (const auto& [k, v] : j.items()) {
      if (!v.is_string())
        return std::unexpected(make_error(errc::bad_response, "WAL record field '" + k + "' is not a string"));
      out.emplace(k, v.get<std::string>());
    }
    return out;
  } catch (const std::exception& ex) {
    return std::unexpected(make_error(errc::bad_response, std::string("WAL record is not JSON: ") + ex.what()));
  }
}

result<catalog_wal_entry> entry_from_entity(const table_entity& e) {
  auto seq = parse_seq(e.row_key);
  if (!seq)
    return std::unexpected(make_error(errc::bad_response, "WAL row '" + e.row_key + "' is not a sequence number"));
  catalog_wal_entry out;
  out.seq = *seq;
  const auto* op = e.get<std::string>("op");
  if (!op || (*op != "insert" && *op != "delete"))
    return std::unexpected(make_error(errc::bad_response, "WAL entry " + e.row_key + " has no valid op"));
  out.op = *op == "insert" ? catalog_op::insert : catalog_op::remove;
  const auto* rec = e.get<std::string>("record");
  if (!rec)
    return std::unexpected(make_error(errc::bad_response, "WAL entry " + e.row_key + " has no record"));
  auto fields = record_from_json(*rec);
  if (!fields)
    return std::unexpected(with_context(fields.error(), "WAL entry " + e.row_key));
  out.record = std::move(*fields);
  if (const auto* id = e.get<std::string>("op_id"))
    out.op_id = *id;
  if (const auto* w = e.get<std::string>("writer"))
    out.writer = *w;
  if (const auto* a = e.get<bool>("applied"))
    out.applied = *a;
  out.timestamp = e.timestamp;
  return out;
}

table_entity entry_to_entity(const catalog_wal_entry& e) {
  table_entity t;
  t.partition_key = wal_pk;
  t.row_key = pad(e.seq);
  t.set("op", std::string(e.op == catalog_op::insert ? "insert" : "delete"));
  t.set("record", record_to_json(e.record));
  t.set("op_id", e.op_id);
  t.set("writer", e.writer);
  t.set("applied", e.applied);
  return t;
}

table_entity seq_row(std::string_view rk, std::uint64_t seq) {
  table_entity t;
  t.partition_key = wal_pk;
  t.row_key = rk;
  t.set("seq", static_cast<std::int64_t>(seq));
  return t;
}

table_entity applied_row(std::uint64_t seq) {
  table_entity t;
  t.partition_key = wal_pk;
  t.row_key = pad(seq);
  t.set("applied", true);
  return t;
}

// The index entity entry `e` wants under index key `key` (RowKey `rk`): the record's fields
// (none for a delete), `_seq` and `_del`. Errors: bad_response (the entry lacks the key).
result<table_entity> index_entity(const catalog_wal_entry& e, const std::string& key, const std::string& rk) {
  auto it = e.record.find(key);
  if (it == e.record.end())
    return std::unexpected(make_error(errc::bad_response, "WAL entry " + std::to_string(e.seq) +
                                                              " lacks index key '" + key + "'"));
  table_entity desired;
  desired.partition_key = catalog::partition_key(key, it->second);
  desired.row_key = rk;
  if (e.op == catalog_op::insert)
    for (const auto& [f, v] : e.record)
      desired.set(f, v);
  desired.set(std::string(seq_prop), static_cast<std::int64_t>(e.seq));
  desired.set(std::string(del_prop), e.op == catalog_op::remove);
  return desired;
}

// Continuation tokens: "{NextPartitionKey}|{NextRowKey}" (the service's tokens hold no '|').
std::string encode_continuation(const table_continuation& c) {
  return c.next_partition_key + "|" + c.next_row_key;
}

std::optional<table_continuation> decode_continuation(std::string_view s) {
  auto bar = s.find('|');
  if (bar == std::string_view::npos || bar == 0)
    return std::nullopt;
  return table_continuation{std::string(s.substr(0, bar)), std::string(s.substr(bar + 1))};
}

catalog_record record_from_index(const table_entity& e) {
  catalog_record r;
  for (const auto& [k, v] : e.properties)
    if (!k.empty() && k[0] != '_')
      if (const auto* s = std::get_if<std::string>(&v))
        r.fields.emplace(k, *s);
  r.seq = int_prop(e, seq_prop);
  return r;
}

} // namespace shoal::storage::catalog_detail
