// End-to-end bench (issues 9 and 14): `shoal run` on real and generated data against the naive
// design it replaces, measured in one run against the same storage.
//
//   bench/run.sh e2e [--datasets flights-2k,flights-20k,flights-200k,events-1m] [--sample 500]
//                    [--events 1000000] [--workers N] [--etl rounds|fleet] [--skip-naive]
//
// Per dataset:
// naive = what the seeds do per message, sequentially: one blob PUT ({"DATA": "<payload>"} at
//         {dest}/{YYYY}/{MM}/{DD}/{id}.json, as Azure Persistor writes one message) and one table
//         insert (a row per message, as the table-tracker / ETL seeds record it), on the first
//         --sample records of the dataset; records/s = sample ÷ wall time of the loop; 2 storage
//         requests per record (2,000 per 1,000 records).
// shoal = `shoal --json run --dataset …` with its own tables and container (a config written
//         here), its figures from the summary's JSON line: end-to-end records/s (first send →
//         every record loaded or quarantined; the run must verify), storage requests, blobs, CPU
//         seconds per process; the storage emulator's CPU seconds over the run are read from
//         /proc for the Azurite bench/run.sh started ($SHOAL_TEST_AZURITE/pid).
// events-1m = a generated NDJSON stream of --events events (~200 B each), event times spread
//         evenly over 365 days in time order (the `ts` field, the event-time field of the run),
//         loaded in generic mode.
// Storage: $AZURE_STORAGE_CONNECTION_STRING (bench/run.sh starts a fresh Azurite).

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "workers/dev_storage.hpp"
#include "workers/process_stats.hpp"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace shoal;

namespace {

struct naive_result {
  std::size_t records = 0;
  double seconds = 0;
  std::size_t errors = 0;
  double rate() const { return seconds > 0 ? static_cast<double>(records) / seconds : 0; }
};

// One blob PUT and one table insert per message, sequentially, for `payloads`.
naive_result run_naive(const storage::pipeline& p, const std::vector<std::string>& payloads,
                       const std::string& dest, const std::string& suffix) {
  naive_result r;
  storage::blob_client blobs(p);
  const std::string container = "naive" + suffix;
  auto table = storage::table_client::make(p, "naive" + suffix);
  if (!table || !blobs.create_container_if_not_exists(container) || !table->create_table_if_not_exists()) {
    std::fprintf(stderr, "naive: cannot create container/table\n");
    return r;
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    const std::string id = "m" + std::to_string(i);
    // The seed's blob: one message, {"DATA": "<payload string>"}, dated folders (ingest time).
    const std::string body = nlohmann::json{{"DATA", payloads[i]}}.dump();
    const std::string name = dest + "/2026/11/21/" + id + ".json";
    auto put = blobs.put_blob(container, name, body);
    storage::table_entity e;
    e.partition_key = dest + "-20261121";
    e.row_key = id;
    e.set("blob", name).set("payload", payloads[i]).set("status", std::string("loaded"));
    auto ins = table->insert(e);
    if (!put || !ins)
      ++r.errors;
    ++r.records;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (void)blobs.delete_container_if_exists(container);
  (void)table->delete_table();
  return r;
}

std::string self_dir() {
  std::array<char, 4096> buf{};
  const auto n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  return n > 0 ? fs::path(std::string(buf.data(), static_cast<std::size_t>(n))).parent_path().string() : ".";
}

// The generated stream: `n` events in time order, one every 365 days / n, ~200 bytes each.
void write_events(const fs::path& file, std::size_t n) {
  std::ofstream out(file, std::ios::binary);
  const std::int64_t t0 = 1'735'689'600'000; // 2025-01-01T00:00:00Z
  const std::int64_t span = 365LL * 86'400'000;
  char line[400];
  const std::string note(64, 'x');
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t t = t0 + static_cast<std::int64_t>(static_cast<double>(span) * static_cast<double>(i) / static_cast<double>(n));
    const std::time_t secs = static_cast<std::time_t>(t / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char ts[64];
    std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(t % 1000));
    const int len = std::snprintf(line, sizeof line,
                                  "{\"id\":%zu,\"ts\":\"%s\",\"sensor\":\"s-%04zu\",\"site\":\"plant-%zu\","
                                  "\"kind\":\"reading\",\"value\":%.3f,\"unit\":\"C\",\"note\":\"%s\"}\n",
                                  i, ts, i % 4096, i % 13, static_cast<double>(i % 10'000) / 7.0, note.c_str());
    out.write(line, len);
  }
}

// The first `n` payloads of a dataset file (JSON array or NDJSON), as `shoal send` sends them.
std::vector<std::string> sample_payloads(const fs::path& file, std::size_t n) {
  std::vector<std::string> out;
  std::ifstream in(file, std::ios::binary);
  if (in.peek() == '[') {
    const auto all = nlohmann::json::parse(in);
    for (std::size_t i = 0; i < n && i < all.size(); ++i)
      out.push_back(all[i].dump());
    return out;
  }
  std::string line;
  while (out.size() < n && std::getline(in, line))
    if (!line.empty())
      out.push_back(line);
  return out;
}

struct shoal_result {
  nlohmann::json j;                 // the summary's JSON line
  std::optional<double> emulator_s; // Azurite CPU seconds over the run
  bool ok = false;
};

shoal_result run_shoal(const std::string& shoal, const std::string& dataset, const std::string& event_field,
                       const std::string& workers, const std::string& etl, const std::string& suffix,
                       std::optional<pid_t> azurite) {
  shoal_result out;
  const fs::path dir = fs::temp_directory_path() / ("shoal-e2e-" + suffix);
  fs::create_directories(dir);
  std::ofstream(dir / "shoal.toml") << "[work]\ntable = \"e2e" << suffix << "w\"\n"
                                    << "[etl]\ncontainer = \"e2e" << suffix << "\"\nruns_table = \"e2e" << suffix << "r\"\n"
                                    << "[persistor]\ncontainer = \"e2e" << suffix << "\"\n"
                                    << "[catalog]\ntable = \"e2e" << suffix << "c\"\n"
                                    << "[fleet]\ntable = \"e2e" << suffix << "f\"\n";
  std::string cmd = "cd '" + dir.string() + "' && '" + shoal + "' --config shoal.toml --log-level warn --json run --dataset '" +
                    dataset + "' --db shoal.db --run-dir run";
  if (!event_field.empty())
    cmd += " --event-time-field " + event_field;
  if (!workers.empty())
    cmd += " --workers " + workers;
  if (!etl.empty())
    cmd += " --etl " + etl;
  cmd += " 2>&1";
  std::printf("shoal: %s\n", cmd.c_str());
  std::fflush(stdout);
  const auto cpu0 = azurite ? workers::process_cpu_seconds(*azurite) : std::nullopt;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe)
    return out;
  std::string last_json;
  std::array<char, 8192> buf{};
  while (std::fgets(buf.data(), buf.size(), pipe)) {
    std::fputs(buf.data(), stdout);
    std::fflush(stdout);
    if (buf[0] == '{')
      last_json = buf.data();
  }
  const int st = ::pclose(pipe);
  if (cpu0)
    if (auto cpu1 = workers::process_cpu_seconds(*azurite))
      out.emulator_s = *cpu1 - *cpu0;
  if (st != 0 || last_json.empty()) {
    std::fprintf(stderr, "e2e_bench: shoal run failed (status %d); its files are in %s\n", st, dir.c_str());
    return out;
  }
  out.j = nlohmann::json::parse(last_json, nullptr, false);
  out.ok = !out.j.is_discarded() && out.j.value("verified", false);
  if (out.ok)
    fs::remove_all(dir);
  return out;
}

double num(const nlohmann::json& j, const char* a, const char* b = nullptr) {
  const nlohmann::json* v = &j;
  for (const char* k : {a, b}) {
    if (!k)
      break;
    if (!v->is_object() || !v->contains(k))
      return 0;
    v = &(*v)[k];
  }
  return v->is_number() ? v->get<double>() : 0;
}

} // namespace

int main(int argc, char** argv) {
  std::size_t sample = 500, events = 1'000'000;
  std::string workers, etl, datasets = "flights-2k,flights-20k,flights-200k,events-1m";
  bool skip_naive = false;
  std::string shoal = fs::path(self_dir()).parent_path() / "workers/shoal";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--sample") sample = std::stoul(next());
    else if (a == "--events") events = std::stoul(next());
    else if (a == "--workers") workers = next();
    else if (a == "--etl") etl = next();
    else if (a == "--datasets" || a == "--dataset") datasets = next();
    else if (a == "--shoal") shoal = next();
    else if (a == "--skip-naive") skip_naive = true;
    else {
      std::fprintf(stderr, "usage: e2e_bench [--datasets a,b,…] [--sample N] [--events N] [--workers N] "
                           "[--etl rounds|fleet] [--shoal PATH] [--skip-naive]\n");
      return 2;
    }
  }
  const char* cs = std::getenv("AZURE_STORAGE_CONNECTION_STRING");
  if (!cs || !*cs) {
    std::fprintf(stderr, "e2e_bench: set AZURE_STORAGE_CONNECTION_STRING (bench/run.sh e2e does)\n");
    return 2;
  }
  auto account = storage::parse_connection_string(cs);
  if (!account) {
    std::fprintf(stderr, "e2e_bench: bad connection string\n");
    return 2;
  }
  auto p = storage::pipeline::make(*account);
  if (!p) {
    std::fprintf(stderr, "e2e_bench: pipeline\n");
    return 2;
  }
  std::optional<pid_t> azurite;
  if (const char* st = std::getenv("SHOAL_TEST_AZURITE"); st && *st) {
    std::ifstream in(fs::path(st) / "pid");
    pid_t pid = 0;
    if (in >> pid && pid > 0)
      azurite = pid;
  }
  const fs::path data = workers::source_dir() / "deploy/local/node_modules/vega-datasets/data";
  const std::string suffix = std::to_string(::time(nullptr)) + std::to_string(::getpid());
  const fs::path work = fs::temp_directory_path() / ("shoal-e2e-data-" + suffix);
  fs::create_directories(work);

  struct row {
    std::string name;
    naive_result naive;
    shoal_result shoal;
  };
  std::vector<row> rows;
  std::stringstream list(datasets);
  std::string name;
  bool all_ok = true;
  while (std::getline(list, name, ',')) {
    row r;
    r.name = name;
    std::string dataset = name, event_field, dest = name;
    fs::path file;
    if (name == "events-1m") {
      file = work / "events.ndjson";
      std::printf("events: writing %zu events over 365 days to %s…\n", events, file.c_str());
      std::fflush(stdout);
      write_events(file, events);
      dataset = file.string();
      event_field = "ts";
      dest = "events";
    } else {
      file = data / (name + ".json");
      dest = name.starts_with("flights-200k") ? "flights-200k" : "flights";
    }
    if (!skip_naive) {
      const auto payloads = sample_payloads(file, sample);
      std::printf("naive: %zu records of %s, one blob PUT + one table insert each, sequential…\n", payloads.size(),
                  name.c_str());
      std::fflush(stdout);
      r.naive = run_naive(*p, payloads, dest, suffix + std::to_string(rows.size()));
      std::printf("naive: %zu records in %.1f s = %.0f records/s (%zu errors)\n", r.naive.records, r.naive.seconds,
                  r.naive.rate(), r.naive.errors);
      std::fflush(stdout);
    }
    r.shoal = run_shoal(shoal, dataset, event_field, workers, etl, suffix + "d" + std::to_string(rows.size()), azurite);
    all_ok = all_ok && r.shoal.ok;
    rows.push_back(std::move(r));
  }
  fs::remove_all(work);

  std::printf("\n| dataset | records | blobs | end to end s | records/s | × naive (records/s) | storage requests / 1,000 records "
              "(naive: 2,000) | requests / blob | CPU s: send · persistor · workers · supervisor · storage emulator | verified |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
  for (const auto& r : rows) {
    const auto& j = r.shoal.j;
    if (j.is_discarded() || !j.is_object()) {
      std::printf("| %s | – | – | – | – | – | – | – | – | **failed** |\n", r.name.c_str());
      continue;
    }
    const double rate = num(j, "end_to_end_records_per_s");
    char emu[32] = "–";
    if (r.shoal.emulator_s)
      std::snprintf(emu, sizeof emu, "%.1f", *r.shoal.emulator_s);
    std::printf("| %s | %lld | %lld | %.1f | %.0f | %.0f× (%.0f) | %.1f | %.1f | %.1f · %.1f · %.1f · %.1f · %s | %s |\n",
                r.name.c_str(), static_cast<long long>(num(j, "records")), static_cast<long long>(num(j, "blobs")),
                num(j, "end_to_end_s"), rate, r.naive.rate() > 0 ? rate / r.naive.rate() : 0.0, r.naive.rate(),
                num(j, "storage_requests", "per_1000_records"), num(j, "storage_requests", "per_blob"),
                num(j, "cpu_s", "send"), num(j, "cpu_s", "persistor"), num(j, "cpu_s", "workers"),
                num(j, "cpu_s", "supervisor"), emu, j.value("verified", false) ? "yes" : "NO");
  }
  for (const auto& r : rows)
    if (!r.shoal.j.is_discarded() && r.shoal.j.is_object())
      std::printf("%s: %s\n", r.name.c_str(), r.shoal.j.dump().c_str());
  return all_ok ? 0 : 1;
}
