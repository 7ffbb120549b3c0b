#include "workers/web/sources.hpp"

#include "storage/blob_client.hpp"
#include "storage/catalog_blobs.hpp"
#include "storage/table_client.hpp"
#include "storage/table_filter.hpp"
#include "workers/etl/orchestrator.hpp"
#include "workers/claim/work_table.hpp"

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>

namespace shoal::workers::web {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

constexpr std::size_t payload_preview_bytes = 1024; // of a payload shown in a list
constexpr std::size_t raw_preview_bytes = 2048;     // of a quarantined record's raw text
constexpr std::size_t owner_lookups_max = 50;       // dead ETL records whose step owners are read
constexpr std::size_t failing_scan_max = 100;       // pending records looked at for "failing"

// Epoch milliseconds, or 0 for "never" (1970 or earlier).
std::int64_t epoch_ms(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count();
  return ms > 0 ? ms : 0;
}

// JSON text that never throws on bytes that are not UTF-8 (payloads are any bytes): invalid
// sequences become U+FFFD. A cut in the middle of a character is repaired the same way.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json preview(std::string_view s, std::size_t max) {
  return json{{"text", std::string(s.substr(0, max))}, {"bytes", s.size()}, {"truncated", s.size() > max}};
}

error storage_failure(const storage::error& e, std::string_view what) { return error::from_storage(e, what); }

json record_json(const record_view& r) {
  json j{{"id", r.id},
         {"shard", r.shard},
         {"status", std::string(to_string(r.status))},
         {"attempts", r.attempts},
         {"gen", r.gen},
         {"owner", r.owner},
         {"last_error", r.last_error},
         {"not_before_ms", epoch_ms(r.not_before)},
         {"created_ms", epoch_ms(r.created)},
         {"updated_ms", epoch_ms(r.updated)},
         {"payload_bytes", r.payload_bytes},
         {"payload_blob", r.payload_blob}};
  j["payload"] = r.payload_blob.empty() ? preview(r.payload, payload_preview_bytes) : json(nullptr);
  // What the table holds about who ran it: the last claimer and how many claims there were
  // (gen). ETL records add the owner of every recorded step (dead_json).
  j["owners"] = json::array();
  if (!r.owner.empty())
    j["owners"].push_back({{"owner", r.owner}, {"gen", r.gen}, {"attempt", r.attempts}, {"source", "work table"}});
  return j;
}

json instance_json(const etl::run_instance& i) {
  return {{"id", i.id},
          {"blob", i.blob},
          {"dataset", i.dataset},
          {"status", i.status},
          {"step", i.step},
          {"attempts", i.attempts},
          {"gen", i.gen},
          {"owner", i.owner},
          {"created_ms", epoch_ms(i.created)},
          {"updated_ms", epoch_ms(i.updated)},
          {"finished_ms", epoch_ms(i.finished)},
          {"error", i.error},
          {"records", i.records},
          {"loaded", i.loaded},
          {"duplicates", i.duplicates},
          {"quarantined", i.quarantined},
          {"ms", i.ms}};
}

json step_json(const etl::run_step& s) {
  return {{"seq", s.seq},
          {"step", s.step},
          {"attempt", s.attempt},
          {"gen", s.gen},
          {"owner", s.owner},
          {"started_ms", epoch_ms(s.started)},
          {"finished_ms", epoch_ms(s.finished)},
          {"ms", s.ms},
          {"records_in", s.records_in},
          {"records_out", s.records_out},
          {"quarantined", s.quarantined},
          {"detail", s.detail}};
}

// -- the quarantine table (sql_sink.hpp "Schema"), read-only ----------------------------------

constexpr const char* quarantine_sql =
    "SELECT blob, record_index, dataset, message_id, step, reason, raw, at FROM shoal_etl_quarantine "
    "ORDER BY at DESC, blob, record_index LIMIT ";

// Rows of the SQLite quarantine; {rows, note}. A database or table that is not there yet is
// an empty list with a note, not an error: nothing was quarantined.
result<std::pair<json, std::string>> sqlite_quarantine(const std::string& path, std::size_t limit) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return std::pair{json::array(), "no SQLite database at " + path + " yet"};
  sqlite3* db = nullptr;
  // Read-only and without creating anything: the dashboard never writes the sink.
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    std::string why = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return fail(errc::io, "SQLite " + path + ": " + why);
  }
  sqlite3_busy_timeout(db, 2000);
  sqlite3_stmt* st = nullptr;
  const std::string sql = quarantine_sql + std::to_string(limit);
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    std::string why = sqlite3_errmsg(db);
    sqlite3_close(db);
    if (why.find("no such table") != std::string::npos)
      return std::pair{json::array(), "no quarantine table yet (nothing loaded into " + path + ")"};
    return fail(errc::io, "SQLite " + path + ": " + why);
  }
  auto text = [&](int col) {
    const auto* p = sqlite3_column_text(st, col);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(st, col)))
             : std::string();
  };
  json rows = json::array();
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    rows.push_back({{"blob", text(0)},
                    {"record_index", sqlite3_column_int64(st, 1)},
                    {"dataset", text(2)},
                    {"message_id", text(3)},
                    {"step", text(4)},
                    {"reason", text(5)},
                    {"raw", preview(text(6), raw_preview_bytes)},
                    {"at", text(7)}});
  std::string why = rc == SQLITE_DONE ? "" : sqlite3_errmsg(db);
  sqlite3_finalize(st);
  sqlite3_close(db);
  if (!why.empty())
    return fail(errc::io, "SQLite " + path + ": " + why);
  return std::pair{rows, std::string()};
}

result<std::pair<json, std::string>> postgres_quarantine(const std::string& url, std::size_t limit) {
  try {
    pqxx::connection c(url);
    pqxx::read_transaction tx(c);
    auto exists = tx.exec1("SELECT to_regclass('shoal_etl_quarantine') IS NOT NULL");
    if (!exists[0].as<bool>())
      return std::pair{json::array(), std::string("no quarantine table yet")};
    json rows = json::array();
    for (const auto& r : tx.exec(quarantine_sql + std::to_string(limit)))
      rows.push_back({{"blob", r[0].c_str()},
                      {"record_index", r[1].as<long long>(0)},
                      {"dataset", r[2].c_str()},
                      {"message_id", r[3].c_str()},
                      {"step", r[4].c_str()},
                      {"reason", r[5].c_str()},
                      {"raw", preview(r[6].c_str(), raw_preview_bytes)},
                      {"at", r[7].c_str()}});
    return std::pair{rows, std::string()};
  } catch (const std::exception& e) {
    return fail(errc::io, std::string("PostgreSQL: ") + e.what()); // libpq never puts the password in it
  }
}

} // namespace

// -- impl -----------------------------------------------------------------------------------------

struct dashboard_data::impl {
  config cfg;
  std::optional<storage::pipeline> pipe;
  fleet::queue_monitor* monitor = nullptr;
  std::optional<work_table> work;
  std::optional<etl::run_log> runs;
  std::optional<storage::table_client> catalog_index;

  mutable std::mutex catalog_mu; // guards the two below
  mutable std::optional<storage::blob_catalog> catalog;
  mutable std::optional<std::pair<std::chrono::steady_clock::time_point, std::string>> totals;

  result<void> need_storage() const {
    if (!pipe)
      return fail(errc::invalid_argument, "storage is not configured (see [storage] connection_string)");
    return {};
  }
  result<void> need_work() const {
    if (auto ok = need_storage(); !ok)
      return ok;
    if (!work)
      return fail(errc::invalid_argument, "work table " + cfg.work.table + " cannot be opened");
    return {};
  }

  result<const storage::blob_catalog*> open_catalog() const {
    std::lock_guard lock(catalog_mu);
    if (!catalog) {
      storage::catalog_options o;
      o.recover_on_open = false; // a dashboard only reads
      auto c = storage::blob_catalog::open_existing(storage::table_service_client(*pipe), cfg.catalog.table, o);
      if (!c) {
        error e = storage_failure(c.error(), "opening the catalog " + cfg.catalog.table);
        if (c.error().code == storage::errc::not_found)
          e.code = errc::not_found;
        return std::unexpected(e);
      }
      catalog.emplace(*std::move(c));
    }
    return &*catalog;
  }
};

dashboard_data::dashboard_data(config cfg, std::optional<storage::pipeline> pipe, fleet::queue_monitor* monitor)
    : impl_(std::make_unique<impl>()) {
  impl_->cfg = std::move(cfg);
  impl_->pipe = std::move(pipe);
  impl_->monitor = monitor;
  if (!impl_->pipe)
    return;
  if (monitor) {
    impl_->work.emplace(monitor->table());
  } else if (auto t = storage::table_client::make(*impl_->pipe, impl_->cfg.work.table)) {
    work_table_options wo;
    wo.work = impl_->cfg.work;
    if (auto w = work_table::make(*t, storage::blob_client(*impl_->pipe), wo))
      impl_->work.emplace(*std::move(w));
  }
  if (auto t = storage::table_client::make(*impl_->pipe, impl_->cfg.etl.runs_table))
    impl_->runs.emplace(*std::move(t));
  if (auto t = storage::table_client::make(*impl_->pipe, impl_->cfg.catalog.table))
    impl_->catalog_index.emplace(*std::move(t));
}

dashboard_data::~dashboard_data() = default;

std::string dashboard_data::queues_json() const {
  json out{{"sample_ms", impl_->cfg.web.sample_ms}, {"shards", impl_->cfg.work.shards}, {"queues", json::array()}};
  if (!impl_->monitor) {
    out["error"] = "storage is not configured";
    return dump(out);
  }
  for (const auto& q : impl_->monitor->queues()) {
    json shards = json::object();
    for (const auto& [shard, by] : q.by_shard)
      shards[std::to_string(shard)] = by;
    json history = json::array();
    for (const auto& s : q.history)
      history.push_back({{"at_ms", epoch_ms(s.at)}, {"by_status", s.by_status}});
    out["queues"].push_back({{"name", q.name},
                             {"by_status", q.by_status},
                             {"by_shard", shards},
                             {"total", q.total},
                             {"oldest_pending_age_ms", q.oldest_pending_age_ms},
                             {"oldest_pending_partial", q.oldest_pending_partial},
                             {"read_ms_ago", q.read_ms_ago},
                             {"error", q.error},
                             {"history", history}});
  }
  return dump(out);
}

result<std::string> dashboard_data::dead_json(const std::string& queue, std::size_t limit) const {
  if (auto ok = impl_->need_work(); !ok)
    return std::unexpected(ok.error());
  auto dead = impl_->work->list(queue, record_status::dead, limit);
  if (!dead)
    return std::unexpected(dead.error());
  // Failing but still retried: pending records that carry the error of an earlier attempt,
  // among the first failing_scan_max pending ones (a list reads whole records, payloads included).
  auto pending = impl_->work->list(queue, record_status::pending, std::min(limit, failing_scan_max));
  if (!pending)
    return std::unexpected(pending.error());
  json out{{"queue", queue}, {"max_attempts", impl_->cfg.work.max_attempts}, {"dead", json::array()},
           {"failing", json::array()}, {"limit", limit}};
  const bool etl_queue = queue == impl_->cfg.etl.queue && impl_->runs;
  std::size_t lookups = 0;
  for (const auto& r : *dead) {
    json j = record_json(r);
    // ETL records: every recorded step names the owner that ran it (history across claims).
    if (etl_queue && lookups++ < owner_lookups_max) {
      if (auto shown = impl_->runs->show(r.id)) {
        std::map<std::pair<std::string, std::int64_t>, json> seen;
        for (const auto& s : shown->second)
          seen.try_emplace({s.owner, s.gen}, json{{"owner", s.owner}, {"gen", s.gen}, {"attempt", s.attempt},
                                                   {"source", "etl step " + s.step}});
        for (auto& [k, v] : seen)
          if (k.first != r.owner || k.second != r.gen)
            j["owners"].push_back(v);
      }
    }
    out["dead"].push_back(std::move(j));
  }
  std::size_t failing = 0;
  for (const auto& r : *pending)
    if (!r.last_error.empty() && failing++ < limit)
      out["failing"].push_back(record_json(r));
  out["dead_truncated"] = dead->size() >= limit;
  return dump(out);
}

namespace {
result<record_selector> selector_of(const record_action& a) {
  record_selector sel;
  sel.ids = a.ids;
  if (a.all_dead)
    sel.statuses.insert(record_status::dead);
  if (sel.ids.empty() && sel.statuses.empty())
    return fail(errc::invalid_argument, "no record selected: give ids or all");
  if (a.queue.empty())
    return fail(errc::invalid_argument, "no queue given");
  return sel;
}
} // namespace

// Runs work-table operation `op` (requeue or purge) on the records `a` selects, then refreshes
// the queue monitor so the dashboard shows the change at once.
template <class Op> result<std::size_t> act_on(dashboard_data::impl& d, const record_action& a, Op op) {
  if (auto ok = d.need_work(); !ok)
    return std::unexpected(ok.error());
  auto sel = selector_of(a);
  if (!sel)
    return std::unexpected(sel.error());
  auto n = op(*d.work, *sel);
  if (n && d.monitor)
    d.monitor->refresh();
  return n;
}

result<std::size_t> dashboard_data::requeue(const record_action& a) const {
  return act_on(*impl_, a, [&](auto& work, const auto& sel) { return work.requeue(a.queue, sel); });
}

result<std::size_t> dashboard_data::purge(const record_action& a) const {
  return act_on(*impl_, a, [&](auto& work, const auto& sel) { return work.purge(a.queue, sel); });
}

result<std::string> dashboard_data::etl_json(const std::string& status, std::size_t limit) const {
  if (auto ok = impl_->need_storage(); !ok)
    return std::unexpected(ok.error());
  json out{{"instances", json::array()}, {"quarantine", json::array()}};
  if (!impl_->runs)
    return fail(errc::invalid_argument, "runs table " + impl_->cfg.etl.runs_table + " cannot be opened");
  auto list = impl_->runs->list(status.empty() ? std::nullopt : std::optional<std::string>(status), limit);
  if (!list) {
    // No runs table yet = no ETL ran yet.
    if (list.error().code != errc::not_found && list.error().storage_code != storage::errc::not_found)
      return std::unexpected(list.error());
    out["instances_note"] = "no runs table " + impl_->cfg.etl.runs_table + " yet";
  } else {
    auto rows = *std::move(list);
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.updated > b.updated; });
    for (const auto& i : rows)
      out["instances"].push_back(instance_json(i));
  }
  const auto& e = impl_->cfg.etl;
  out["sink"] = e.postgres_url.empty() ? "sqlite " + e.sqlite_path : std::string("postgresql");
  auto q = e.postgres_url.empty() ? sqlite_quarantine(e.sqlite_path, limit) : postgres_quarantine(e.postgres_url, limit);
  if (!q) {
    out["quarantine_error"] = q.error().describe();
  } else {
    out["quarantine"] = std::move(q->first);
    if (!q->second.empty())
      out["quarantine_note"] = q->second;
  }
  return dump(out);
}

result<std::string> dashboard_data::etl_run_json(const std::string& id) const {
  if (auto ok = impl_->need_storage(); !ok)
    return std::unexpected(ok.error());
  if (!impl_->runs)
    return fail(errc::invalid_argument, "runs table cannot be opened");
  auto shown = impl_->runs->show(id);
  if (!shown)
    return std::unexpected(shown.error());
  json out = instance_json(shown->first);
  out["steps"] = json::array();
  for (const auto& s : shown->second)
    out["steps"].push_back(step_json(s));
  return dump(out);
}

result<std::string> dashboard_data::persistor_json() const {
  if (auto ok = impl_->need_storage(); !ok)
    return std::unexpected(ok.error());
  {
    std::lock_guard lock(impl_->catalog_mu);
    if (impl_->totals && std::chrono::steady_clock::now() - impl_->totals->first < catalog_cache)
      return impl_->totals->second;
  }
  if (!impl_->catalog_index)
    return fail(errc::invalid_argument, "catalog table cannot be opened");
  // One index entity per blob and index key (CATALOG.md): the `date` entities, whose
  // PartitionKeys are "4_date{YYYY-MM-DD}", each carry the blob's dest and record_count.
  storage::table_query q;
  q.filter = storage::table_filter::ge("PartitionKey", std::string("4_date")) &&
             storage::table_filter::lt("PartitionKey", std::string("4_datf"));
  q.select = {"date", "dest", "record_count", "_del"};
  q.max_entities = catalog_scan_max;
  struct tally {
    std::uint64_t blobs = 0, records = 0;
  };
  std::map<std::string, tally> per_day, per_dest;
  std::size_t scanned = 0;
  auto n = impl_->catalog_index->for_each(q, [&](const storage::table_entity& e) {
    ++scanned;
    if (const auto* del = e.get<bool>("_del"); del && *del)
      return true; // a tombstone: the blob was unregistered
    const auto* date = e.get<std::string>("date");
    const auto* dest = e.get<std::string>("dest");
    std::uint64_t records = 0;
    if (const auto* rc = e.get<std::string>("record_count"))
      records = std::strtoull(rc->c_str(), nullptr, 10);
    auto& d = per_day[date ? *date : "?"];
    ++d.blobs;
    d.records += records;
    auto& t = per_dest[dest ? *dest : "?"];
    ++t.blobs;
    t.records += records;
    return true;
  });
  json out{{"catalog", impl_->cfg.catalog.table}, {"days", json::array()}, {"dests", json::array()},
           {"scanned", scanned}, {"partial", scanned >= catalog_scan_max}, {"cache_s", catalog_cache.count()}};
  if (!n) {
    if (n.error().code != storage::errc::not_found)
      return std::unexpected(storage_failure(n.error(), "scanning the catalog " + impl_->cfg.catalog.table));
    out["note"] = "no catalog " + impl_->cfg.catalog.table + " yet";
  }
  for (const auto& [day, t] : per_day)
    out["days"].push_back({{"date", day}, {"blobs", t.blobs}, {"records", t.records}});
  for (const auto& [dest, t] : per_dest)
    out["dests"].push_back({{"dest", dest}, {"blobs", t.blobs}, {"records", t.records}});
  std::string text = dump(out);
  std::lock_guard lock(impl_->catalog_mu);
  impl_->totals = std::pair{std::chrono::steady_clock::now(), text};
  return text;
}

result<std::string> dashboard_data::catalog_json(const catalog_form& f) const {
  if (auto ok = impl_->need_storage(); !ok)
    return std::unexpected(ok.error());
  storage::blob_catalog_query q;
  if (!f.dest.empty())
    q.dest = f.dest;
  if (!f.date.empty())
    q.date = f.date;
  if (!f.host.empty())
    q.host = f.host;
  q.limit = f.limit;
  if (auto ok = storage::blob_catalog::to_query(q); !ok)
    return fail(errc::invalid_argument, ok.error().message);
  auto c = impl_->open_catalog();
  if (!c)
    return std::unexpected(c.error());
  auto found = (*c)->find(q);
  if (!found)
    return std::unexpected(storage_failure(found.error(), "querying the catalog"));
  json out{{"entries", json::array()}, {"limit", f.limit}};
  for (const auto& e : *found)
    out["entries"].push_back({{"blob", e.blob}, {"dest", e.dest}, {"date", e.date}, {"host", e.host},
                              {"format", e.format}, {"record_count", e.record_count},
                              {"container", e.container}, {"seq", e.seq}});
  out["truncated"] = found->size() >= f.limit;
  return dump(out);
}

} // namespace shoal::workers::web
