// The PostgreSQL sink (libpqxx 6.4). Kept in its own file: libpqxx's headers stay out of the
// rest of the code, and every pqxx exception is caught here and returned as an error value.

#include "workers/etl/sql_sink.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <map>
#include <vector>

namespace shoal::workers::etl {
namespace {

constexpr const char* k_postgres_base_ddl = R"sql(
CREATE TABLE IF NOT EXISTS shoal_etl_ledger (
  blob TEXT PRIMARY KEY, dataset TEXT NOT NULL, rows_loaded BIGINT NOT NULL DEFAULT 0,
  duplicates BIGINT NOT NULL DEFAULT 0, quarantined BIGINT NOT NULL DEFAULT 0,
  owner TEXT, loaded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shoal_etl_messages (
  message_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, blob TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shoal_etl_quarantine (
  blob TEXT NOT NULL, record_index BIGINT NOT NULL, dataset TEXT NOT NULL, message_id TEXT,
  step TEXT NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL, at TEXT NOT NULL,
  PRIMARY KEY (blob, record_index));
CREATE TABLE IF NOT EXISTS shoal_etl_records (
  message_id TEXT PRIMARY KEY, dest TEXT, event_time TEXT, payload TEXT, blob TEXT);
)sql";

std::string text_of(const sql_value& v, bool& null) {
  null = false;
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  if (auto* n = std::get_if<std::int64_t>(&v)) return std::to_string(*n);
  if (auto* d = std::get_if<double>(&v)) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", *d);
    return buf;
  }
  null = true;
  return {};
}

class postgres_sink final : public sql_sink {
public:
  explicit postgres_sink(std::unique_ptr<pqxx::connection> c) : conn_(std::move(c)) {}
  std::string_view engine() const noexcept override { return "postgresql"; }

  result<void> prepare(std::string_view ddl) override {
    // Two workers may create the same tables at once; CREATE … IF NOT EXISTS can still race
    // on the catalog, so the DDL runs under a transaction-level advisory lock.
    return guarded("preparing the schema", [&] {
      pqxx::work w(*conn_);
      w.exec("SELECT pg_advisory_xact_lock(7307007)");
      w.exec(k_postgres_base_ddl);
      if (!ddl.empty()) w.exec(std::string(ddl));
      w.commit();
    });
  }

  result<void> execute(std::string_view sql) override {
    return guarded("executing", [&] {
      pqxx::work w(*conn_);
      w.exec(std::string(sql));
      w.commit();
    });
  }

  result<std::int64_t> scalar(std::string_view sql) override {
    std::int64_t v = 0;
    auto r = guarded("querying", [&] {
      pqxx::work w(*conn_);
      v = w.exec1(std::string(sql))[0].as<std::int64_t>();
      w.commit();
    });
    if (!r) return std::unexpected(r.error());
    return v;
  }

  result<std::optional<ledger_entry>> ledger(std::string_view blob) override {
    std::optional<ledger_entry> out;
    auto r = guarded("reading the ledger", [&] {
      pqxx::work w(*conn_);
      auto rows = w.exec_params("SELECT blob, dataset, rows_loaded, duplicates, quarantined, "
                                "coalesce(owner, ''), loaded_at FROM shoal_etl_ledger WHERE blob = $1",
                                std::string(blob));
      if (!rows.empty()) {
        ledger_entry e;
        e.blob = rows[0][0].as<std::string>();
        e.dataset = rows[0][1].as<std::string>();
        e.rows_loaded = rows[0][2].as<std::int64_t>();
        e.duplicates = rows[0][3].as<std::int64_t>();
        e.quarantined = rows[0][4].as<std::int64_t>();
        e.owner = rows[0][5].as<std::string>();
        e.loaded_at = rows[0][6].as<std::string>();
        out = std::move(e);
      }
      w.commit();
    });
    if (!r) return std::unexpected(r.error());
    return out;
  }

  result<load_outcome> load(const load_batch& b) override {
    std::vector<const load_batch*> one{&b};
    auto r = load_many(one);
    if (!r) return std::unexpected(r.error());
    return std::move(r->front());
  }

  result<std::vector<result<load_outcome>>> load_many(std::span<const load_batch* const> batches) override {
    std::vector<result<load_outcome>> out(batches.size(), load_outcome{});
    std::vector<std::size_t> active;
    for (std::size_t i = 0; i < batches.size(); ++i) {
      const load_batch& b = *batches[i];
      const std::size_t params = to_dollar_placeholders(b.insert_sql).second;
      auto bad = std::find_if(b.rows.begin(), b.rows.end(), [&](const load_row& r) { return r.values.size() != params; });
      if (bad == b.rows.end()) {
        active.push_back(i);
        continue;
      }
      out[i] = fail(errc::invalid_argument, "row " + std::to_string(bad->index) + " has " +
                                                std::to_string(bad->values.size()) + " values, the insert takes " +
                                                std::to_string(params));
    }
    while (!active.empty()) {
      std::vector<std::size_t> lost; // may_commit said no just before COMMIT
      auto r = guarded("loading " + batches[active.front()]->blob, [&] {
        pqxx::work w(*conn_);
        for (std::size_t i : active) out[i] = load_in(w, *batches[i]);
        for (std::size_t i : active) {
          const load_batch& b = *batches[i];
          if (!out[i]->already_loaded && b.may_commit && !b.may_commit()) lost.push_back(i);
        }
        if (!lost.empty() || std::all_of(active.begin(), active.end(), [&](std::size_t i) { return out[i]->already_loaded; })) {
          w.abort();
          return;
        }
        w.commit();
      });
      if (!r) return std::unexpected(r.error());
      if (lost.empty()) return out;
      // Left out, and the transaction redone without them.
      for (std::size_t i : lost)
        out[i] = fail(errc::lease_lost, "load of " + batches[i]->blob + " rolled back: the claim ended before COMMIT");
      std::erase_if(active, [&](std::size_t i) { return std::find(lost.begin(), lost.end(), i) != lost.end(); });
      for (std::size_t i : active) out[i] = load_outcome{};
    }
    return out;
  }

private:
  // One blob's part of a load transaction `w` (sql_sink.hpp): the ledger row first; when it was
  // there already the blob's rows are skipped (a concurrent load of the same blob blocks on the
  // unique index until the other transaction ends, then inserts nothing). Throws pqxx errors.
  load_outcome load_in(pqxx::work& w, const load_batch& b) {
    load_outcome out;
    prepare_statement("shoal_ledger",
                      "INSERT INTO shoal_etl_ledger (blob, dataset, owner, loaded_at) "
                      "VALUES ($1, $2, $3, to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) "
                      "ON CONFLICT (blob) DO NOTHING");
    prepare_statement("shoal_message",
                      "INSERT INTO shoal_etl_messages (message_id, dataset, blob) VALUES ($1, $2, $3) "
                      "ON CONFLICT (message_id) DO NOTHING");
    prepare_statement("shoal_quarantine",
                      "INSERT INTO shoal_etl_quarantine (blob, record_index, dataset, message_id, step, reason, raw, at) "
                      "VALUES ($1, $2, $3, $4, $5, $6, $7, to_char(now() at time zone 'utc', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')) "
                      "ON CONFLICT (blob, record_index) DO UPDATE SET reason = excluded.reason");
    const std::string insert_name = prepare_statement("", to_dollar_placeholders(b.insert_sql).first);
    auto led = w.exec_prepared("shoal_ledger", b.blob, b.dataset, b.owner);
    if (led.affected_rows() == 0) {
      out.already_loaded = true;
      return out;
    }
    std::vector<std::string> texts;
    std::vector<const char*> ptrs;
    for (const load_row& row : b.rows) {
      if (!b.keyed_by_table) {
        auto m = w.exec_prepared("shoal_message", row.message_id, b.dataset, b.blob);
        if (m.affected_rows() == 0) {
          ++out.duplicates;
          continue;
        }
      }
      texts.assign(row.values.size(), {});
      ptrs.assign(row.values.size(), nullptr);
      for (std::size_t i = 0; i < row.values.size(); ++i) {
        bool null = false;
        texts[i] = text_of(row.values[i], null);
        ptrs[i] = null ? nullptr : texts[i].c_str();
      }
      auto ins = w.exec_prepared(insert_name, pqxx::prepare::make_dynamic_params(ptrs));
      if (ins.affected_rows() == 0) ++out.duplicates; // keyed_by_table: ON CONFLICT DO NOTHING
      else ++out.inserted;
    }
    for (const quarantine_row& q : b.quarantined) {
      w.exec_prepared("shoal_quarantine", b.blob, static_cast<std::int64_t>(q.index), b.dataset, q.message_id,
                      q.step, q.reason, q.raw);
      ++out.quarantined;
    }
    w.exec_params("UPDATE shoal_etl_ledger SET rows_loaded = $1, duplicates = $2, quarantined = $3 WHERE blob = $4",
                  static_cast<std::int64_t>(out.inserted), static_cast<std::int64_t>(out.duplicates),
                  static_cast<std::int64_t>(out.quarantined), b.blob);
    return out;
  }

  // Prepares `sql` once per connection under `name` (generated from the text when empty).
  std::string prepare_statement(std::string name, const std::string& sql) {
    auto it = prepared_.find(sql);
    if (it != prepared_.end()) return it->second;
    if (name.empty()) name = "shoal_insert_" + std::to_string(prepared_.size());
    conn_->prepare(name, sql);
    prepared_.emplace(sql, name);
    return name;
  }

  template <class F> result<void> guarded(const std::string& what, F&& f) {
    try {
      f();
      return {};
    } catch (const pqxx::broken_connection& e) {
      return fail(errc::unavailable, "postgresql: connection lost while " + what + ": " + e.what());
    } catch (const pqxx::sql_error& e) {
      // SQLSTATE classes 08 (connection exception) and 53 (insufficient resources: disk full,
      // out of memory, too many connections), and 57P01-57P03 (the server shutting down or not
      // accepting connections yet): the server cannot serve now, whatever the rows.
      const std::string st = e.sqlstate();
      const bool down = st.starts_with("08") || st.starts_with("53") || st == "57P01" || st == "57P02" || st == "57P03";
      return fail(down ? errc::unavailable : errc::io,
                  "postgresql: " + what + ": " + e.what() + " (query: " + e.query().substr(0, 200) + ")");
    } catch (const std::exception& e) {
      return fail(errc::io, "postgresql: " + what + ": " + e.what());
    }
  }

  std::unique_ptr<pqxx::connection> conn_;
  std::map<std::string, std::string> prepared_; // SQL text → statement name
};

} // namespace

result<std::unique_ptr<sql_sink>> open_postgres_sink(const std::string& url) {
  try {
    auto c = std::make_unique<pqxx::connection>(url);
    return std::unique_ptr<sql_sink>(std::make_unique<postgres_sink>(std::move(c)));
  } catch (const std::exception& e) {
    return fail(errc::io, std::string("postgresql: cannot connect: ") + e.what());
  }
}

} // namespace shoal::workers::etl
