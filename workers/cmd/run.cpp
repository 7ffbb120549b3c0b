// `shoal run`: the main job on one machine. It makes sure storage is there (starting the pinned
// Azurite for UseDevelopmentStorage=true when nothing listens), starts a persistor and a
// supervisor whose fleet of workers runs the ETL job, sends a real dataset with `shoal send`,
// waits until the ETL queue has nothing pending or claimed and every record is loaded or
// quarantined, stops the fleet, and prints a summary that verifies itself: records read = rows
// loaded + already loaded (re-sent) + quarantined, no duplicate message ids.
//
// Every stage is a real `shoal` process talking over ZeroMQ and Azure Storage, as in production.
// While it runs, one display (run_progress.hpp) shows sent/persisted (from send's progress
// line), blobs by ETL state (work_table::counts of the ETL queue) and loaded/quarantined (the
// SQLite ledger), with rates. `--etl rounds` replaces the fleet by rounds of N parallel
// `shoal etl run --once` processes after the send (the pre-fleet way; kept for comparison).

#include "workers/child_process.hpp"
#include "workers/cmd/cli.hpp"
#include "workers/cmd/run_progress.hpp"
#include "workers/dev_storage.hpp"
#include "workers/persistor/json_input.hpp"
#include "workers/persistor/format.hpp"
#include "workers/process_stats.hpp"
#include "workers/claim/work_table.hpp"

#include "storage/blob_client.hpp"
#include "storage/table_client.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
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
using namespace run_detail;

struct run_args {
  std::string dataset = "flights-20k";
  std::string db = "./shoal.db";
  unsigned workers = 0; // 0 = 2 per core
  std::string run_dir = "./shoal-run";
  std::string event_time_field;
  std::string partition;     // day | hour | month; "" = the dataset's ([persistor] partition)
  std::string etl = "fleet"; // fleet | rounds
  double stall_timeout_s = 300;
  std::string emulator_data = "auto"; // auto | memory | disk: where a started Azurite keeps its data
};

// Inputs up to this size keep the storage emulator's data in memory (`--emulator-data auto`):
// the blobs of a run take about the input's size again, well inside Azurite's extent cap (half
// the machine's memory) on any machine that runs the fleet.
constexpr std::uintmax_t emulator_memory_input_max_bytes = 1ull << 30; // 1 GiB

// A dataset to send: the file, its dest (first blob-name segment), its event-time field and
// the folder of dataset definitions that maps it to SQL (empty = the generic mapping).
struct dataset_spec {
  fs::path file;
  std::string dest;
  std::string event_time_field;
  std::string partition; // "" = [persistor] partition (day by default)
  fs::path datasets_dir;
  std::string table = "shoal_etl_records";
};

std::optional<dataset_spec> resolve_dataset(const run_args& a) {
  const fs::path data = workers::source_dir() / "deploy/local/node_modules/vega-datasets/data";
  const fs::path shipped = workers::source_dir() / "deploy/datasets";
  // The dated flight files share one schema (date, delay, distance, origin, destination) and
  // the shipped `flights` dataset; flights-200k has its own (delay, distance, time: no date,
  // so its event time is the ingest time); seattle-weather is a CSV with a date.
  static const std::map<std::string, std::string> flights{
      {"flights-2k", "flights-2k.json"},
      {"flights-5k", "flights-5k.json"},
      {"flights-10k", "flights-10k.json"},
      {"flights-20k", "flights-20k.json"}};
  dataset_spec d;
  if (a.dataset == "flights-200k") {
    d.file = data / "flights-200k.json";
    d.dest = "flights-200k";
    d.datasets_dir = shipped;
    d.table = "flights_200k";
  } else if (auto it = flights.find(a.dataset); it != flights.end()) {
    d.file = data / it->second;
    d.dest = "flights";
    d.event_time_field = "date";
    d.datasets_dir = shipped;
    d.table = "flights";
  } else if (a.dataset == "seattle-weather") {
    d.file = data / "seattle-weather.csv";
    d.dest = "seattle-weather";
    d.event_time_field = "date";
    d.partition = "month"; // one record per day: by day every blob would hold one record
    d.datasets_dir = shipped;
    d.table = "seattle_weather";
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
  if (!a.partition.empty())
    d.partition = a.partition;
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
  in.clear();
  in.seekg(0);
  if (first == '[') {
    const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (!workers::is_json_array(text))
      return std::nullopt;
    workers::json_array_cursor c(text);
    while (c.next()) {
    }
    return c.count();
  }
  const bool csv = file.extension() == ".csv";
  std::size_t n = 0;
  std::string line;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos)
      ++n;
  return csv && n > 0 ? n - 1 : n;
}

std::optional<std::int64_t> scalar(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    sqlite3_finalize(st);
    return std::nullopt;
  }
  std::optional<std::int64_t> v;
  if (sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Ctrl-C / SIGTERM: stop waiting, stop the children, report what was reached.
std::atomic<bool> g_interrupted{false};
extern "C" void on_run_signal(int) { g_interrupted = true; }

// Whether the persistor's log (its stdout and stderr) has its "listening <endpoint>" line.
bool persistor_listening(const fs::path& log) {
  std::ifstream in(log, std::ios::binary);
  const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s.starts_with("listening ") || s.find("\nlistening ") != std::string::npos;
}

// The last lines of a child's log, for a failure message.
std::string log_tail(const fs::path& log, std::size_t max_bytes = 1500) {
  std::ifstream in(log, std::ios::binary);
  if (!in)
    return {};
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = size > static_cast<std::streamoff>(max_bytes)
                                  ? size - static_cast<std::streamoff>(max_bytes)
                                  : 0;
  in.seekg(from);
  std::string s(static_cast<std::size_t>(size - from), '\0');
  in.read(s.data(), static_cast<std::streamsize>(s.size()));
  for (char& c : s)
    if (c == '\r')
      c = '\n';
  return s;
}

// Reads the ETL queue of the work table: counts at start, then what this run added.
class queue_watch {
public:
  queue_watch(workers::work_table t, std::string queue) : table_(std::move(t)), queue_(std::move(queue)) {}
  // Counts at start (the table may hold earlier runs' records). Errors: storage.
  workers::result<void> baseline() {
    if (auto r = table_.create_if_missing(); !r)
      return std::unexpected(r.error());
    auto c = table_.counts(queue_);
    if (!c)
      return std::unexpected(c.error());
    base_ = *c;
    return {};
  }
  queue_view read() {
    queue_view v;
    auto c = table_.counts(queue_);
    if (!c)
      return last_;
    auto get = [](const workers::record_counts& rc, workers::record_status s) {
      auto it = rc.by_status.find(s);
      return it == rc.by_status.end() ? std::size_t{0} : it->second;
    };
    using rs = workers::record_status;
    v.ok = true;
    v.registered = c->total >= base_.total ? c->total - base_.total : 0;
    v.pending = get(*c, rs::pending);
    v.claimed = get(*c, rs::claimed);
    v.done = get(*c, rs::done) - std::min(get(*c, rs::done), get(base_, rs::done));
    v.dead = get(*c, rs::dead) - std::min(get(*c, rs::dead), get(base_, rs::dead));
    last_ = v;
    last_.ok = true;
    return v;
  }

private:
  workers::work_table table_;
  std::string queue_;
  workers::record_counts base_;
  queue_view last_;
};

// -- what the run cost ---------------------------------------------------------------------------

// The storage requests and CPU seconds of the run's processes (their stats files), and the
// observer's own (this process: the display's queue reads).
struct run_cost {
  std::uint64_t requests = 0;                        // every child's, retries included
  std::map<std::string, std::uint64_t> by_resource;  // "shoalwork", "shoal (blob)", …
  std::map<std::string, std::uint64_t> by_op;        // "table batch", "blob put", …
  double per_blob = 0, per_1000_records = 0;
  std::map<std::string, std::pair<double, int>> cpu; // command → (CPU s, processes)
  std::uint64_t observer_requests = 0;               // shoal run's own (not in `requests`)
  double observer_cpu = 0;
};

run_cost run_cost_of(const std::vector<workers::process_stats>& children, std::int64_t blobs, std::size_t records) {
  run_cost c;
  for (const auto& p : children) {
    auto& [cpu, n] = c.cpu[p.command];
    cpu += p.cpu_s;
    n += 1;
    for (const auto& r : p.requests) {
      c.requests += r.count;
      const std::string svc(storage::to_string(r.svc));
      c.by_resource[r.resource + (r.svc == storage::service::table ? "" : " (" + svc + ")")] += r.count;
      c.by_op[svc + " " + r.op] += r.count;
    }
  }
  if (blobs > 0)
    c.per_blob = static_cast<double>(c.requests) / static_cast<double>(blobs);
  if (records > 0)
    c.per_1000_records = static_cast<double>(c.requests) * 1000.0 / static_cast<double>(records);
  const auto self = workers::current_process_stats("run");
  for (const auto& r : self.requests)
    c.observer_requests += r.count;
  c.observer_cpu = self.cpu_s;
  return c;
}

// "a 12 · b 3 · …", largest first.
std::string ranked(const std::map<std::string, std::uint64_t>& m) {
  std::vector<std::pair<std::uint64_t, std::string>> v;
  for (const auto& [k, n] : m)
    v.emplace_back(n, k);
  std::sort(v.begin(), v.end(), std::greater<>());
  std::string out;
  for (const auto& [n, k] : v)
    out += (out.empty() ? "" : " · ") + k + " " + grouped(static_cast<std::int64_t>(n));
  return out;
}

void print_cost(const run_cost& c, std::optional<double> emulator_cpu) {
  std::printf("  storage requests        %s (%.1f per blob, %.1f per 1,000 records; the display's own "
              "reads: %s more)\n",
              grouped(static_cast<std::int64_t>(c.requests)).c_str(), c.per_blob, c.per_1000_records,
              grouped(static_cast<std::int64_t>(c.observer_requests)).c_str());
  std::printf("    by table/container    %s\n", ranked(c.by_resource).c_str());
  std::printf("    by operation          %s\n", ranked(c.by_op).c_str());
  std::string cpu;
  for (const char* cmd : {"send", "persistor", "worker", "supervisor", "etl"}) {
    auto it = c.cpu.find(cmd);
    if (it == c.cpu.end())
      continue;
    char buf[96];
    const char* name = std::string_view(cmd) == "worker" ? "workers" : cmd;
    if (it->second.second > 1)
      std::snprintf(buf, sizeof buf, "%s %.1f (%d processes)", name, it->second.first, it->second.second);
    else
      std::snprintf(buf, sizeof buf, "%s %.1f", name, it->second.first);
    cpu += (cpu.empty() ? "" : " · ") + std::string(buf);
  }
  char tail[96];
  if (emulator_cpu) {
    std::snprintf(tail, sizeof tail, " · storage emulator %.1f", *emulator_cpu);
    cpu += tail;
  }
  std::snprintf(tail, sizeof tail, " · shoal run %.1f", c.observer_cpu);
  cpu += tail;
  std::printf("  CPU seconds             %s\n", cpu.c_str());
}

nlohmann::json cost_json(const run_cost& c) {
  return {{"total", c.requests},
          {"per_blob", c.per_blob},
          {"per_1000_records", c.per_1000_records},
          {"by_resource", c.by_resource},
          {"by_op", c.by_op},
          {"observer", c.observer_requests}};
}

nlohmann::json cpu_json(const run_cost& c, std::optional<double> emulator_cpu) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [cmd, v] : c.cpu)
    j[cmd == "worker" ? "workers" : cmd] = v.first;
  j["processes"] = nlohmann::json::object();
  for (const auto& [cmd, v] : c.cpu)
    j["processes"][cmd == "worker" ? "workers" : cmd] = v.second;
  if (emulator_cpu)
    j["storage_emulator"] = *emulator_cpu;
  j["run"] = c.observer_cpu;
  return j;
}

int run_main(const global_options& g, const run_args& a) {
  const auto t_start = clock_type::now();
  auto cfg = load(g);
  if (!cfg)
    return 2;
  init_logging(*cfg);
  if (!a.partition.empty() && !workers::persistor::parse_partition_depth(a.partition)) {
    std::fprintf(stderr, "shoal run: --partition must be day, hour or month\n");
    return 2;
  }
  if (a.etl != "fleet" && a.etl != "rounds") {
    std::fprintf(stderr, "shoal run: --etl must be fleet or rounds\n");
    return 2;
  }
  if (a.emulator_data != "auto" && a.emulator_data != "memory" && a.emulator_data != "disk") {
    std::fprintf(stderr, "shoal run: --emulator-data must be auto, memory or disk\n");
    return 2;
  }
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
  const fs::path logs = run_dir / "logs";
  fs::create_directories(logs, ec);
  if (ec) {
    std::fprintf(stderr, "shoal run: cannot create %s: %s\n", run_dir.c_str(),
                 ec.message().c_str());
    return 2;
  }
  const fs::path db = fs::absolute(a.db);

  std::printf("shoal run: %s (%s records) → dest '%s' → %s (%s), %u ETL workers%s\n",
              ds->file.filename().c_str(), grouped(static_cast<std::int64_t>(*records_in)).c_str(),
              ds->dest.c_str(), db.c_str(), ds->table.c_str(), workers,
              a.etl == "rounds" ? " in `etl run --once` rounds" : " under a supervisor");
  // The emulator this run starts lives exactly as long as the run: its data in memory saves
  // it the extent files, an fsync per blob and the periodic re-serialisation of its table
  // database (events-1m: about half the run's wall time). A re-run loads nothing twice either
  // way (the SQL ledger decides); `disk` keeps run-dir/azurite for a look afterwards.
  const bool emulator_in_memory =
      a.emulator_data == "memory" ||
      (a.emulator_data == "auto" && fs::file_size(ds->file, ec) <= emulator_memory_input_max_bytes && !ec);
  auto storage = workers::ensure_storage(cfg->storage.connection_string, run_dir / "azurite", emulator_in_memory);
  if (!storage) {
    std::fprintf(stderr, "shoal run: storage: %s\n", storage.error().describe().c_str());
    return 1;
  }
  // What the storage emulator we started spends (CPU seconds from here on).
  std::optional<pid_t> emulator;
  std::optional<double> emulator_cpu0;
  if (storage->started) {
    emulator = storage->started->pid();
    emulator_cpu0 = workers::process_cpu_seconds(*emulator);
  }
  // Every `shoal` process of this run writes its CPU time and storage requests here at exit.
  const fs::path stats_dir = run_dir / "stats";
  fs::remove_all(stats_dir, ec);
  fs::create_directories(stats_dir, ec);
  std::printf("storage: %s%s; logs in %s\n", storage_summary(*cfg).c_str(),
              storage->started ? " (Azurite started by shoal run)" : "", logs.c_str());
  std::fflush(stdout);
  cfg->storage.connection_string = storage->connection_string;

  // The ETL queue, watched from here.
  auto pipeline = make_pipeline(*cfg, "run");
  if (!pipeline)
    return 1;
  auto wt = open_work_table(*cfg, *pipeline, "run");
  if (!wt)
    return 1;
  queue_watch queue(std::move(*wt), cfg->etl.queue);
  if (auto r = queue.baseline(); !r) {
    std::fprintf(stderr, "shoal run: work table %s: %s\n", cfg->work.table.c_str(),
                 r.error().describe().c_str());
    return 1;
  }

  // Common arguments and environment of the child processes: same config and storage as this
  // process; the ETL settings go through SHOAL_* variables so the fleet's workers get them too.
  // The connection string travels only in the environment: argv is readable by every local user.
  const std::string self = workers::self_executable().string();
  std::vector<std::string> common{self};
  if (!g.config_path.empty())
    common.insert(common.end(), {"--config", fs::absolute(g.config_path).string()});
  if (!g.log_level.empty())
    common.insert(common.end(), {"--log-level", g.log_level});
  std::vector<std::pair<std::string, std::string>> env{
      {"SHOAL_STORAGE_CONNECTION_STRING", storage->connection_string},
      {"SHOAL_STORAGE_CONNECTION_STRING_FILE", ""},
      {"AZURE_STORAGE_CONNECTION_STRING", storage->connection_string},
      {"SHOAL_ETL_SQLITE_PATH", db.string()},
      {"SHOAL_ETL_DATASETS_DIR", ds->datasets_dir.string()},
      // An ETL blob mostly waits on storage (claim, blob GET, run log): 4 at once per worker
      // process keeps the 2-per-core fleet busy without more processes. (The fallback table
      // poll keeps its defaults: persist.committed → work.available wakes the workers.)
      {"SHOAL_WORKER_CONCURRENCY", "4"},
      {workers::stats_dir_env, stats_dir.string()}};
  if (!g.config_path.empty())
    env.emplace_back("SHOAL_CONFIG", fs::absolute(g.config_path).string());
  const std::string persistor_name = "run" + std::to_string(::time(nullptr)) + "p" +
                                     std::to_string(::getpid());
  const std::string endpoint = "ipc://" + (run_dir / ("persistor-" + persistor_name)).string();
  // The persistor announces each committed blob here; the supervisor passes it on to the worker
  // owning the blob's shard as work.available, so the ETL starts within milliseconds.
  env.emplace_back("SHOAL_PERSISTOR_COMMITTED_ENDPOINT",
                   "ipc://" + (run_dir / ("committed-" + persistor_name)).string());

  struct sigaction sa {};
  sa.sa_handler = on_run_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);

  // 1. persistor
  auto pargv = common;
  pargv.insert(pargv.end(), {"persistor", "--mode", "push", "--endpoint", endpoint, "--name",
                             persistor_name});
  if (!ds->event_time_field.empty())
    pargv.insert(pargv.end(), {"--event-time-field", ds->event_time_field});
  if (!ds->partition.empty())
    pargv.insert(pargv.end(), {"--partition", ds->partition});
  const auto t_persistor_spawn = clock_type::now();
  auto persistor = workers::child_process::spawn({pargv, env, logs / "persistor.log", true});
  if (!persistor) {
    std::fprintf(stderr, "shoal run: persistor: %s\n", persistor.error().describe().c_str());
    return 1;
  }

  // 2. the fleet: a supervisor with N workers running the ETL job
  std::optional<workers::child_process> supervisor;
  if (a.etl == "fleet") {
    auto sv = common;
    sv.insert(sv.end(), {"supervisor", "--workers", std::to_string(workers), "--job", "etl",
                         "--queue", cfg->etl.queue, "--endpoint",
                         "ipc://" + (run_dir / ("fleet-" + persistor_name)).string()});
    auto c = workers::child_process::spawn({sv, env, logs / "supervisor.log", true});
    if (!c) {
      std::fprintf(stderr, "shoal run: supervisor: %s\n", c.error().describe().c_str());
      return 1;
    }
    supervisor = std::move(*c);
  }

  // 3. send, once the persistor listens. The stage times below are then those of a running
  // pipeline, as a producer meets it; the persistor's start-up (its storage set-up beside a
  // cold emulator and the fleet's own start) is in the wall time.
  const auto persistor_deadline_at_start = clock_type::now() + std::chrono::seconds(60);
  while (!persistor_listening(logs / "persistor.log")) {
    if (g_interrupted) {
      std::fprintf(stderr, "shoal run: interrupted while the persistor was starting\n");
      return 130;
    }
    if (auto st = persistor->wait(std::chrono::milliseconds(0))) {
      std::fprintf(stderr, "shoal run: the persistor exited %d before it listened:\n%s\n", *st,
                   log_tail(logs / "persistor.log").c_str());
      return 1;
    }
    if (clock_type::now() > persistor_deadline_at_start) {
      std::fprintf(stderr, "shoal run: the persistor did not listen within 60 s:\n%s\n",
                   log_tail(logs / "persistor.log").c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto t_send = clock_type::now();
  auto sargv = common;
  sargv.insert(sargv.end(), {"send", ds->file.string(), "--dest", ds->dest, "--endpoint",
                             endpoint, "--progress",
                             // The persistor is ours and watched: re-sending after 10 s only
                             // doubles its work when it is slow (a loaded machine), never helps.
                             "--ack-timeout-ms", "60000"});
  if (!ds->event_time_field.empty())
    sargv.insert(sargv.end(), {"--event-time-field", ds->event_time_field});
  const fs::path send_log = logs / "send.log";
  fs::remove(send_log, ec);
  auto sender = workers::child_process::spawn({sargv, env, send_log, true});
  if (!sender) {
    std::fprintf(stderr, "shoal run: send: %s\n", sender.error().describe().c_str());
    return 1;
  }

  // 4. watch until every record is loaded or quarantined
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> ledger_db(nullptr, &sqlite3_close);
  auto open_ledger = [&] {
    if (ledger_db)
      return;
    if (!fs::exists(db, ec))
      return;
    sqlite3* raw = nullptr;
    if (sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      sqlite3_close(raw);
      return;
    }
    sqlite3_busy_timeout(raw, 5'000);
    ledger_db.reset(raw);
  };
  progress_display display(stdout, *records_in);
  rate_window rates;
  snapshot snap;
  std::optional<int> send_status, persistor_status;
  std::optional<clock_type::time_point> t_send_done, t_first_blob, t_last_load, t_all;
  std::int64_t last_accounted = -1;
  std::size_t last_acked = 0;
  bool send_just_done = false;
  clock_type::time_point persistor_deadline{};
  std::string persistor_note;
  auto last_change = clock_type::now();
  clock_type::time_point idle_since{}; // send done, queue empty, records missing; {} = not idle
  std::string failure;
  // rounds mode
  std::vector<workers::child_process> round_procs;
  int rounds = 0;
  auto next_draw = clock_type::now();
  auto next_close_look = clock_type::now();
  const auto draw_every = display.tty() ? std::chrono::milliseconds(500)
                                        : std::chrono::milliseconds(2000);
  while (true) {
    if (g_interrupted) {
      failure = "interrupted";
      break;
    }
    if (!send_status) {
      send_status = sender->wait(std::chrono::milliseconds(0));
      if (send_status) {
        t_send_done = clock_type::now();
        send_just_done = true;
        if (*send_status != 0) {
          failure = "shoal send exited " + std::to_string(*send_status) + ":\n" + log_tail(send_log);
          break;
        }
        // Every record is acked, so committed and registered: flush and stop the persistor
        // (watched below without blocking the display).
        persistor->signal(SIGTERM);
        persistor_deadline = clock_type::now() + std::chrono::seconds(60);
      }
    }
    if (!persistor_status) {
      if (auto st = persistor->wait(std::chrono::milliseconds(0))) {
        persistor_status = st;
        if (!send_status) {
          failure = "persistor exited " + std::to_string(*st) +
                    " while records were being sent:\n" + log_tail(logs / "persistor.log");
          break;
        }
        if (*st != 0) // every record was acked (committed); the data check decides
          persistor_note = "persistor exited " + std::to_string(*st) + " after SIGTERM: " +
                           log_tail(logs / "persistor.log", 300);
      } else if (send_status && clock_type::now() > persistor_deadline) {
        persistor_status = persistor->terminate(std::chrono::seconds(1));
        persistor_note = "persistor did not exit within 60 s of SIGTERM; killed";
      }
    }
    if (supervisor)
      if (auto st = supervisor->wait(std::chrono::milliseconds(0))) {
        failure = "supervisor exited " + std::to_string(*st) + " before the ETL finished:\n" +
                  log_tail(logs / "supervisor.log");
        supervisor.reset();
        break;
      }
    // rounds mode: after the send, N `etl run --once` processes per round.
    if (a.etl == "rounds" && send_status && round_procs.empty() && !t_all) {
      if (rounds >= 5) {
        failure = "5 ETL rounds did not load every record";
        break;
      }
      ++rounds;
      if (!t_first_blob)
        t_first_blob = clock_type::now(); // rounds: the ETL stage starts with the first round
      auto eargv = common;
      eargv.insert(eargv.end(), {"etl", "--sqlite", db.string()});
      if (!ds->datasets_dir.empty())
        eargv.insert(eargv.end(), {"--datasets", ds->datasets_dir.string()});
      eargv.insert(eargv.end(), {"run", "--once"});
      for (unsigned i = 0; i < workers; ++i) {
        auto argv = eargv;
        argv.insert(argv.end(), {"--owner", persistor_name + "-etl" + std::to_string(i)});
        auto c = workers::child_process::spawn(
            {argv, env, logs / ("etl-" + std::to_string(i) + ".log"), true});
        if (!c) {
          failure = "etl: " + c.error().describe();
          break;
        }
        round_procs.push_back(std::move(*c));
      }
      if (!failure.empty())
        break;
    }
    bool round_finished = false;
    if (!round_procs.empty()) {
      bool all = true;
      for (auto& c : round_procs)
        all = c.wait(std::chrono::milliseconds(0)).has_value() && all;
      if (all) {
        round_procs.clear();
        round_finished = true;
      }
    }

    const auto now = clock_type::now();
    bool tick = now >= next_draw || round_finished || send_just_done;
    send_just_done = false;
    if (!tick) {
      // Between the display's ticks (every 2 s when not on a terminal) the stage boundaries
      // are still timed to ~0.1 s instead of to the next tick: the local ledger says when the
      // last record is loaded (the tick that confirms the queue is closed then comes at once),
      // and the first blob is committed and registered when `send` reports its first ack (its
      // progress line, every 250 ms): the persistor acks a record only then.
      // The queue (a storage read) is looked at once the ledger is complete, at most every
      // 200 ms: completions follow the SQL commit by a few ms.
      open_ledger();
      if (send_status && ledger_db && now >= next_close_look)
        if (auto l = read_ledger(ledger_db.get(), persistor_name);
            l && l->accounted() >= static_cast<std::int64_t>(*records_in)) {
          next_close_look = now + std::chrono::milliseconds(200);
          const auto q = queue.read();
          tick = q.ok && q.pending == 0 && q.claimed == 0;
        }
      if (!tick && a.etl == "fleet" && !t_first_blob)
        if (auto p = read_send_progress(send_log); p && p->acked > 0)
          t_first_blob = now;
    }
    if (!tick) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    next_draw = now + draw_every;
    snap.t_s = seconds_between(t_send, now);
    if (auto p = read_send_progress(send_log))
      snap.send = p;
    snap.send_done = send_status.has_value();
    if (snap.send_done && snap.send)
      snap.send->acked = std::max(snap.send->acked, snap.send->read);
    snap.queue = queue.read();
    open_ledger();
    if (ledger_db)
      if (auto l = read_ledger(ledger_db.get(), persistor_name))
        snap.ledger = *l;
    const std::int64_t accounted = snap.ledger.accounted();
    std::tie(snap.send_rate, snap.etl_rate) =
        rates.add(snap.t_s, snap.send ? static_cast<double>(snap.send->acked) : 0.0,
                  static_cast<double>(accounted));
    if (a.etl == "fleet" && !t_first_blob && (snap.queue.registered > 0 || snap.ledger.blobs > 0))
      t_first_blob = now;
    const std::size_t acked_now = snap.send ? snap.send->acked : 0;
    if (accounted != last_accounted) {
      if (last_accounted >= 0 || accounted > 0)
        t_last_load = now;
      last_accounted = accounted;
      last_change = now;
    }
    if (acked_now != last_acked) {
      last_acked = acked_now;
      last_change = now;
    }
    display.draw(snap);
    const bool queue_open = !snap.queue.ok || snap.queue.pending > 0 || snap.queue.claimed > 0;
    if (send_status && accounted >= static_cast<std::int64_t>(*records_in) && !queue_open &&
        round_procs.empty()) {
      t_all = now;
      break;
    }
    if (send_status && persistor_status && !queue_open && round_procs.empty()) {
      // Nothing left to run, yet records are missing: give the ledger a moment, then stop.
      if (idle_since == clock_type::time_point{})
        idle_since = now;
      if (seconds_between(idle_since, now) > (a.etl == "rounds" ? 0.0 : 5.0)) {
        if (a.etl == "rounds" && rounds < 5)
          continue; // another round
        failure = "the ETL queue is empty but " +
                  std::to_string(static_cast<std::int64_t>(*records_in) - accounted) +
                  " records are neither loaded nor quarantined (" +
                  std::to_string(snap.queue.dead) + " dead ETL records; see `shoal records list "
                  "--queue " + cfg->etl.queue + " --status dead`)";
        break;
      }
    } else {
      idle_since = {};
    }
    if (seconds_between(last_change, now) > a.stall_timeout_s) {
      failure = "no progress for " + std::to_string(static_cast<int>(a.stall_timeout_s)) + " s";
      break;
    }
  }
  display.draw(snap, true);
  const auto t_end = t_all.value_or(clock_type::now());

  // 5. stop the fleet (drain: finish or release, exit 0)
  bool stop_ok = true;
  std::string stop_note;
  if (!send_status) {
    sender->signal(SIGTERM);
    sender->wait(std::chrono::seconds(10));
  }
  if (!persistor_status) {
    // Everything it acked is loaded; give a slow flush (catalog registrations) 10 s more.
    persistor_status = persistor->wait(std::chrono::seconds(10));
    if (!persistor_status) {
      persistor_status = persistor->terminate(std::chrono::seconds(2));
      persistor_note = "persistor still flushing 10 s after every record was loaded; stopped";
    } else if (*persistor_status != 0) {
      persistor_note = "persistor exited " + std::to_string(*persistor_status) +
                       " after SIGTERM: " + log_tail(logs / "persistor.log", 300);
    }
  }
  for (auto& c : round_procs)
    c.terminate(std::chrono::seconds(10));
  if (supervisor) {
    const auto t_stop = clock_type::now();
    const int st = supervisor->terminate(std::chrono::milliseconds(cfg->fleet.drain_timeout_ms + 15'000));
    if (st != 0) {
      stop_ok = false;
      stop_note = "supervisor exited " + std::to_string(st) + " after SIGTERM (logs in " +
                  logs.string() + ")";
    } else {
      char buf[96];
      std::snprintf(buf, sizeof buf, "supervisor drained and exited 0 in %.1f s",
                    seconds_between(t_stop, clock_type::now()));
      stop_note = buf;
    }
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);

  // 6. verify and summarise
  open_ledger();
  if (!ledger_db) {
    std::fprintf(stderr, "shoal run: %s has no ETL ledger%s%s (logs in %s)\n", db.c_str(),
                 failure.empty() ? "" : ": ", failure.c_str(), logs.c_str());
    return 1;
  }
  auto totals = read_ledger(ledger_db.get(), persistor_name).value_or(ledger_totals{});
  const auto table_rows = scalar(ledger_db.get(), "SELECT count(*) FROM \"" + ds->table + "\"");
  const auto dup_ids = scalar(ledger_db.get(), "SELECT count(*) - count(DISTINCT message_id) FROM \"" +
                                                   ds->table + "\"");
  const std::int64_t accounted = totals.accounted();
  const bool counts_ok = accounted == static_cast<std::int64_t>(*records_in);
  const bool ok = failure.empty() && counts_ok && dup_ids && *dup_ids == 0 && stop_ok;
  const double send_s = seconds_between(t_send, t_send_done.value_or(t_end));
  const double etl_s = t_first_blob ? seconds_between(*t_first_blob, t_last_load.value_or(t_end)) : 0;
  const double e2e_s = seconds_between(t_send, t_end);
  const double wall_s = seconds_between(t_start, clock_type::now());
  const auto rate = [&](double s) { return s > 0 ? static_cast<double>(*records_in) / s : 0.0; };
  const auto g64 = [](double v) { return grouped(static_cast<std::int64_t>(v + 0.5)); };

  if (!failure.empty())
    std::fprintf(stderr, "\nshoal run: %s\n", failure.c_str());
  std::printf("\nsummary\n");
  std::printf("  records read            %zu\n", *records_in);
  std::printf("  rows loaded (new)       %lld into %s\n", static_cast<long long>(totals.loaded),
              ds->table.c_str());
  std::printf("  already loaded          %lld (re-sent message ids, kept once)\n",
              static_cast<long long>(totals.duplicates));
  std::printf("  quarantined             %lld\n", static_cast<long long>(totals.quarantined));
  std::printf("  rows in %-15s %lld, duplicate message ids: %lld\n", ds->table.c_str(),
              static_cast<long long>(table_rows.value_or(-1)),
              static_cast<long long>(dup_ids.value_or(-1)));
  std::printf("  blobs                   %lld", static_cast<long long>(totals.blobs));
  if (totals.blobs_per_day.size() <= 12) {
    std::printf(" (");
    bool first = true;
    for (const auto& [day, n] : totals.blobs_per_day) {
      std::printf("%s%s: %lld", first ? "" : ", ", day.c_str(), static_cast<long long>(n));
      first = false;
    }
    std::printf(")");
  } else {
    // Counted per day (hour folders fold into their day), per month with month folders.
    const std::string depth = !ds->partition.empty() ? ds->partition : cfg->persistor.partition;
    const char* unit = depth == "month" ? "months" : "days";
    std::printf(" over %zu %s (%s … %s)", totals.blobs_per_day.size(), unit,
                totals.blobs_per_day.begin()->first.c_str(),
                totals.blobs_per_day.rbegin()->first.c_str());
  }
  std::printf("\n  stage                   time      records/s\n");
  std::printf("  persistor start         %6.1f s             (started → listening, beside the "
              "fleet's start; before the first send)\n",
              seconds_between(t_persistor_spawn, t_send));
  std::printf("  send + persist          %6.1f s  %9s  (first send → last ack; a record is acked "
              "once its blob is committed)\n",
              send_s, g64(rate(send_s)).c_str());
  std::printf("  ETL                     %6.1f s  %9s  (%s → last blob loaded, "
              "%u workers%s)\n",
              etl_s, g64(rate(etl_s)).c_str(),
              a.etl == "rounds" ? "first round started" : "first blob committed", workers,
              a.etl == "rounds" ? " in rounds" : "");
  std::printf("  end to end              %6.1f s  %9s  (first send to the listening persistor → "
              "every record loaded or quarantined)\n",
              e2e_s, g64(rate(e2e_s)).c_str());
  std::printf("  wall time               %6.1f s             (with storage, process start and "
              "shutdown)\n",
              wall_s);
  if (!stop_note.empty())
    std::printf("  fleet                   %s\n", stop_note.c_str());
  const auto cost = run_cost_of(workers::read_process_stats(stats_dir), totals.blobs, *records_in);
  std::optional<double> emulator_cpu;
  if (emulator && emulator_cpu0)
    if (auto now = workers::process_cpu_seconds(*emulator))
      emulator_cpu = *now - *emulator_cpu0;
  print_cost(cost, emulator_cpu);
  if (!persistor_note.empty()) {
    for (char& c : persistor_note)
      if (c == '\n')
        c = ' ';
    std::printf("  note                    %s\n", persistor_note.c_str());
  }
  std::printf("verification: %s (records read %s rows loaded + already loaded + quarantined; "
              "%s duplicate message ids%s)\n",
              ok ? "PASSED" : "FAILED", counts_ok ? "=" : "≠",
              dup_ids && *dup_ids == 0 ? "no" : "some",
              failure.empty() ? "" : "; the run did not finish: see above");
  if (g.json)
    std::printf("%s\n",
                nlohmann::json{{"dataset", a.dataset},
                               {"records", *records_in},
                               {"loaded", totals.loaded},
                               {"duplicates", totals.duplicates},
                               {"quarantined", totals.quarantined},
                               {"table", ds->table},
                               {"table_rows", table_rows.value_or(-1)},
                               {"duplicate_ids", dup_ids.value_or(-1)},
                               {"blobs", totals.blobs},
                               {"workers", workers},
                               {"etl", a.etl},
                               {"persistor_start_s", seconds_between(t_persistor_spawn, t_send)},
                               {"send_s", send_s},
                               {"etl_s", etl_s},
                               {"end_to_end_s", e2e_s},
                               {"wall_s", wall_s},
                               {"end_to_end_records_per_s", rate(e2e_s)},
                               {"storage_requests", cost_json(cost)},
                               {"cpu_s", cpu_json(cost, emulator_cpu)},
                               {"verified", ok}}
                    .dump()
                    .c_str());
  std::fflush(stdout);
  return ok ? 0 : 1;
}

} // namespace

void add_run_command(CLI::App& app, global_options& g, command_fn& run) {
  auto a = std::make_shared<run_args>();
  auto* cmd = app.add_subcommand(
      "run", "The main job: send a real dataset through persistor and a worker fleet's ETL into "
             "SQLite, verified");
  cmd->add_option("--dataset", a->dataset,
                  "flights-20k | flights-200k | flights-2k | seattle-weather | a JSON array, "
                  "NDJSON or CSV file (generic mapping)")
      ->capture_default_str();
  cmd->add_option("--db", a->db, "SQLite database to load into")->capture_default_str();
  cmd->add_option("--workers", a->workers, "ETL worker processes (default: 2 per core)");
  cmd->add_option("--run-dir", a->run_dir, "logs and the Azurite workspace of this run")
      ->capture_default_str();
  cmd->add_option("--partition", a->partition,
                  "blob date folders: day | hour | month (default: [persistor] partition, day; "
                  "month for seattle-weather)");
  cmd->add_option("--event-time-field", a->event_time_field,
                  "field holding the event time (blob date folders); default per dataset");
  cmd->add_option("--etl", a->etl,
                  "fleet: a supervisor's workers load blobs as they are committed; rounds: "
                  "`shoal etl run --once` processes after the send")
      ->capture_default_str();
  cmd->add_option("--emulator-data", a->emulator_data,
                  "when development storage starts Azurite for this run: memory (its data gone "
                  "with the run; faster), disk (kept in run-dir/azurite), auto (memory for inputs "
                  "up to 1 GiB)")
      ->capture_default_str();
  cmd->add_option("--stall-timeout-s", a->stall_timeout_s,
                  "give up when no counter moved for this long")
      ->capture_default_str();
  cmd->callback([&g, &run, a] { run = [&g, a] { return run_main(g, *a); }; });
}

} // namespace shoal::cmd
