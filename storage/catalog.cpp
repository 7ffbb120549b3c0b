// The catalog (see catalog.hpp for the layout and the write/recovery protocol, CATALOG.md for
// the reasoning).

#include "storage/catalog.hpp"

#include "storage/backoff.hpp"
#include "storage/key_escape.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_set>
#include <utility>

namespace shoal::storage {
namespace {

// -- constants of the layout ----------------------------------------------------------------------

constexpr std::string_view meta_pk = "meta";
constexpr std::string_view schema_rk = "schema";
constexpr std::string_view wal_pk = "wal";
constexpr std::string_view counter_rk = "counter";
constexpr std::string_view checkpoint_rk = "checkpoint";
constexpr std::string_view seq_prop = "_seq";
constexpr std::string_view del_prop = "_del";
constexpr std::int32_t layout_version = 1;
constexpr std::size_t max_index_keys = 16;
constexpr std::size_t max_conditions = 8;
constexpr int max_apply_rounds = 64;
constexpr int max_advance_rounds = 64;

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
  if (const auto* v = e.get<std::int64_t>(name))
    return *v < 0 ? 0 : static_cast<std::uint64_t>(*v);
  if (const auto* v = e.get<std::int32_t>(name))
    return *v < 0 ? 0 : static_cast<std::uint64_t>(*v);
  // Azurite may hand back an untagged number as a string in odd cases; accept digits.
  if (const auto* v = e.get<std::string>(name)) {
    std::uint64_t out = 0;
    for (char c : *v) {
      if (c < '0' || c > '9')
        return 0;
      out = out * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return out;
  }
  return 0;
}

error make_error(errc code, std::string msg, std::string service_code = {}) {
  error e;
  e.code = code;
  e.service_code = std::move(service_code);
  e.message = std::move(msg);
  e.attempts = 0;
  return e;
}

error fault_error(write_stage stage, std::size_t done) {
  static constexpr const char* names[] = {"after_wal_append", "after_index_entity", "after_fan_out",
                                          "after_mark_applied"};
  return make_error(errc::server,
                    std::string("catalog write stopped by the fault hook at ") +
                        names[static_cast<int>(stage)] + " (" + std::to_string(done) +
                        " index entities written)",
                    std::string(catalog_fault_injected));
}

bool valid_catalog_name(std::string_view n) {
  if (n.size() < 3 || n.size() > 60)
    return false;
  if (!std::isalpha(static_cast<unsigned char>(n[0])))
    return false;
  return std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)); });
}

std::string default_writer_id() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0)
    std::snprintf(host, sizeof host, "unknown");
  return std::string(host) + "-" + std::to_string(::getpid());
}

std::string random_hex128() {
  thread_local std::mt19937_64 rng{[] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
           static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }()};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i)
      out += sep;
    out += v[i];
  }
  return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  if (s.empty())
    return out;
  std::size_t start = 0;
  for (;;) {
    auto pos = s.find(sep, start);
    out.emplace_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos)
      break;
    start = pos + 1;
  }
  return out;
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

// Consecutive ranges [b, e) of `es` for $batch requests: at most `max_ops` operations each, and
// an estimated body within the 4 MiB limit. The estimate per operation is its JSON, its keys
// percent-encoded (at most 3 bytes per byte) and 1 KiB for the part headers and URL; 64 KiB are
// kept for the framing and an extra operation (the WAL counter). O(total JSON size).
std::vector<std::pair<std::size_t, std::size_t>> batch_ranges(const std::vector<table_entity>& es,
                                                              std::size_t max_ops) {
  constexpr std::size_t budget = table_limits::max_batch_bytes - 64 * 1024;
  std::vector<std::pair<std::size_t, std::size_t>> out;
  std::size_t b = 0;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < es.size(); ++i) {
    const std::size_t op =
        entity_to_json(es[i]).size() + 3 * (es[i].partition_key.size() + es[i].row_key.size()) + 1024;
    if (i > b && (i - b >= max_ops || bytes + op > budget)) {
      out.emplace_back(b, i);
      b = i;
      bytes = 0;
    }
    bytes += op;
  }
  if (b < es.size())
    out.emplace_back(b, es.size());
  return out;
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

} // namespace

// -- schema ---------------------------------------------------------------------------------------

result<void> catalog_schema::validate() const {
  auto field_ok = [](const std::string& f, std::string_view what) -> result<void> {
    if (auto ok = validate_property_name(f); !ok)
      return std::unexpected(error::invalid(std::string(what) + " '" + f + "': " + ok.error().message));
    if (f[0] == '_')
      return std::unexpected(error::invalid(std::string(what) + " '" + f +
                                            "' starts with '_', which the catalog reserves"));
    if (f.find(',') != std::string::npos)
      return std::unexpected(error::invalid(std::string(what) + " '" + f + "' holds a comma"));
    return {};
  };
  if (index_keys.empty() || index_keys.size() > max_index_keys)
    return std::unexpected(error::invalid("a catalog schema needs 1 to 16 index keys"));
  std::set<std::string, std::less<>> seen;
  for (const auto& k : index_keys) {
    if (auto ok = field_ok(k, "index key"); !ok)
      return ok;
    if (!seen.insert(k).second)
      return std::unexpected(error::invalid("index key '" + k + "' is listed twice"));
  }
  if (auto ok = field_ok(row_key, "row key"); !ok)
    return ok;
  if (seen.contains(row_key))
    return std::unexpected(error::invalid("row key '" + row_key + "' must not also be an index key"));
  return {};
}

std::string catalog_schema::describe() const {
  return "index keys [" + join(index_keys, ", ") + "], row key '" + row_key + "'";
}

// -- key helpers ----------------------------------------------------------------------------------

std::string catalog::escape_key(std::string_view raw) { return escape_table_key(raw); }

std::string catalog::partition_key(std::string_view field, std::string_view value) {
  return std::to_string(field.size()) + "_" + std::string(field) + escape_key(value);
}

std::string catalog::fingerprint(const catalog_schema& schema, const catalog_fields& record) {
  // FNV-1a 64 over "len:value;" per index key in schema order (length-prefixed, so
  // ("a;", "b") and ("a", ";b") differ).
  std::uint64_t h = 14695981039346656037ull;
  auto feed = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  for (const auto& k : schema.index_keys) {
    auto it = record.find(k);
    std::string_view v = it == record.end() ? std::string_view{} : std::string_view(it->second);
    feed(std::to_string(v.size()));
    feed(":");
    feed(v);
    feed(";");
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string catalog::row_key(const catalog_schema& schema, const catalog_fields& record) {
  auto it = record.find(schema.row_key);
  return escape_key(it == record.end() ? std::string_view{} : std::string_view(it->second)) + ":" +
         fingerprint(schema, record);
}

// -- open / create / drop -------------------------------------------------------------------------

catalog::catalog(std::string name, catalog_schema schema, catalog_options opts, table_client index,
                 table_client wal)
    : name_(std::move(name)), schema_(std::move(schema)), opts_(std::move(opts)), index_(std::move(index)),
      wal_(std::move(wal)) {
  if (opts_.writer_id.empty())
    opts_.writer_id = default_writer_id();
}

result<catalog> catalog::create(const table_service_client& svc, std::string name, catalog_schema schema,
                                catalog_options opts) {
  if (!valid_catalog_name(name))
    return std::unexpected(error::invalid("catalog name '" + name +
                                          "' must be 3 to 60 letters or digits starting with a letter"));
  if (auto ok = schema.validate(); !ok)
    return std::unexpected(ok.error());
  auto index = svc.table(index_table_name(name));
  auto wal = svc.table(wal_table_name(name));
  if (!index)
    return std::unexpected(index.error());
  if (!wal)
    return std::unexpected(wal.error());
  if (auto r = index->create_table_if_not_exists(); !r)
    return std::unexpected(with_context(r.error(), "creating table " + index->name()));
  if (auto r = wal->create_table_if_not_exists(); !r)
    return std::unexpected(with_context(r.error(), "creating table " + wal->name()));
  // Counter and checkpoint first, the schema row last: a catalog whose schema row exists is
  // complete, so a concurrent open never sees a half-created one.
  for (auto rk : {counter_rk, checkpoint_rk})
    if (auto r = wal->insert(seq_row(rk, 0)); !r && r.error().code != errc::conflict)
      return std::unexpected(with_context(r.error(), "creating the " + std::string(rk) + " row"));
  table_entity s;
  s.partition_key = meta_pk;
  s.row_key = schema_rk;
  s.set("index_keys", join(schema.index_keys, ","));
  s.set("row_key", schema.row_key);
  s.set("layout", layout_version);
  if (auto r = index->insert(s); !r && r.error().code != errc::conflict)
    return std::unexpected(with_context(r.error(), "storing the catalog schema"));
  return open(svc, std::move(name), std::move(schema), std::move(opts));
}

result<catalog> catalog::open(const table_service_client& svc, std::string name,
                              std::optional<catalog_schema> expected, catalog_options opts) {
  if (!valid_catalog_name(name))
    return std::unexpected(error::invalid("catalog name '" + name +
                                          "' must be 3 to 60 letters or digits starting with a letter"));
  if (expected)
    if (auto ok = expected->validate(); !ok)
      return std::unexpected(ok.error());
  auto index = svc.table(index_table_name(name));
  auto wal = svc.table(wal_table_name(name));
  if (!index)
    return std::unexpected(index.error());
  if (!wal)
    return std::unexpected(wal.error());
  auto row = index->get(meta_pk, schema_rk);
  if (!row) {
    if (row.error().code == errc::not_found)
      return std::unexpected(make_error(errc::not_found, "catalog '" + name +
                                                             "' does not exist (no schema row in table " +
                                                             index->name() + "); create it first"));
    return std::unexpected(with_context(row.error(), "reading the schema of catalog '" + name + "'"));
  }
  const auto* keys = row->get<std::string>("index_keys");
  const auto* rk = row->get<std::string>("row_key");
  if (!keys || !rk)
    return std::unexpected(make_error(errc::bad_response, "the schema row of catalog '" + name + "' is damaged"));
  if (auto layout = int_prop(*row, "layout"); layout != static_cast<std::uint64_t>(layout_version))
    return std::unexpected(make_error(errc::conflict,
                                      "catalog '" + name + "' has layout version " + std::to_string(layout) +
                                          "; this client understands version " + std::to_string(layout_version),
                                      std::string(catalog_schema_mismatch)));
  catalog_schema stored{split(*keys, ','), *rk};
  if (expected && *expected != stored)
    return std::unexpected(make_error(errc::conflict,
                                      "catalog '" + name + "' was created with " + stored.describe() +
                                          ", but this client is configured with " + expected->describe() +
                                          "; refusing to open it (writes would corrupt the index)",
                                      std::string(catalog_schema_mismatch)));
  catalog c(std::move(name), std::move(stored), std::move(opts), std::move(*index), std::move(*wal));
  if (c.opts_.recover_on_open)
    if (auto r = c.recover(); !r)
      return std::unexpected(with_context(r.error(), "recovering catalog '" + c.name_ + "' on open"));
  return c;
}

result<void> catalog::drop(const table_service_client& svc, std::string_view name) {
  if (!valid_catalog_name(name))
    return std::unexpected(error::invalid("catalog name '" + std::string(name) + "' is not valid"));
  for (const auto& t : {index_table_name(name), wal_table_name(name)})
    if (auto r = svc.delete_table(t); !r && r.error().code != errc::not_found)
      return std::unexpected(r.error());
  return {};
}

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

result<void> catalog::apply(const catalog_wal_entry& e, bool inject_faults) const {
  const std::string rk = row_key(schema_, e.record);
  std::size_t done = 0;
  for (const auto& k : schema_.index_keys) {
    auto desired = index_entity(e, k, rk);
    if (!desired)
      return std::unexpected(desired.error());
    if (auto r = apply_one(desired->partition_key, rk, *desired, e.seq); !r)
      return std::unexpected(with_context(r.error(), "applying WAL entry " + std::to_string(e.seq) + " to " +
                                                         desired->partition_key));
    ++done;
    if (inject_faults && opts_.fault && opts_.fault(write_stage::after_index_entity, done))
      return std::unexpected(fault_error(write_stage::after_index_entity, done));
  }
  if (inject_faults && opts_.fault && opts_.fault(write_stage::after_fan_out, done))
    return std::unexpected(fault_error(write_stage::after_fan_out, done));
  return {};
}

result<void> catalog::apply_many(std::span<const catalog_wal_entry> entries, bool inject_faults) const {
  // The index entities of all entries, by partition. Of several entries that write the same
  // entity only the highest sequence is kept: it is what applying them all in sequence order
  // leaves, and a transaction may name an entity once.
  std::map<std::string, std::map<std::string, table_entity>> parts;
  for (const auto& e : entries) {
    const std::string rk = row_key(schema_, e.record);
    for (const auto& k : schema_.index_keys) {
      auto desired = index_entity(e, k, rk);
      if (!desired)
        return std::unexpected(desired.error());
      auto& slot = parts[desired->partition_key][rk];
      if (slot.row_key.empty() || int_prop(slot, seq_prop) < e.seq)
        slot = std::move(*desired);
    }
  }
  // One job per transaction-sized group of one partition. Entries are independent (highest
  // sequence wins per entity), so the jobs may run in any order and at once.
  std::vector<std::vector<table_entity>> jobs;
  for (auto& [pk, rows] : parts) {
    std::vector<table_entity> es;
    es.reserve(rows.size());
    for (auto& [rk, ent] : rows)
      es.push_back(std::move(ent));
    for (auto [b, e] : batch_ranges(es, table_limits::max_batch_operations))
      jobs.emplace_back(std::make_move_iterator(es.begin() + static_cast<std::ptrdiff_t>(b)),
                        std::make_move_iterator(es.begin() + static_cast<std::ptrdiff_t>(e)));
  }

  std::mutex mu; // guards everything below it, and the fault hook
  std::size_t next = 0;
  std::size_t done = 0;
  std::optional<error> failed;
  auto worker = [&] {
    for (;;) {
      std::size_t j = 0;
      {
        std::lock_guard lock(mu);
        if (failed || next >= jobs.size())
          return;
        j = next++;
      }
      auto r = apply_group(jobs[j]);
      std::lock_guard lock(mu);
      if (!r) {
        if (!failed)
          failed = r.error();
        return;
      }
      done += jobs[j].size();
      if (!failed && inject_faults && opts_.fault && opts_.fault(write_stage::after_index_entity, done))
        failed = fault_error(write_stage::after_index_entity, done);
    }
  };
  const std::size_t width = std::clamp<std::size_t>(opts_.fan_out_concurrency, 1, jobs.size());
  std::vector<std::thread> helpers;
  for (std::size_t t = 1; t < width; ++t) {
    try {
      helpers.emplace_back(worker);
    } catch (const std::system_error& ex) {
      // No thread to be had: the ones already running (and this one) do the work.
      spdlog::debug("catalog {}: fan-out thread not started: {}", name_, ex.what());
      break;
    }
  }
  worker();
  for (auto& t : helpers)
    t.join();
  if (failed)
    return std::unexpected(*failed);
  if (inject_faults && opts_.fault && opts_.fault(write_stage::after_fan_out, done))
    return std::unexpected(fault_error(write_stage::after_fan_out, done));
  return {};
}

result<void> catalog::apply_group(const std::vector<table_entity>& group) const {
  // The common case: none of the entities exists yet, and one transaction of INSERTs writes
  // them all. If one exists (a re-registration, or another process applied the entry), the
  // transaction is refused as a whole and each entity is settled by highest sequence wins.
  if (group.size() > 1) {
    table_transaction tx;
    for (const auto& e : group)
      tx.insert(e);
    auto r = index_.submit_transaction(tx);
    if (r)
      return {};
    if (r.error().code != errc::conflict)
      return std::unexpected(with_context(r.error(), "writing " + std::to_string(group.size()) +
                                                         " index entities to " + group.front().partition_key));
  }
  for (const auto& e : group) {
    const std::uint64_t seq = int_prop(e, seq_prop);
    if (auto r = apply_one(e.partition_key, e.row_key, e, seq); !r)
      return std::unexpected(with_context(r.error(), "applying WAL entry " + std::to_string(seq) + " to " +
                                                         e.partition_key));
  }
  return {};
}

result<void> catalog::apply_one(const std::string& pk, const std::string& rk, const table_entity& desired,
                                std::uint64_t seq) const {
  // Highest sequence wins: insert; if something is there, replace it only when it is older,
  // guarded by its ETag (a 412 or 404 means someone else changed it: look again).
  for (int round = 0; round < max_apply_rounds; ++round) {
    auto ins = index_.insert(desired);
    if (ins)
      return {};
    if (ins.error().code != errc::conflict)
      return std::unexpected(ins.error());
    auto cur = index_.get(pk, rk);
    if (!cur) {
      if (cur.error().code == errc::not_found)
        continue; // removed meanwhile (compaction): insert again
      return std::unexpected(cur.error());
    }
    if (int_prop(*cur, seq_prop) >= seq)
      return {}; // the same or a later operation is already there
    auto upd = index_.update(desired, cur->etag);
    if (upd)
      return {};
    if (upd.error().code != errc::precondition_failed && upd.error().code != errc::not_found)
      return std::unexpected(upd.error());
    backoff(round);
  }
  return std::unexpected(make_error(errc::conflict, "index entity " + pk + "/" + rk + " kept changing"));
}

result<void> catalog::mark_applied(std::uint64_t seq) const {
  auto r = wal_.merge(applied_row(seq), "*");
  if (!r && r.error().code != errc::not_found) // not_found: compacted, so applied long ago
    return std::unexpected(r.error());
  return {};
}

result<void> catalog::mark_applied_many(std::span<const catalog_wal_entry> entries) const {
  if (entries.size() == 1)
    return mark_applied(entries.front().seq);
  // MERGE applied=true for up to 100 entries per transaction on partition `wal`.
  for (std::size_t b = 0; b < entries.size(); b += table_limits::max_batch_operations) {
    const std::size_t e = std::min(entries.size(), b + table_limits::max_batch_operations);
    table_transaction tx;
    for (std::size_t i = b; i < e; ++i)
      tx.merge(applied_row(entries[i].seq), "*");
    auto r = wal_.submit_transaction(tx);
    if (r)
      continue;
    if (r.error().code != errc::not_found)
      return std::unexpected(r.error());
    // An entry is gone (compacted, so applied long ago): settle the others one by one.
    for (std::size_t i = b; i < e; ++i)
      if (auto one = mark_applied(entries[i].seq); !one)
        return one;
  }
  return {};
}

result<std::uint64_t> catalog::advance(std::size_t* replayed, std::size_t* skipped, bool replay_all) const {
  for (int round = 0; round < max_advance_rounds; ++round) {
    auto cp = wal_.get_with_server_time(wal_pk, checkpoint_rk);
    if (!cp)
      return std::unexpected(with_context(cp.error(), "reading the checkpoint of catalog '" + name_ + "'"));
    const table_entity& cp_row = cp->first;
    const std::chrono::system_clock::time_point server_now = cp->second;
    const std::uint64_t start = int_prop(cp_row, "seq");
    std::uint64_t next = start + 1; // the sequence number we need next
    std::size_t gaps = 0;
    std::optional<error> failed;
    table_query q;
    q.filter = table_filter::partition(wal_pk) && table_filter::gt("RowKey", pad(start)) &&
               table_filter::le("RowKey", max_pad());
    if (!replay_all)
      q.max_entities = std::max<std::size_t>(1, opts_.max_advance_entries);
    auto walked = wal_.for_each(q, [&](const table_entity& row) {
      auto e = entry_from_entity(row);
      if (!e) {
        failed = e.error();
        return false;
      }
      if (e->seq > next) {
        // Numbers next..seq-1 are missing although a later entry exists. The counter and the
        // entry commit in one transaction, so they were never written or were deleted by hand:
        // they can never appear, and waiting for them would block the catalog forever.
        spdlog::warn("catalog {}: WAL sequence numbers {}..{} are missing; stepping over them", name_, next,
                     e->seq - 1);
        gaps += e->seq - next;
      }
      if (!e->applied) {
        bool stalled = e->timestamp && server_now - std::chrono::system_clock::time_point(*e->timestamp) >
                                           opts_.stall_timeout;
        if (!replay_all && !stalled)
          return false; // in flight at its writer: the checkpoint stops here
        if (auto r = apply(*e, false); !r) {
          failed = r.error();
          return false;
        }
        if (auto r = mark_applied(e->seq); !r) {
          failed = r.error();
          return false;
        }
        if (replayed)
          ++*replayed;
      }
      next = e->seq + 1;
      return true;
    });
    if (!walked)
      return std::unexpected(with_context(walked.error(), "scanning the WAL of catalog '" + name_ + "'"));
    const std::uint64_t reached = next - 1;
    std::string etag = cp_row.etag;
    if (reached > start) {
      auto moved = wal_.merge(seq_row(checkpoint_rk, reached), cp_row.etag);
      if (!moved) {
        if (moved.error().code == errc::precondition_failed)
          continue; // another process advanced it: look again from there
        return std::unexpected(with_context(moved.error(), "advancing the checkpoint of catalog '" + name_ + "'"));
      }
      etag = moved->etag;
    }
    {
      std::lock_guard lk(cache_->m); // the next write may move it without reading (write())
      cache_->checkpoint.emplace(reached, std::move(etag));
    }
    if (skipped)
      *skipped = gaps;
    if (failed)
      return std::unexpected(*failed);
    return reached;
  }
  return std::unexpected(make_error(errc::conflict, "catalog '" + name_ + "': the checkpoint kept moving"));
}

// -- queries --------------------------------------------------------------------------------------

result<catalog_page> catalog::query_page(const catalog_query& q, const std::optional<std::string>& continuation) const {
  if (q.where.empty())
    return std::unexpected(error::invalid("a catalog query needs at least one index key condition"));
  if (q.where.size() > max_conditions)
    return std::unexpected(error::invalid("a catalog query takes at most 8 conditions"));
  if (q.page_size < 1 || q.page_size > table_limits::max_page_size)
    return std::unexpected(error::invalid("page_size must be between 1 and 1000"));
  for (const auto& [k, v] : q.where)
    if (std::find(schema_.index_keys.begin(), schema_.index_keys.end(), k) == schema_.index_keys.end())
      return std::unexpected(error::invalid("'" + k + "' is not an index key of catalog '" + name_ + "' (" +
                                            schema_.describe() + ")"));
  std::optional<table_continuation> from;
  if (continuation) {
    from = decode_continuation(*continuation);
    if (!from)
      return std::unexpected(error::invalid("not a catalog continuation token: '" + *continuation + "'"));
  }
  // One partition scan (the first condition's); the other conditions and the tombstone check
  // run in the service against the record copy each index entity carries.
  table_filter f = table_filter::partition(partition_key(q.where[0].first, q.where[0].second));
  if (q.row_key_ge)
    f = f && table_filter::ge("RowKey", escape_key(*q.row_key_ge));
  if (q.row_key_lt)
    f = f && table_filter::lt("RowKey", escape_key(*q.row_key_lt));
  if (q.row_key_prefix && !q.row_key_prefix->empty())
    f = f && table_filter::starts_with("RowKey", escape_key(*q.row_key_prefix));
  for (std::size_t i = 1; i < q.where.size(); ++i)
    f = f && table_filter::eq(q.where[i].first, q.where[i].second);
  f = f && table_filter::eq(del_prop, false);
  table_query tq;
  tq.filter = f;
  tq.page_size = q.page_size;
  for (;;) {
    auto page = index_.query_page(tq, from);
    if (!page)
      return std::unexpected(page.error());
    catalog_page out;
    for (const auto& e : page->entities)
      out.records.push_back(record_from_index(e));
    if (page->continuation)
      out.continuation = encode_continuation(*page->continuation);
    if (!out.records.empty() || !page->continuation)
      return out;
    from = page->continuation; // an empty page with a continuation: keep going
  }
}

result<std::vector<catalog_record>> catalog::query(const catalog_query& q) const {
  std::vector<catalog_record> out;
  std::optional<std::string> cont;
  do {
    auto page = query_page(q, cont);
    if (!page)
      return std::unexpected(page.error());
    for (auto& r : page->records) {
      if (q.limit && out.size() >= *q.limit)
        return out;
      out.push_back(std::move(r));
    }
    cont = page->continuation;
  } while (cont && !(q.limit && out.size() >= *q.limit));
  return out;
}

// -- recovery and maintenance ---------------------------------------------------------------------

result<catalog_recovery_report> catalog::recover() const {
  catalog_recovery_report rep;
  auto before = wal_.get(wal_pk, checkpoint_rk);
  if (!before)
    return std::unexpected(with_context(before.error(), "reading the checkpoint of catalog '" + name_ + "'"));
  rep.checkpoint_before = int_prop(*before, "seq");
  auto after = advance(&rep.replayed, &rep.skipped, true);
  if (!after)
    return std::unexpected(after.error());
  rep.checkpoint_after = *after;
  auto counter = wal_.get(wal_pk, counter_rk);
  if (!counter)
    return std::unexpected(counter.error());
  rep.last_seq = int_prop(*counter, "seq");
  if (rep.replayed || rep.skipped)
    spdlog::info("catalog {}: recovery replayed {} WAL entries, stepped over {} missing; checkpoint {} -> {}", name_,
                 rep.replayed, rep.skipped, rep.checkpoint_before, rep.checkpoint_after);
  return rep;
}

result<catalog_compaction_report> catalog::compact(std::chrono::milliseconds retention) const {
  catalog_compaction_report rep;
  auto cp = wal_.get_with_server_time(wal_pk, checkpoint_rk);
  if (!cp)
    return std::unexpected(cp.error());
  rep.checkpoint = int_prop(cp->first, "seq");
  const auto cutoff = to_table_time(cp->second - retention);
  if (rep.checkpoint == 0)
    return rep;

  // WAL entries ≤ checkpoint, older than the cutoff: deleted 100 per transaction.
  table_query q;
  q.filter = table_filter::partition(wal_pk) && table_filter::le("RowKey", pad(rep.checkpoint)) &&
             table_filter::lt("Timestamp", cutoff);
  q.select = {"PartitionKey", "RowKey"};
  std::vector<std::string> victims;
  auto seen = wal_.for_each(q, [&victims](const table_entity& e) {
    if (parse_seq(e.row_key))
      victims.push_back(e.row_key);
    return true;
  });
  if (!seen)
    return std::unexpected(seen.error());
  for (std::size_t i = 0; i < victims.size(); i += table_limits::max_batch_operations) {
    table_transaction tx;
    const std::size_t end = std::min(victims.size(), i + table_limits::max_batch_operations);
    for (std::size_t j = i; j < end; ++j)
      tx.delete_entity(std::string(wal_pk), victims[j]);
    if (auto r = wal_.submit_transaction(tx); r) {
      rep.wal_deleted += end - i;
      continue;
    }
    // Someone else is compacting too (404 on one row): fall back to single deletes.
    for (std::size_t j = i; j < end; ++j) {
      auto r = wal_.delete_entity(wal_pk, victims[j]);
      if (r)
        ++rep.wal_deleted;
      else if (r.error().code != errc::not_found)
        return std::unexpected(r.error());
    }
  }

  // Tombstones ≤ checkpoint, older than the cutoff; each deleted If-Match its ETag so a
  // re-insert that lands meanwhile is kept.
  table_query t;
  t.filter = table_filter::eq(del_prop, true) && table_filter::lt("Timestamp", cutoff);
  std::vector<table_entity> stones;
  auto found = index_.for_each(t, [&](const table_entity& e) {
    if (e.partition_key != meta_pk && int_prop(e, seq_prop) <= rep.checkpoint)
      stones.push_back(e);
    return true;
  });
  if (!found)
    return std::unexpected(found.error());
  for (const auto& e : stones) {
    auto r = index_.delete_entity(e.partition_key, e.row_key, e.etag);
    if (r)
      ++rep.tombstones_deleted;
    else if (r.error().code != errc::not_found && r.error().code != errc::precondition_failed)
      return std::unexpected(r.error());
  }
  return rep;
}

result<std::pair<std::uint64_t, std::uint64_t>> catalog::checkpoint_and_counter() const {
  auto cp = wal_.get(wal_pk, checkpoint_rk);
  if (!cp)
    return std::unexpected(cp.error());
  auto counter = wal_.get(wal_pk, counter_rk);
  if (!counter)
    return std::unexpected(counter.error());
  return std::pair{int_prop(*cp, "seq"), int_prop(*counter, "seq")};
}

result<catalog_stats> catalog::stats() const {
  catalog_stats s;
  s.name = name_;
  s.schema = schema_;
  auto cc = checkpoint_and_counter();
  if (!cc)
    return std::unexpected(cc.error());
  s.checkpoint = cc->first;
  s.last_seq = cc->second;
  table_query w;
  w.filter = table_filter::partition(wal_pk) && table_filter::le("RowKey", max_pad());
  w.select = {"PartitionKey", "RowKey", "applied"};
  auto walked = wal_.for_each(w, [&s](const table_entity& e) {
    const auto seq = parse_seq(e.row_key);
    if (!seq)
      return true;
    ++s.wal_entries;
    // An entry at or below the checkpoint is applied whatever its flag says (a writer that moved
    // the checkpoint past its own entries does not mark them: write()).
    const auto* a = e.get<bool>("applied");
    if (*seq > s.checkpoint && (!a || !*a))
      ++s.unapplied;
    return true;
  });
  if (!walked)
    return std::unexpected(walked.error());
  for (const auto& k : schema_.index_keys)
    s.partitions_per_key[k] = 0;
  table_query x;
  x.select = {"PartitionKey", "RowKey", std::string(del_prop)};
  std::string last_pk;
  auto scanned = index_.for_each(x, [&](const table_entity& e) {
    if (e.partition_key == meta_pk)
      return true;
    const auto* d = e.get<bool>(del_prop);
    if (d && *d) {
      ++s.tombstones;
      return true;
    }
    ++s.index_entities;
    if (e.partition_key != last_pk) {
      last_pk = e.partition_key;
      // "{len}_{field}{value}" → field
      auto us = e.partition_key.find('_');
      if (us != std::string::npos) {
        std::size_t len = 0;
        for (std::size_t i = 0; i < us; ++i)
          len = len * 10 + static_cast<std::size_t>(e.partition_key[i] - '0');
        if (us + 1 + len <= e.partition_key.size()) {
          auto it = s.partitions_per_key.find(e.partition_key.substr(us + 1, len));
          if (it != s.partitions_per_key.end())
            ++it->second;
        }
      }
    }
    return true;
  });
  if (!scanned)
    return std::unexpected(scanned.error());
  return s;
}

result<std::vector<catalog_wal_entry>> catalog::wal(std::uint64_t from_seq, std::size_t limit) const {
  std::vector<catalog_wal_entry> out;
  table_query q;
  q.filter = table_filter::partition(wal_pk) && table_filter::ge("RowKey", pad(from_seq)) &&
             table_filter::le("RowKey", max_pad());
  q.max_entities = limit;
  std::optional<error> failed;
  auto walked = wal_.for_each(q, [&](const table_entity& row) {
    auto e = entry_from_entity(row);
    if (!e) {
      failed = e.error();
      return false;
    }
    out.push_back(std::move(*e));
    return true;
  });
  if (!walked)
    return std::unexpected(walked.error());
  if (failed)
    return std::unexpected(*failed);
  return out;
}

} // namespace shoal::storage
