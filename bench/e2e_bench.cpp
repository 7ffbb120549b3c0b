// End-to-end bench (issue 9): `shoal run --dataset flights-200k` against the naive design it
// replaces, measured in the same run against the same storage.
//
//   bench/run.sh e2e [--sample 3000] [--workers N] [--etl rounds|fleet] [--skip-run]
//
// naive = what the seeds do per message, sequentially: one blob PUT ({"DATA": "<payload>"} at
//         {dest}/{YYYY}/{MM}/{DD}/{id}.json, as Azure Persistor writes one message) and one table
//         insert (a row per message, as the table-tracker / ETL seeds record it), on the first
//         --sample records of flights-200k; records/s = sample ÷ wall time of the loop.
// shoal = `shoal --json run --dataset flights-200k` with its own tables and container (a config
//         written here), its end-to-end records/s taken from the summary's JSON line (first send →
//         every record loaded or quarantined; the run must verify).
// Storage: $AZURE_STORAGE_CONNECTION_STRING (bench/run.sh starts a fresh Azurite).

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "workers/dev_storage.hpp"

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace shoal;

namespace {

struct naive_result {
  std::size_t records = 0;
  double seconds = 0;
  std::size_t errors = 0;
};

naive_result run_naive(const storage::pipeline& p, const nlohmann::json& all, std::size_t sample,
                       const std::string& suffix) {
  naive_result r;
  storage::blob_client blobs(p);
  const std::string container = "naive" + suffix;
  auto table = storage::table_client::make(p, "naive" + suffix);
  if (!table || !blobs.create_container_if_not_exists(container) || !table->create_table_if_not_exists()) {
    std::fprintf(stderr, "naive: cannot create container/table\n");
    return r;
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < sample && i < all.size(); ++i) {
    const std::string payload = all[i].dump();
    const std::string id = "m" + std::to_string(i);
    // The seed's blob: one message, {"DATA": "<payload string>"}, dated folders (ingest time).
    const std::string body = nlohmann::json{{"DATA", payload}}.dump();
    const std::string name = "flights-200k/2026/11/21/" + id + ".json";
    auto put = blobs.put_blob(container, name, body);
    storage::table_entity e;
    e.partition_key = "flights-200k-20261121";
    e.row_key = id;
    e.set("blob", name).set("payload", payload).set("status", std::string("loaded"));
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

} // namespace

int main(int argc, char** argv) {
  std::size_t sample = 3000;
  std::string workers, etl, dataset = "flights-200k";
  bool skip_run = false;
  std::string shoal = fs::path(self_dir()).parent_path() / "workers/shoal";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--sample") sample = std::stoul(next());
    else if (a == "--workers") workers = next();
    else if (a == "--etl") etl = next();
    else if (a == "--dataset") dataset = next();
    else if (a == "--shoal") shoal = next();
    else if (a == "--skip-run") skip_run = true;
    else {
      std::fprintf(stderr, "usage: e2e_bench [--sample N] [--workers N] [--etl rounds|fleet] [--dataset NAME] [--shoal PATH] [--skip-run]\n");
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
  const fs::path data = shoal::workers::source_dir() / "deploy/local/node_modules/vega-datasets/data/flights-200k.json";
  std::ifstream in(data);
  if (!in) {
    std::fprintf(stderr, "e2e_bench: %s missing (deploy/setup.sh)\n", data.c_str());
    return 2;
  }
  const auto all = nlohmann::json::parse(in);
  const std::string suffix = std::to_string(::time(nullptr)) + std::to_string(::getpid());

  std::printf("naive: %zu records of flights-200k, one blob PUT + one table insert each, sequential…\n", sample);
  std::fflush(stdout);
  const auto naive = run_naive(*p, all, sample, suffix);
  const double naive_rate = naive.seconds > 0 ? naive.records / naive.seconds : 0;
  std::printf("naive: %zu records in %.1f s = %.0f records/s (%zu errors)\n", naive.records,
              naive.seconds, naive_rate, naive.errors);
  std::fflush(stdout);
  if (skip_run)
    return naive.errors ? 1 : 0;

  const fs::path dir = fs::temp_directory_path() / ("shoal-e2e-" + suffix);
  fs::create_directories(dir);
  std::ofstream(dir / "shoal.toml") << "[work]\ntable = \"e2e" << suffix << "w\"\n"
                                    << "[etl]\ncontainer = \"e2e" << suffix << "\"\nruns_table = \"e2e" << suffix << "r\"\n"
                                    << "[persistor]\ncontainer = \"e2e" << suffix << "\"\n"
                                    << "[catalog]\ntable = \"e2e" << suffix << "c\"\n"
                                    << "[fleet]\ntable = \"e2e" << suffix << "f\"\n";
  std::string cmd = "cd '" + dir.string() + "' && '" + shoal + "' --config shoal.toml --log-level warn --json run --dataset " +
                    dataset + " --db shoal.db --run-dir run";
  if (!workers.empty()) cmd += " --workers " + workers;
  if (!etl.empty()) cmd += " --etl " + etl;
  cmd += " 2>&1";
  std::printf("shoal: %s\n", cmd.c_str());
  std::fflush(stdout);
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe)
    return 1;
  std::string line, last_json;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), pipe)) {
    std::fputs(buf.data(), stdout);
    std::fflush(stdout);
    line = buf.data();
    if (!line.empty() && line[0] == '{')
      last_json = line;
  }
  const int st = ::pclose(pipe);
  if (st != 0 || last_json.empty()) {
    std::fprintf(stderr, "e2e_bench: shoal run failed (status %d); its files are in %s\n", st, dir.c_str());
    return 1;
  }
  const auto j = nlohmann::json::parse(last_json, nullptr, false);
  const double shoal_rate = j.value("end_to_end_records_per_s", 0.0);
  std::printf("\n| path | records | seconds | records/s | × naive |\n|---|---:|---:|---:|---:|\n");
  std::printf("| naive: 1 blob PUT + 1 table insert per message, sequential | %zu | %.1f | %.0f | 1.0 |\n",
              naive.records, naive.seconds, naive_rate);
  std::printf("| `shoal run --dataset %s` end to end (%s workers, etl %s) | %lld | %.1f | %.0f | **%.1f** |\n",
              dataset.c_str(), j.value("workers", nlohmann::json(0)).dump().c_str(),
              j.value("etl", std::string("?")).c_str(), static_cast<long long>(j.value("records", 0)),
              j.value("end_to_end_s", 0.0), shoal_rate, naive_rate > 0 ? shoal_rate / naive_rate : 0.0);
  std::printf("stages: send+persist %.1f s, ETL %.1f s, wall %.1f s; verified: %s\n", j.value("send_s", 0.0),
              j.value("etl_s", 0.0), j.value("wall_s", 0.0), j.value("verified", false) ? "yes" : "NO");
  fs::remove_all(dir);
  return j.value("verified", false) ? 0 : 1;
}
