// etl_bench: rows/s from blob bytes in memory to SQLite rows for the flights dataset
// (deploy/datasets/flights.toml), beside `sqlite3 .import` of the same rows as CSV into the same
// schema (shared/reference/performance.md §8.6). Same pragmas on both sides: WAL,
// synchronous=OFF. The project's path is measured twice: through the chain of stage actors
// (workers/etl/etl_chain.hpp: extract → validate → transform → load actors, the blob passed by
// handle; what `shoal worker` and `shoal etl run` use) and as direct calls on one thread
// (run_pipeline). Also a C++ floor: the same rows through one prepared INSERT in one
// transaction (no JSON, no ledger).
//
//   etl_bench [--rows N (default 200000: flights-20k.json repeated, unique message ids)] [--runs R (default 3)] [--source DIR (repo top)]
//
// Prints one JSON line per measurement and a table; the median of R runs is reported.

#include "workers/etl/etl_chain.hpp"
#include "workers/etl/orchestrator.hpp"

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace etl = shoal::workers::etl;
using clk = std::chrono::steady_clock;

namespace {

double secs(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string csv_field(const etl::sql_value& v) {
  if (auto* s = std::get_if<std::string>(&v)) {
    std::string out = "\"";
    for (char c : *s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
  }
  if (auto* n = std::get_if<std::int64_t>(&v)) return std::to_string(*n);
  if (auto* d = std::get_if<double>(&v)) return std::to_string(*d);
  return "";
}

} // namespace

int main(int argc, char** argv) {
  std::size_t rows = 200'000;
  int runs = 3;
  // The repository's top folder: $SHOAL_SOURCE_DIR, else two levels up from this file.
  std::string source = std::getenv("SHOAL_SOURCE_DIR") ? std::getenv("SHOAL_SOURCE_DIR")
                                                        : std::filesystem::path(__FILE__).parent_path().parent_path().string();
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--rows") rows = std::stoul(argv[i + 1]);
    else if (a == "--runs") runs = std::stoi(argv[i + 1]);
    else if (a == "--source") source = argv[i + 1];
  }
  auto ds = etl::load_dataset(source + "/deploy/datasets/flights.toml");
  if (!ds) {
    std::fprintf(stderr, "etl_bench: %s\n", ds.error().message.c_str());
    return 1;
  }
  std::ifstream in(source + "/deploy/local/node_modules/vega-datasets/data/flights-20k.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto all = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!all.is_array() || all.empty()) {
    std::fprintf(stderr, "etl_bench: cannot read flights-20k.json under %s\n", source.c_str());
    return 1;
  }
  std::vector<shoal::workers::record_to_write> recs;
  for (std::size_t i = 0; i < rows; ++i)
    recs.push_back({"m-" + std::to_string(i), "2026-11-21T12:00:00Z", all[i % all.size()].dump()});
  const std::string blob = shoal::workers::write_blob(shoal::workers::blob_format::persistor_v1, recs);
  const std::string blob_name = "flights/2026/11/21/12/bench-p1-00000001.json";

  auto dir = std::filesystem::temp_directory_path() / ("shoal-etl-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);

  // The rows as the ETL writes them, for the CSV and the C++ floor.
  std::vector<etl::load_row> mapped;
  {
    auto ex = shoal::workers::extract_records(blob);
    std::vector<etl::quarantine_row> q;
    auto v = etl::validate_records(*ds, *ex, q);
    mapped = etl::transform_records(*ds, blob_name, v, q);
  }
  const std::string csv = (dir / "rows.csv").string();
  {
    std::ofstream out(csv);
    for (const auto& r : mapped) {
      for (std::size_t i = 0; i < r.values.size(); ++i) out << (i ? "," : "") << csv_field(r.values[i]);
      out << '\n';
    }
  }

  std::vector<double> project, chained, import, floor_cpp;
  std::vector<double> step_ms[4], chain_step_ms[4];
  for (int run = 0; run < runs; ++run) {
    // Project: blob bytes → extract → validate → transform → load (ledger + message keys).
    const std::string db = (dir / ("p" + std::to_string(run) + ".db")).string();
    auto sink = etl::open_sqlite_sink({.path = db, .busy_timeout_ms = 30'000, .synchronous = "OFF"});
    if (!sink) return 1;
    auto t0 = clk::now();
    auto r = etl::run_pipeline(*ds, blob_name, blob, **sink, "bench");
    const double s = secs(t0);
    if (!r || r->load.inserted != rows) {
      std::fprintf(stderr, "etl_bench: pipeline failed: %s\n", r ? "row count" : r.error().message.c_str());
      return 1;
    }
    project.push_back(static_cast<double>(rows) / s);
    for (int k = 0; k < 4; ++k) step_ms[k].push_back(r->steps[static_cast<std::size_t>(k)].ms);

    // Project through the actor chain: the same blob, a fresh database, the stages on their own
    // threads (started before the clock runs, as a worker lane's chain is).
    {
      const std::string cdb = (dir / ("c" + std::to_string(run) + ".db")).string();
      auto csink = etl::open_sqlite_sink({.path = cdb, .busy_timeout_ms = 30'000, .synchronous = "OFF"});
      if (!csink) return 1;
      auto chain = etl::etl_chain::start({}, std::move(*csink));
      if (!chain) {
        std::fprintf(stderr, "etl_bench: %s\n", chain.error().message.c_str());
        return 1;
      }
      auto tc = clk::now();
      auto rc = (*chain)->run_in_memory(*ds, blob_name, blob, "bench");
      const double sc = secs(tc);
      if (!rc || rc->load.inserted != rows) {
        std::fprintf(stderr, "etl_bench: chain failed: %s\n", rc ? "row count" : rc.error().message.c_str());
        return 1;
      }
      chained.push_back(static_cast<double>(rows) / sc);
      for (int k = 0; k < 4; ++k) chain_step_ms[k].push_back(rc->steps[static_cast<std::size_t>(k)].ms);
    }

    // Reference: sqlite3 .import of the same rows as CSV, same schema and pragmas.
    const std::string ref = (dir / ("r" + std::to_string(run) + ".db")).string();
    const std::string script = (dir / "import.sql").string();
    {
      std::ofstream sc(script);
      sc << "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=OFF;\n" << ds->ddl << "\n.mode csv\n.import " << csv << " flights\n";
    }
    t0 = clk::now();
    int rc = std::system(("sqlite3 " + ref + " < " + script + " > /dev/null").c_str());
    const double si = secs(t0);
    if (rc != 0) {
      std::fprintf(stderr, "etl_bench: sqlite3 .import failed (%d)\n", rc);
      return 1;
    }
    import.push_back(static_cast<double>(rows) / si);

    // Floor: the mapped rows through one prepared statement in one transaction.
    const std::string fl = (dir / ("f" + std::to_string(run) + ".db")).string();
    sqlite3* h = nullptr;
    sqlite3_open(fl.c_str(), &h);
    sqlite3_exec(h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;", nullptr, nullptr, nullptr);
    sqlite3_exec(h, ds->ddl.c_str(), nullptr, nullptr, nullptr);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(h, ds->insert_sql.c_str(), -1, &st, nullptr);
    t0 = clk::now();
    sqlite3_exec(h, "BEGIN", nullptr, nullptr, nullptr);
    for (const auto& row : mapped) {
      for (std::size_t i = 0; i < row.values.size(); ++i) {
        const auto& v = row.values[i];
        int idx = static_cast<int>(i) + 1;
        if (auto* s2 = std::get_if<std::string>(&v)) sqlite3_bind_text(st, idx, s2->data(), static_cast<int>(s2->size()), SQLITE_STATIC);
        else if (auto* n = std::get_if<std::int64_t>(&v)) sqlite3_bind_int64(st, idx, *n);
        else if (auto* d = std::get_if<double>(&v)) sqlite3_bind_double(st, idx, *d);
        else sqlite3_bind_null(st, idx);
      }
      sqlite3_step(st);
      sqlite3_reset(st);
    }
    sqlite3_exec(h, "COMMIT", nullptr, nullptr, nullptr);
    floor_cpp.push_back(static_cast<double>(rows) / secs(t0));
    sqlite3_finalize(st);
    sqlite3_close(h);
  }
  std::filesystem::remove_all(dir);

  const double p = median(project), c = median(chained), i = median(import), f = median(floor_cpp);
  const char* names[] = {"extract", "validate", "transform", "load"};
  std::printf("{\"layer\":\"L4\",\"name\":\"etl_flights\",\"variant\":\"project\",\"n\":%zu,\"median\":%.0f,\"unit\":\"rows/s\"}\n", rows, p);
  std::printf("{\"layer\":\"L4\",\"name\":\"etl_flights\",\"variant\":\"project_actor_chain\",\"n\":%zu,\"median\":%.0f,\"unit\":\"rows/s\"}\n", rows, c);
  std::printf("{\"layer\":\"L4\",\"name\":\"etl_flights\",\"variant\":\"sqlite3_import\",\"n\":%zu,\"median\":%.0f,\"unit\":\"rows/s\"}\n", rows, i);
  std::printf("{\"layer\":\"L4\",\"name\":\"etl_flights\",\"variant\":\"cpp_prepared_floor\",\"n\":%zu,\"median\":%.0f,\"unit\":\"rows/s\"}\n", rows, f);
  std::printf("\n| path (%zu flights rows, median of %d) | rows/s | ratio to .import |\n|---|---:|---:|\n", rows, runs);
  std::printf("| shoal ETL through the stage actors (extract → validate → transform → load) | %.0f | %.2f |\n", c, c / i);
  std::printf("| shoal ETL as direct calls (run_pipeline, one thread) | %.0f | %.2f |\n", p, p / i);
  std::printf("| `sqlite3 .import` of the same rows as CSV | %.0f | 1.00 |\n", i);
  std::printf("| C++ floor: same rows, one prepared INSERT, one transaction | %.0f | %.2f |\n", f, f / i);
  std::printf("\nper step, median ms:");
  for (int k = 0; k < 4; ++k) std::printf(" %s %.0f", names[k], median(step_ms[k]));
  std::printf("\nper stage actor, median ms:");
  for (int k = 0; k < 4; ++k) std::printf(" %s %.0f", names[k], median(chain_step_ms[k]));
  std::printf("\n");
  return 0;
}
