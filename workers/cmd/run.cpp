// `shoal run`: the main job on one machine. It makes sure storage is there (starting the pinned
// Azurite for UseDevelopmentStorage=true when nothing listens), starts a persistor, sends a real
// dataset through it with `shoal send`, loads the committed blobs into SQLite with parallel
// `shoal etl run --once` processes, and prints a summary that verifies itself:
// records read = rows loaded + already loaded (re-sent) + quarantined, no duplicate message ids.
//
// Every stage is a real `shoal` process talking over ZeroMQ and Azure Storage, as in production.
// Until the worker fleet exists (issue 5) the ETL stage runs as N `etl run --once` processes
// instead of supervised workers claiming ETL records continuously.

#include "workers/child_process.hpp"
#include "workers/cmd/cli.hpp"
#include "workers/dev_storage.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace shoal::cmd {
namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

struct run_args {
  std::string dataset = "flights-20k";
  std::string db = "./shoal.db";
  unsigned workers = 0; // 0 = 2 per core
  std::string run_dir = "./shoal-run";
  std::string event_time_field;
};

// A dataset to send: the file, its dest (first blob-name segment), its event-time field and
// the folder of dataset definitions that maps it to SQL (empty = the generic mapping).
struct dataset_spec {
  fs::path file;
  std::string dest;
  std::string event_time_field;
  fs::path datasets_dir;
  std::string table = "shoal_etl_records";
};

std::optional<dataset_spec> resolve_dataset(const run_args& a) {
  const fs::path data = workers::source_dir() / "deploy/local/node_modules/vega-datasets/data";
  // The dated flight files share one schema (date, delay, distance, origin, destination) and
  // the shipped `flights` dataset; flights-200k has another (delay, distance, time: no date),
  // so it loads with the generic mapping and ingest time.
  static const std::map<std::string, std::string> flights{
      {"flights-2k", "flights-2k.json"},
      {"flights-5k", "flights-5k.json"},
      {"flights-10k", "flights-10k.json"},
      {"flights-20k", "flights-20k.json"}};
  dataset_spec d;
  if (a.dataset == "flights-200k") {
    d.file = data / "flights-200k.json";
    d.dest = "flights-200k";
  } else if (auto it = flights.find(a.dataset); it != flights.end()) {
    d.file = data / it->second;
    d.dest = "flights";
    d.event_time_field = "date";
    d.datasets_dir = workers::source_dir() / "deploy/datasets";
    d.table = "flights";
  } else if (a.dataset == "seattle-weather") {
    d.file = data / "seattle-weather.csv";
    d.dest = "seattle-weather";
    d.event_time_field = "date";
  } else {
    d.file = a.dataset;
    std::string stem = d.file.stem().string();
    for (char c : stem)
      if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')
        d.dest += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (d.dest.empty())
      d.dest = "records";
  }
  if (!a.event_time_field.empty())
    d.event_time_field = a.event_time_field;
  std::error_code ec;
  if (!fs::is_regular_file(d.file, ec)) {
    std::fprintf(stderr,
                 "shoal run: dataset '%s': %s is not a file (names: flights-2k, flights-5k, "
                 "flights-10k, flights-20k, flights-200k, seattle-weather, or a path to a JSON "
                 "array, NDJSON or CSV file; the named ones need deploy/setup.sh)\n",
                 a.dataset.c_str(), d.file.c_str());
    return std::nullopt;
  }
  return d;
}

// Records in the input, counted the way `shoal send` reads it: JSON array elements, non-empty
// NDJSON lines, or CSV rows after the header.
std::optional<std::size_t> count_records(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in)
    return std::nullopt;
  char first = 0;
  while (in.get(first) && std::isspace(static_cast<unsigned char>(first))) {
  }
  in.seekg(0);
  if (first == '[') {
    try {
      auto j = nlohmann::json::parse(in);
      return j.is_array() ? std::optional<std::size_t>(j.size()) : std::nullopt;
    } catch (const nlohmann::json::exception&) {
      return std::nullopt;
    }
  }
  const bool csv = file.extension() == ".csv";
  std::size_t n = 0;
  std::string line;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos)
      ++n;
  return csv && n > 0 ? n - 1 : n;
}

struct ledger_totals {
  std::int64_t blobs = 0, loaded = 0, duplicates = 0, quarantined = 0;
  std::map<std::string, std::int64_t> blobs_per_day; // "YYYY-MM-DD" → blobs
};

// Sums the ETL ledger over this run's blobs (their names carry the run's persistor name).
std::optional<ledger_totals> read_ledger(sqlite3* db, const std::string& persistor) {
  ledger_totals t;
  sqlite3_stmt* st = nullptr;
  const char* sql = "SELECT blob, rows_loaded, duplicates, quarantined FROM shoal_etl_ledger "
                    "WHERE blob LIKE ?";
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK)
    return std::nullopt;
  const std::string pattern = "%-" + persistor + "-%";
  sqlite3_bind_text(st, 1, pattern.c_str(), -1, SQLITE_TRANSIENT);
  while (sqlite3_step(st) == SQLITE_ROW) {
    std::string blob = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    ++t.blobs;
    t.loaded += sqlite3_column_int64(st, 1);
    t.duplicates += sqlite3_column_int64(st, 2);
    t.quarantined += sqlite3_column_int64(st, 3);
    // {dest}/{YYYY}/{MM}/{DD}/{HH}/…
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (std::size_t i = 0; i <= blob.size() && parts.size() < 5; ++i)
      if (i == blob.size() || blob[i] == '/') {
        parts.push_back(blob.substr(start, i - start));
        start = i + 1;
      }
    if (parts.size() >= 4)
      ++t.blobs_per_day[parts[1] + "-" + parts[2] + "-" + parts[3]];
  }
  sqlite3_finalize(st);
  return t;
}

std::optional<std::int64_t> scalar(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
    return std::nullopt;
  std::optional<std::int64_t> v;
  if (sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

int run_main(const global_options& g, const run_args& a) {
  auto cfg = load(g);
  if (!cfg)
    return 2;
  init_logging(*cfg);
  auto ds = resolve_dataset(a);
  if (!ds)
    return 2;
  auto records_in = count_records(ds->file);
  if (!records_in) {
    std::fprintf(stderr, "shoal run: cannot read %s as a JSON array, NDJSON or CSV file\n",
                 ds->file.c_str());
    return 2;
  }
  const unsigned workers =
      a.workers ? a.workers : std::max(2u, 2 * std::thread::hardware_concurrency());
  std::error_code ec;
  const fs::path run_dir = fs::absolute(a.run_dir);
  fs::create_directories(run_dir / "logs", ec);
  if (ec) {
    std::fprintf(stderr, "shoal run: cannot create %s: %s\n", run_dir.c_str(),
                 ec.message().c_str());
    return 2;
  }
  const fs::path db = fs::absolute(a.db);

  std::printf("shoal run: %s (%zu records) → dest '%s' → %s, %u ETL workers\n",
              ds->file.filename().c_str(), *records_in, ds->dest.c_str(), db.c_str(), workers);
  auto storage = workers::ensure_storage(cfg->storage.connection_string, run_dir / "azurite");
  if (!storage) {
    std::fprintf(stderr, "shoal run: storage: %s\n", storage.error().describe().c_str());
    return 1;
  }
  std::printf("storage: %s\n", storage->started ? "started Azurite (development storage)"
                                                : "using the configured account");

  // Common arguments for the child processes: same config and storage as this process.
  const std::string self = workers::self_executable().string();
  std::vector<std::string> common{self, "--connection-string", storage->connection_string};
  if (!g.config_path.empty())
    common.insert(common.end(), {"--config", g.config_path});
  if (!g.log_level.empty())
    common.insert(common.end(), {"--log-level", g.log_level});
  const std::string persistor_name = "run" + std::to_string(::time(nullptr));
  const std::string endpoint = "ipc://" + (run_dir / ("persistor-" + persistor_name)).string();

  // 1. persistor
  auto pargv = common;
  pargv.insert(pargv.end(), {"persistor", "--mode", "push", "--endpoint", endpoint, "--name",
                             persistor_name});
  if (!ds->event_time_field.empty())
    pargv.insert(pargv.end(), {"--event-time-field", ds->event_time_field});
  auto persistor = workers::child_process::spawn(
      {pargv, {}, run_dir / "logs" / "persistor.log", true});
  if (!persistor) {
    std::fprintf(stderr, "shoal run: persistor: %s\n", persistor.error().describe().c_str());
    return 1;
  }

  // 2. send (its progress line is the live display of this stage)
  const auto t_send = clock_type::now();
  auto sargv = common;
  sargv.insert(sargv.end(), {"send", ds->file.string(), "--dest", ds->dest, "--endpoint",
                             endpoint, "--progress"});
  if (!ds->event_time_field.empty())
    sargv.insert(sargv.end(), {"--event-time-field", ds->event_time_field});
  auto sender = workers::child_process::spawn({sargv, {}, {}, true});
  if (!sender) {
    std::fprintf(stderr, "shoal run: send: %s\n", sender.error().describe().c_str());
    return 1;
  }
  const int send_status = *sender->wait();
  const double send_s = seconds_since(t_send);
  const int persistor_status = persistor->terminate(std::chrono::seconds(60));
  if (send_status != 0 || persistor_status != 0) {
    std::fprintf(stderr,
                 "shoal run: send exited %d, persistor exited %d (logs in %s)\n", send_status,
                 persistor_status, (run_dir / "logs").c_str());
    return 1;
  }
  std::printf("persisted: %zu records in %.1f s (%.0f records/s), acknowledged after commit\n",
              *records_in, send_s, send_s > 0 ? *records_in / send_s : 0.0);

  // 3. ETL: N parallel `etl run --once` rounds until every blob of this run is in the ledger.
  const auto t_etl = clock_type::now();
  auto eargv = common;
  eargv.insert(eargv.end(), {"etl", "--sqlite", db.string()});
  if (!ds->datasets_dir.empty())
    eargv.insert(eargv.end(), {"--datasets", ds->datasets_dir.string()});
  eargv.insert(eargv.end(), {"run", "--once"});
  sqlite3* raw_db = nullptr;
  std::optional<ledger_totals> totals;
  for (int round = 1; round <= 5; ++round) {
    std::vector<workers::child_process> etl;
    for (unsigned i = 0; i < workers; ++i) {
      auto argv = eargv;
      argv.insert(argv.end(), {"--owner", persistor_name + "-etl" + std::to_string(i)});
      auto c = workers::child_process::spawn(
          {argv, {}, run_dir / "logs" / ("etl-" + std::to_string(i) + ".log"), true});
      if (!c) {
        std::fprintf(stderr, "shoal run: etl: %s\n", c.error().describe().c_str());
        return 1;
      }
      etl.push_back(std::move(*c));
    }
    int failed = 0;
    for (auto& c : etl)
      failed += *c.wait() != 0 ? 1 : 0;
    if (!raw_db && sqlite3_open_v2(db.c_str(), &raw_db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      std::fprintf(stderr, "shoal run: cannot open %s: %s\n", db.c_str(), sqlite3_errmsg(raw_db));
      sqlite3_close(raw_db);
      return 1;
    }
    if (raw_db)
      sqlite3_busy_timeout(raw_db, 30'000);
    totals = raw_db ? read_ledger(raw_db, persistor_name) : std::nullopt;
    const std::int64_t accounted =
        totals ? totals->loaded + totals->duplicates + totals->quarantined : 0;
    std::printf("etl round %d: %d of %u processes failed; %lld blobs loaded, %lld of %zu "
                "records accounted for\n",
                round, failed, workers, totals ? static_cast<long long>(totals->blobs) : 0LL,
                static_cast<long long>(accounted), *records_in);
    std::fflush(stdout);
    if (accounted >= static_cast<std::int64_t>(*records_in))
      break;
  }
  const double etl_s = seconds_since(t_etl);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> db_guard(raw_db, &sqlite3_close);
  if (!totals) {
    std::fprintf(stderr, "shoal run: %s has no ETL ledger (logs in %s)\n", db.c_str(),
                 (run_dir / "logs").c_str());
    return 1;
  }

  // 4. Verify.
  const auto table_rows = scalar(raw_db, "SELECT count(*) FROM \"" + ds->table + "\"");
  const auto dup_ids = scalar(raw_db, "SELECT count(*) - count(DISTINCT message_id) FROM \"" +
                                          ds->table + "\"");
  const std::int64_t accounted = totals->loaded + totals->duplicates + totals->quarantined;
  const bool ok = accounted == static_cast<std::int64_t>(*records_in) && dup_ids &&
                  *dup_ids == 0;
  std::printf("\nsummary\n");
  std::printf("  records read            %zu\n", *records_in);
  std::printf("  rows loaded (new)       %lld into %s\n", static_cast<long long>(totals->loaded),
              ds->table.c_str());
  std::printf("  already loaded          %lld (re-sent message ids, kept once)\n",
              static_cast<long long>(totals->duplicates));
  std::printf("  quarantined             %lld\n", static_cast<long long>(totals->quarantined));
  std::printf("  rows in %-15s %lld, duplicate message ids: %lld\n", ds->table.c_str(),
              static_cast<long long>(table_rows.value_or(-1)),
              static_cast<long long>(dup_ids.value_or(-1)));
  std::printf("  blobs                   %lld", static_cast<long long>(totals->blobs));
  if (totals->blobs_per_day.size() <= 12) {
    std::printf(" (");
    bool first = true;
    for (const auto& [day, n] : totals->blobs_per_day) {
      std::printf("%s%s: %lld", first ? "" : ", ", day.c_str(), static_cast<long long>(n));
      first = false;
    }
    std::printf(")");
  } else {
    std::printf(" over %zu days", totals->blobs_per_day.size());
  }
  std::printf("\n  persist stage           %.1f s, %.0f records/s\n", send_s,
              send_s > 0 ? *records_in / send_s : 0.0);
  std::printf("  ETL stage               %.1f s, %.0f records/s\n", etl_s,
              etl_s > 0 ? *records_in / etl_s : 0.0);
  std::printf("  end to end              %.1f s, %.0f records/s\n", send_s + etl_s,
              (send_s + etl_s) > 0 ? *records_in / (send_s + etl_s) : 0.0);
  std::printf("verification: %s (records read %s rows loaded + already loaded + quarantined; "
              "%s duplicate message ids)\n",
              ok ? "PASSED" : "FAILED",
              accounted == static_cast<std::int64_t>(*records_in) ? "=" : "≠",
              dup_ids && *dup_ids == 0 ? "no" : "some");
  return ok ? 0 : 1;
}

} // namespace

void add_run_command(CLI::App& app, global_options& g, command_fn& run) {
  auto a = std::make_shared<run_args>();
  auto* cmd = app.add_subcommand(
      "run", "The main job: send a real dataset through persistor and ETL into SQLite, verified");
  cmd->add_option("--dataset", a->dataset,
                  "flights-20k | flights-200k | flights-2k | seattle-weather | a JSON array, "
                  "NDJSON or CSV file (generic mapping)")
      ->capture_default_str();
  cmd->add_option("--db", a->db, "SQLite database to load into")->capture_default_str();
  cmd->add_option("--workers", a->workers, "parallel ETL processes (default: 2 per core)");
  cmd->add_option("--run-dir", a->run_dir, "logs and the Azurite workspace of this run")
      ->capture_default_str();
  cmd->add_option("--event-time-field", a->event_time_field,
                  "field holding the event time (blob date folders); default per dataset");
  cmd->callback([&g, &run, a] { run = [&g, a] { return run_main(g, *a); }; });
}

} // namespace shoal::cmd
