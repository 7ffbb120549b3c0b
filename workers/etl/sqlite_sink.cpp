// The SQLite sink: WAL, prepared statements reused across rows, one transaction per blob
// (performance.md §5: one transaction + a reused statement is the 50-100x step).

#include "workers/etl/sql_sink.hpp"

#include <sqlite3.h>

#include <chrono>
#include <ctime>
#include <map>

namespace shoal::workers::etl {

std::pair<std::string, std::size_t> to_dollar_placeholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size() + 16);
  std::size_t n = 0;
  char quote = 0;
  for (char c : sql) {
    if (quote) {
      if (c == quote) quote = 0;
      out += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      out += c;
    } else if (c == '?') {
      out += '$' + std::to_string(++n);
    } else {
      out += c;
    }
  }
  return {out, n};
}

result<std::vector<result<load_outcome>>> sql_sink::load_many(std::span<const load_batch* const> batches) {
  std::vector<result<load_outcome>> out;
  out.reserve(batches.size());
  for (const load_batch* b : batches) out.push_back(load(*b));
  return out;
}

namespace {

// What a SQLite result code means to the caller: busy or locked = timeout (another writer holds
// the lock); a full disk, an I/O error, no memory, a read-only file = unavailable (the database
// cannot take writes now, whatever the rows: retry later); anything else (a constraint, a type
// mismatch, bad SQL) = io.
errc errc_of_sqlite(int code) {
  switch (code & 0xff) { // the primary code of an extended one
  case SQLITE_BUSY:
  case SQLITE_LOCKED: return errc::timeout;
  case SQLITE_FULL:
  case SQLITE_IOERR:
  case SQLITE_NOMEM:
  case SQLITE_READONLY:
  case SQLITE_CANTOPEN:
  case SQLITE_NOLFS: return errc::unavailable;
  default: return errc::io;
  }
}

std::string now_rfc3339() {
  auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

constexpr const char* k_sqlite_base_ddl = R"sql(
CREATE TABLE IF NOT EXISTS shoal_etl_ledger (
  blob TEXT PRIMARY KEY, dataset TEXT NOT NULL, rows_loaded INTEGER NOT NULL DEFAULT 0,
  duplicates INTEGER NOT NULL DEFAULT 0, quarantined INTEGER NOT NULL DEFAULT 0,
  owner TEXT, loaded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shoal_etl_messages (
  message_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, blob TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS shoal_etl_quarantine (
  blob TEXT NOT NULL, record_index INTEGER NOT NULL, dataset TEXT NOT NULL, message_id TEXT,
  step TEXT NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL, at TEXT NOT NULL,
  PRIMARY KEY (blob, record_index));
CREATE TABLE IF NOT EXISTS shoal_etl_records (
  message_id TEXT PRIMARY KEY, dest TEXT, event_time TEXT, payload TEXT, blob TEXT);
)sql";

class sqlite_sink final : public sql_sink {
public:
  sqlite_sink(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~sqlite_sink() override {
    for (auto& [sql, st] : stmts_) sqlite3_finalize(st);
    sqlite3_close_v2(db_);
  }
  std::string_view engine() const noexcept override { return "sqlite"; }

  result<void> prepare(std::string_view ddl) override {
    if (auto r = execute(k_sqlite_base_ddl); !r) return r;
    if (!ddl.empty()) return execute(ddl);
    return {};
  }

  result<void> execute(std::string_view sql) override {
    char* msg = nullptr;
    std::string text(sql);
    if (sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
      std::string m = msg ? msg : sqlite3_errmsg(db_);
      sqlite3_free(msg);
      return fail(errc_of_sqlite(sqlite3_extended_errcode(db_)), "sqlite " + path_ + ": " + m);
    }
    return {};
  }

  result<std::int64_t> scalar(std::string_view sql) override {
    auto st = stmt(sql);
    if (!st) return std::unexpected(st.error());
    sqlite3_reset(*st);
    int rc = sqlite3_step(*st);
    if (rc != SQLITE_ROW) return err("query returned no row");
    std::int64_t v = sqlite3_column_int64(*st, 0);
    sqlite3_reset(*st);
    return v;
  }

  result<std::optional<ledger_entry>> ledger(std::string_view blob) override {
    auto st = stmt("SELECT blob, dataset, rows_loaded, duplicates, quarantined, owner, loaded_at "
                   "FROM shoal_etl_ledger WHERE blob = ?");
    if (!st) return std::unexpected(st.error());
    sqlite3_reset(*st);
    sqlite3_bind_text(*st, 1, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    int rc = sqlite3_step(*st);
    if (rc == SQLITE_DONE) {
      sqlite3_reset(*st);
      return std::optional<ledger_entry>{};
    }
    if (rc != SQLITE_ROW) return err("reading the ledger");
    ledger_entry e;
    e.blob = col_text(*st, 0);
    e.dataset = col_text(*st, 1);
    e.rows_loaded = sqlite3_column_int64(*st, 2);
    e.duplicates = sqlite3_column_int64(*st, 3);
    e.quarantined = sqlite3_column_int64(*st, 4);
    e.owner = col_text(*st, 5);
    e.loaded_at = col_text(*st, 6);
    sqlite3_reset(*st);
    return std::optional<ledger_entry>(std::move(e));
  }

  result<load_outcome> load(const load_batch& b) override {
    // BEGIN IMMEDIATE takes the write lock now (waiting up to busy_timeout), so the ledger
    // check below cannot race another writer's commit.
    if (auto r = execute("BEGIN IMMEDIATE"); !r) return std::unexpected(r.error());
    auto out = load_in_transaction(b);
    if (!out || out->already_loaded) {
      (void)execute("ROLLBACK");
      return out;
    }
    if (b.may_commit && !b.may_commit()) {
      (void)execute("ROLLBACK");
      return fail(errc::lease_lost, "load of " + b.blob + " rolled back: the claim ended before COMMIT");
    }
    if (auto r = execute("COMMIT"); !r) {
      (void)execute("ROLLBACK");
      return std::unexpected(r.error());
    }
    return out;
  }

  result<std::vector<result<load_outcome>>> load_many(std::span<const load_batch* const> batches) override {
    std::vector<result<load_outcome>> out(batches.size(), load_outcome{});
    std::vector<std::size_t> active(batches.size());
    for (std::size_t i = 0; i < active.size(); ++i) active[i] = i;
    while (!active.empty()) {
      // One write lock for all of them (BEGIN IMMEDIATE, as load()); each blob's ledger row
      // decides on its own whether its rows go in.
      if (auto r = execute("BEGIN IMMEDIATE"); !r) return std::unexpected(r.error());
      for (std::size_t i : active) {
        auto o = load_in_transaction(*batches[i]);
        if (!o) {
          (void)execute("ROLLBACK");
          if (o.error().code != errc::invalid_argument) return std::unexpected(o.error());
          // A blob whose rows do not fit: every other blob in a transaction of its own.
          for (std::size_t j : active) out[j] = load(*batches[j]);
          return out;
        }
        out[i] = *o;
      }
      // Just before COMMIT: a blob whose claim ended is left out, and the rest done again.
      std::vector<std::size_t> keep;
      for (std::size_t i : active) {
        const load_batch& b = *batches[i];
        if (!out[i]->already_loaded && b.may_commit && !b.may_commit())
          out[i] = fail(errc::lease_lost, "load of " + b.blob + " rolled back: the claim ended before COMMIT");
        else
          keep.push_back(i);
      }
      if (keep.size() != active.size()) {
        (void)execute("ROLLBACK");
        active = std::move(keep);
        for (std::size_t i : active) out[i] = load_outcome{};
        continue;
      }
      if (auto r = execute("COMMIT"); !r) {
        (void)execute("ROLLBACK");
        return std::unexpected(r.error());
      }
      return out;
    }
    return out;
  }

private:
  static std::string col_text(sqlite3_stmt* st, int i) {
    const unsigned char* t = sqlite3_column_text(st, i);
    return t ? reinterpret_cast<const char*>(t) : std::string();
  }

  std::unexpected<error> err(const std::string& what) {
    return fail(errc_of_sqlite(sqlite3_extended_errcode(db_)), "sqlite " + path_ + ": " + what + ": " + sqlite3_errmsg(db_));
  }

  // Prepared statements are cached by SQL text for the life of the connection.
  result<sqlite3_stmt*> stmt(std::string_view sql) {
    auto it = stmts_.find(sql);
    if (it != stmts_.end()) return it->second;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                           &st, nullptr) != SQLITE_OK)
      return err("preparing `" + std::string(sql) + "`");
    stmts_.emplace(std::string(sql), st);
    return st;
  }

  static void bind_text(sqlite3_stmt* st, int i, std::string_view s) {
    sqlite3_bind_text(st, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
  }

  // Runs a bound statement to completion; returns sqlite3_changes.
  result<int> run(sqlite3_stmt* st, const char* what) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return err(what);
    return sqlite3_changes(db_);
  }

  result<load_outcome> load_in_transaction(const load_batch& b) {
    load_outcome out;
    const std::string at = now_rfc3339();
    auto led = stmt("INSERT OR IGNORE INTO shoal_etl_ledger (blob, dataset, owner, loaded_at) "
                    "VALUES (?, ?, ?, ?)");
    if (!led) return std::unexpected(led.error());
    bind_text(*led, 1, b.blob);
    bind_text(*led, 2, b.dataset);
    bind_text(*led, 3, b.owner);
    bind_text(*led, 4, at);
    auto changed = run(*led, "inserting the ledger row");
    if (!changed) return std::unexpected(changed.error());
    if (*changed == 0) {
      out.already_loaded = true;
      return out;
    }
    auto msg = stmt("INSERT OR IGNORE INTO shoal_etl_messages (message_id, dataset, blob) VALUES (?, ?, ?)");
    if (!msg) return std::unexpected(msg.error());
    auto ins = stmt(b.insert_sql);
    if (!ins) return std::unexpected(ins.error());
    const int params = sqlite3_bind_parameter_count(*ins);
    for (const load_row& row : b.rows) {
      if (!b.keyed_by_table) {
        bind_text(*msg, 1, row.message_id);
        bind_text(*msg, 2, b.dataset);
        bind_text(*msg, 3, b.blob);
        auto fresh = run(*msg, "inserting a message row");
        if (!fresh) return std::unexpected(fresh.error());
        if (*fresh == 0) {
          ++out.duplicates;
          continue;
        }
      }
      if (static_cast<int>(row.values.size()) != params)
        return fail(errc::invalid_argument, "row " + std::to_string(row.index) + " has " +
                                                std::to_string(row.values.size()) + " values, the insert takes " +
                                                std::to_string(params));
      for (int i = 0; i < params; ++i) {
        const sql_value& v = row.values[static_cast<std::size_t>(i)];
        if (auto* s = std::get_if<std::string>(&v)) bind_text(*ins, i + 1, *s);
        else if (auto* n = std::get_if<std::int64_t>(&v)) sqlite3_bind_int64(*ins, i + 1, *n);
        else if (auto* d = std::get_if<double>(&v)) sqlite3_bind_double(*ins, i + 1, *d);
        else sqlite3_bind_null(*ins, i + 1);
      }
      auto done = run(*ins, "running the dataset's insert");
      if (!done) return std::unexpected(done.error());
      if (*done == 0) ++out.duplicates; // keyed_by_table: ON CONFLICT DO NOTHING skipped it
      else ++out.inserted;
    }
    if (!b.quarantined.empty()) {
      auto q = stmt("INSERT OR REPLACE INTO shoal_etl_quarantine "
                    "(blob, record_index, dataset, message_id, step, reason, raw, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
      if (!q) return std::unexpected(q.error());
      for (const quarantine_row& r : b.quarantined) {
        bind_text(*q, 1, b.blob);
        sqlite3_bind_int64(*q, 2, static_cast<std::int64_t>(r.index));
        bind_text(*q, 3, b.dataset);
        bind_text(*q, 4, r.message_id);
        bind_text(*q, 5, r.step);
        bind_text(*q, 6, r.reason);
        bind_text(*q, 7, r.raw);
        bind_text(*q, 8, at);
        auto done = run(*q, "inserting a quarantine row");
        if (!done) return std::unexpected(done.error());
        ++out.quarantined;
      }
    }
    auto upd = stmt("UPDATE shoal_etl_ledger SET rows_loaded = ?, duplicates = ?, quarantined = ? WHERE blob = ?");
    if (!upd) return std::unexpected(upd.error());
    sqlite3_bind_int64(*upd, 1, static_cast<std::int64_t>(out.inserted));
    sqlite3_bind_int64(*upd, 2, static_cast<std::int64_t>(out.duplicates));
    sqlite3_bind_int64(*upd, 3, static_cast<std::int64_t>(out.quarantined));
    bind_text(*upd, 4, b.blob);
    if (auto done = run(*upd, "updating the ledger row"); !done) return std::unexpected(done.error());
    return out;
  }

  sqlite3* db_;
  std::string path_;
  std::map<std::string, sqlite3_stmt*, std::less<>> stmts_;
};

} // namespace

result<std::unique_ptr<sql_sink>> open_sqlite_sink(const sqlite_sink_options& o) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(o.path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string m = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close_v2(db);
    return fail(errc::io, "sqlite: cannot open " + o.path + ": " + m);
  }
  sqlite3_busy_timeout(db, static_cast<int>(o.busy_timeout_ms));
  auto sink = std::make_unique<sqlite_sink>(db, o.path);
  if (o.synchronous != "NORMAL" && o.synchronous != "FULL" && o.synchronous != "OFF")
    return fail(errc::invalid_argument, "sqlite synchronous must be NORMAL, FULL or OFF");
  if (o.path != ":memory:")
    if (auto r = sink->execute("PRAGMA journal_mode=WAL"); !r) return std::unexpected(r.error());
  if (auto r = sink->execute("PRAGMA synchronous=" + o.synchronous); !r) return std::unexpected(r.error());
  // Pages read through a memory map instead of pread copies: several worker processes write the
  // same file, so every transaction starts with the others' changes (its page cache dropped) and
  // re-reads the B-tree pages it touches; mapped, that is a page-cache hit, not a copy
  // (issue 14's profile: pread/_copy_to_iter were most of a worker's CPU). 256 MiB of address
  // space, not memory.
  if (o.path != ":memory:")
    if (auto r = sink->execute("PRAGMA mmap_size=268435456"); !r) return std::unexpected(r.error());
  // A checkpoint copies every page changed since the last one back into the database file (and
  // fsyncs it): with random message-id keys most transactions touch the same index pages, so
  // checkpointing every 10,000 WAL pages instead of every 1,000 copies each page once per many
  // transactions instead of once per few (the WAL file grows to ~40 MiB before it is reused).
  if (auto r = sink->execute("PRAGMA wal_autocheckpoint=10000"); !r) return std::unexpected(r.error());
  return std::unique_ptr<sql_sink>(std::move(sink));
}

} // namespace shoal::workers::etl
