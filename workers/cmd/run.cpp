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
#include "workers/cmd/run_dataset.hpp"
#include "workers/cmd/run_progress.hpp"
#include "workers/cmd/run_summary.hpp"
#include "workers/dev_storage.hpp"
#include "workers/persistor/format.hpp"
#include "workers/process_stats.hpp"
#include "workers/claim/work_table.hpp"

#include "storage/blob_client.hpp"
#include "storage/table_client.hpp"

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

// -- the run's phases -----------------------------------------------------------------------------

// Checks the options whose values are a fixed set; prints what is wrong.
bool check_run_args(const run_args& a) {
  if (!a.partition.empty() && !workers::persistor::parse_partition_depth(a.partition)) {
    std::fprintf(stderr, "shoal run: --partition must be day, hour or month\n");
    return false;
  }
  if (a.etl != "fleet" && a.etl != "rounds") {
    std::fprintf(stderr, "shoal run: --etl must be fleet or rounds\n");
    return false;
  }
  if (a.emulator_data != "auto" && a.emulator_data != "memory" && a.emulator_data != "disk") {
    std::fprintf(stderr, "shoal run: --emulator-data must be auto, memory or disk\n");
    return false;
  }
  return true;
}

// What every child process of the run shares: the argv prefix (this executable, --config,
// --log-level), the environment, the run's names and folders.
struct run_setup {
  std::vector<std::string> common;
  std::vector<std::pair<std::string, std::string>> env;
  std::string persistor_name; // unique per run: names the run's blobs and sockets
  std::string endpoint;       // the persistor's push endpoint
  fs::path run_dir, logs, stats_dir, db;
  unsigned workers = 0;
};

// Same config and storage as this process; the ETL settings go through SHOAL_* variables so the
// fleet's workers get them too. The connection string travels only in the environment: argv is
// readable by every local user.
run_setup make_run_setup(const global_options& g, const std::string& connection_string,
                         const dataset_spec& ds, fs::path run_dir, fs::path db, unsigned workers) {
  run_setup s;
  s.run_dir = std::move(run_dir);
  s.logs = s.run_dir / "logs";
  s.stats_dir = s.run_dir / "stats";
  s.db = std::move(db);
  s.workers = workers;
  s.common = {workers::self_executable().string()};
  if (!g.config_path.empty())
    s.common.insert(s.common.end(), {"--config", fs::absolute(g.config_path).string()});
  if (!g.log_level.empty())
    s.common.insert(s.common.end(), {"--log-level", g.log_level});
  s.env = {{"SHOAL_STORAGE_CONNECTION_STRING", connection_string},
           {"SHOAL_STORAGE_CONNECTION_STRING_FILE", ""},
           {"AZURE_STORAGE_CONNECTION_STRING", connection_string},
           {"SHOAL_ETL_SQLITE_PATH", s.db.string()},
           {"SHOAL_ETL_DATASETS_DIR", ds.datasets_dir.string()},
           // An ETL blob mostly waits on storage (claim, blob GET, run log): 4 at once per worker
           // process keeps the 2-per-core fleet busy without more processes. (The fallback table
           // poll keeps its defaults: persist.committed → work.available wakes the workers.)
           {"SHOAL_WORKER_CONCURRENCY", "4"},
           {workers::stats_dir_env, s.stats_dir.string()}};
  if (!g.config_path.empty())
    s.env.emplace_back("SHOAL_CONFIG", fs::absolute(g.config_path).string());
  s.persistor_name = "run" + std::to_string(::time(nullptr)) + "p" + std::to_string(::getpid());
  s.endpoint = "ipc://" + (s.run_dir / ("persistor-" + s.persistor_name)).string();
  // The persistor announces each committed blob here; the supervisor passes it on to the worker
  // owning the blob's shard as work.available, so the ETL starts within milliseconds.
  s.env.emplace_back("SHOAL_PERSISTOR_COMMITTED_ENDPOINT",
                     "ipc://" + (s.run_dir / ("committed-" + s.persistor_name)).string());
  return s;
}

workers::result<workers::child_process> start_persistor(const run_setup& s, const dataset_spec& ds) {
  auto argv = s.common;
  argv.insert(argv.end(), {"persistor", "--mode", "push", "--endpoint", s.endpoint, "--name",
                           s.persistor_name});
  if (!ds.event_time_field.empty())
    argv.insert(argv.end(), {"--event-time-field", ds.event_time_field});
  if (!ds.partition.empty())
    argv.insert(argv.end(), {"--partition", ds.partition});
  return workers::child_process::spawn({argv, s.env, s.logs / "persistor.log", true});
}

// A supervisor with s.workers workers running the ETL job on `queue`.
workers::result<workers::child_process> start_fleet(const run_setup& s, const std::string& queue) {
  auto argv = s.common;
  argv.insert(argv.end(), {"supervisor", "--workers", std::to_string(s.workers), "--job", "etl",
                           "--queue", queue, "--endpoint",
                           "ipc://" + (s.run_dir / ("fleet-" + s.persistor_name)).string()});
  return workers::child_process::spawn({argv, s.env, s.logs / "supervisor.log", true});
}

// Waits until the persistor's log says it listens. 0 when it does, else run_main's exit code
// (the reason printed).
int wait_until_listening(workers::child_process& persistor, const fs::path& log) {
  const auto deadline = clock_type::now() + std::chrono::seconds(60);
  while (!persistor_listening(log)) {
    if (g_interrupted) {
      std::fprintf(stderr, "shoal run: interrupted while the persistor was starting\n");
      return 130;
    }
    if (auto st = persistor.wait(std::chrono::milliseconds(0))) {
      std::fprintf(stderr, "shoal run: the persistor exited %d before it listened:\n%s\n", *st,
                   log_tail(log).c_str());
      return 1;
    }
    if (clock_type::now() > deadline) {
      std::fprintf(stderr, "shoal run: the persistor did not listen within 60 s:\n%s\n",
                   log_tail(log).c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 0;
}

workers::result<workers::child_process> start_send(const run_setup& s, const dataset_spec& ds,
                                                   const fs::path& send_log) {
  auto argv = s.common;
  argv.insert(argv.end(), {"send", ds.file.string(), "--dest", ds.dest, "--endpoint", s.endpoint,
                           "--progress",
                           // The persistor is ours and watched: re-sending after 10 s only
                           // doubles its work when it is slow (a loaded machine), never helps.
                           "--ack-timeout-ms", "60000"});
  if (!ds.event_time_field.empty())
    argv.insert(argv.end(), {"--event-time-field", ds.event_time_field});
  std::error_code ec;
  fs::remove(send_log, ec);
  return workers::child_process::spawn({argv, s.env, send_log, true});
}

// The run's processes and what was seen of them, from the send to the summary.
struct run_state {
  run_state(workers::child_process p, workers::child_process snd, std::optional<workers::child_process> sv,
            clock_type::time_point persistor_spawned, clock_type::time_point send_started)
      : persistor(std::move(p)), sender(std::move(snd)), supervisor(std::move(sv)),
        t_persistor_spawn(persistor_spawned), t_send(send_started) {}

  workers::child_process persistor, sender;
  std::optional<workers::child_process> supervisor;
  std::vector<workers::child_process> round_procs; // --etl rounds: the current round
  int rounds = 0;
  std::optional<int> send_status, persistor_status;
  clock_type::time_point t_persistor_spawn, t_send;
  std::optional<clock_type::time_point> t_send_done, t_first_blob, t_last_load, t_all;
  clock_type::time_point persistor_deadline{}; // after its SIGTERM
  std::string persistor_note, failure;
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> ledger_db{nullptr, &sqlite3_close};
};

// Opens the SQLite ledger read-only once the ETL has created the database.
void open_ledger(run_state& st, const fs::path& db) {
  std::error_code ec;
  if (st.ledger_db || !fs::exists(db, ec))
    return;
  sqlite3* raw = nullptr;
  if (sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(raw);
    return;
  }
  sqlite3_busy_timeout(raw, 5'000);
  st.ledger_db.reset(raw);
}

// Looks at the send, the persistor and the supervisor without blocking: records exits, stops the
// persistor once every record is acked, and sets st.failure when the run cannot go on.
// Returns true right after the send finished.
bool poll_children(run_state& st, const fs::path& logs, const fs::path& send_log) {
  bool send_just_done = false;
  if (!st.send_status) {
    st.send_status = st.sender.wait(std::chrono::milliseconds(0));
    if (st.send_status) {
      st.t_send_done = clock_type::now();
      send_just_done = true;
      if (*st.send_status != 0) {
        st.failure = "shoal send exited " + std::to_string(*st.send_status) + ":\n" + log_tail(send_log);
        return true;
      }
      // Every record is acked, so committed and registered: flush and stop the persistor
      // (watched below without blocking the display).
      st.persistor.signal(SIGTERM);
      st.persistor_deadline = clock_type::now() + std::chrono::seconds(60);
    }
  }
  if (!st.persistor_status) {
    if (auto code = st.persistor.wait(std::chrono::milliseconds(0))) {
      st.persistor_status = code;
      if (!st.send_status) {
        st.failure = "persistor exited " + std::to_string(*code) +
                     " while records were being sent:\n" + log_tail(logs / "persistor.log");
        return send_just_done;
      }
      if (*code != 0) // every record was acked (committed); the data check decides
        st.persistor_note = "persistor exited " + std::to_string(*code) + " after SIGTERM: " +
                            log_tail(logs / "persistor.log", 300);
    } else if (st.send_status && clock_type::now() > st.persistor_deadline) {
      st.persistor_status = st.persistor.terminate(std::chrono::seconds(1));
      st.persistor_note = "persistor did not exit within 60 s of SIGTERM; killed";
    }
  }
  if (st.supervisor)
    if (auto code = st.supervisor->wait(std::chrono::milliseconds(0))) {
      st.failure = "supervisor exited " + std::to_string(*code) + " before the ETL finished:\n" +
                   log_tail(logs / "supervisor.log");
      st.supervisor.reset();
    }
  return send_just_done;
}

// --etl rounds: after the send, N `etl run --once` processes per round; at most 5 rounds.
// Returns true when the current round just finished.
bool step_rounds(run_state& st, const run_setup& s, const dataset_spec& ds) {
  if (st.send_status && st.round_procs.empty() && !st.t_all) {
    if (st.rounds >= 5) {
      st.failure = "5 ETL rounds did not load every record";
      return false;
    }
    ++st.rounds;
    if (!st.t_first_blob)
      st.t_first_blob = clock_type::now(); // rounds: the ETL stage starts with the first round
    auto eargv = s.common;
    eargv.insert(eargv.end(), {"etl", "--sqlite", s.db.string()});
    if (!ds.datasets_dir.empty())
      eargv.insert(eargv.end(), {"--datasets", ds.datasets_dir.string()});
    eargv.insert(eargv.end(), {"run", "--once"});
    for (unsigned i = 0; i < s.workers; ++i) {
      auto argv = eargv;
      argv.insert(argv.end(), {"--owner", s.persistor_name + "-etl" + std::to_string(i)});
      auto c = workers::child_process::spawn(
          {argv, s.env, s.logs / ("etl-" + std::to_string(i) + ".log"), true});
      if (!c) {
        st.failure = "etl: " + c.error().describe();
        return false;
      }
      st.round_procs.push_back(std::move(*c));
    }
  }
  if (st.round_procs.empty())
    return false;
  bool all = true;
  for (auto& c : st.round_procs)
    all = c.wait(std::chrono::milliseconds(0)).has_value() && all;
  if (all)
    st.round_procs.clear();
  return all;
}

// Watches until every record is loaded or quarantined (st.t_all set) or the run cannot finish
// (st.failure set), drawing the display.
void watch(run_state& st, const run_args& a, const run_setup& s, const dataset_spec& ds,
           std::size_t records_in, queue_watch& queue, const std::string& etl_queue) {
  const fs::path send_log = s.logs / "send.log";
  progress_display display(stdout, records_in);
  rate_window rates;
  snapshot snap;
  std::int64_t last_accounted = -1;
  std::size_t last_acked = 0;
  auto last_change = clock_type::now();
  clock_type::time_point idle_since{}; // send done, queue empty, records missing; {} = not idle
  auto next_draw = clock_type::now();
  auto next_close_look = clock_type::now();
  const auto draw_every = display.tty() ? std::chrono::milliseconds(500)
                                        : std::chrono::milliseconds(2000);
  const auto all_in = static_cast<std::int64_t>(records_in);
  while (true) {
    if (g_interrupted) {
      st.failure = "interrupted";
      break;
    }
    const bool send_just_done = poll_children(st, s.logs, send_log);
    if (!st.failure.empty())
      break;
    const bool round_finished = a.etl == "rounds" && step_rounds(st, s, ds);
    if (!st.failure.empty())
      break;

    const auto now = clock_type::now();
    bool tick = now >= next_draw || round_finished || send_just_done;
    if (!tick) {
      // Between the display's ticks (every 2 s when not on a terminal) the stage boundaries
      // are still timed to ~0.1 s instead of to the next tick: the local ledger says when the
      // last record is loaded (the tick that confirms the queue is closed then comes at once),
      // and the first blob is committed and registered when `send` reports its first ack (its
      // progress line, every 250 ms): the persistor acks a record only then.
      // The queue (a storage read) is looked at once the ledger is complete, at most every
      // 200 ms: completions follow the SQL commit by a few ms.
      open_ledger(st, s.db);
      if (st.send_status && st.ledger_db && now >= next_close_look)
        if (auto l = read_ledger(st.ledger_db.get(), s.persistor_name); l && l->accounted() >= all_in) {
          next_close_look = now + std::chrono::milliseconds(200);
          const auto q = queue.read();
          tick = q.ok && q.pending == 0 && q.claimed == 0;
        }
      if (!tick && a.etl == "fleet" && !st.t_first_blob)
        if (auto p = read_send_progress(send_log); p && p->acked > 0)
          st.t_first_blob = now;
    }
    if (!tick) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    next_draw = now + draw_every;
    snap.t_s = seconds_between(st.t_send, now);
    if (auto p = read_send_progress(send_log))
      snap.send = p;
    snap.send_done = st.send_status.has_value();
    if (snap.send_done && snap.send)
      snap.send->acked = std::max(snap.send->acked, snap.send->read);
    snap.queue = queue.read();
    open_ledger(st, s.db);
    if (st.ledger_db)
      if (auto l = read_ledger(st.ledger_db.get(), s.persistor_name))
        snap.ledger = *l;
    const std::int64_t accounted = snap.ledger.accounted();
    std::tie(snap.send_rate, snap.etl_rate) =
        rates.add(snap.t_s, snap.send ? static_cast<double>(snap.send->acked) : 0.0,
                  static_cast<double>(accounted));
    if (a.etl == "fleet" && !st.t_first_blob && (snap.queue.registered > 0 || snap.ledger.blobs > 0))
      st.t_first_blob = now;
    const std::size_t acked_now = snap.send ? snap.send->acked : 0;
    if (accounted != last_accounted) {
      if (last_accounted >= 0 || accounted > 0)
        st.t_last_load = now;
      last_accounted = accounted;
      last_change = now;
    }
    if (acked_now != last_acked) {
      last_acked = acked_now;
      last_change = now;
    }
    display.draw(snap);
    const bool queue_open = !snap.queue.ok || snap.queue.pending > 0 || snap.queue.claimed > 0;
    if (st.send_status && accounted >= all_in && !queue_open && st.round_procs.empty()) {
      st.t_all = now;
      break;
    }
    if (st.send_status && st.persistor_status && !queue_open && st.round_procs.empty()) {
      // Nothing left to run, yet records are missing: give the ledger a moment, then stop.
      if (idle_since == clock_type::time_point{})
        idle_since = now;
      if (seconds_between(idle_since, now) > (a.etl == "rounds" ? 0.0 : 5.0)) {
        if (a.etl == "rounds" && st.rounds < 5)
          continue; // another round
        st.failure = "the ETL queue is empty but " + std::to_string(all_in - accounted) +
                     " records are neither loaded nor quarantined (" +
                     std::to_string(snap.queue.dead) + " dead ETL records; see `shoal records list "
                     "--queue " + etl_queue + " --status dead`)";
        break;
      }
    } else {
      idle_since = {};
    }
    if (seconds_between(last_change, now) > a.stall_timeout_s) {
      st.failure = "no progress for " + std::to_string(static_cast<int>(a.stall_timeout_s)) + " s";
      break;
    }
  }
  display.draw(snap, true);
}

// Stops what still runs: the send, the persistor (its flush), a round, the fleet (drain: finish
// or release, exit 0). Returns the fleet's stop note; `stop_ok` false when it did not drain.
std::string stop_children(run_state& st, const run_setup& s, std::int64_t drain_timeout_ms,
                          bool& stop_ok) {
  stop_ok = true;
  if (!st.send_status) {
    st.sender.signal(SIGTERM);
    st.sender.wait(std::chrono::seconds(10));
  }
  if (!st.persistor_status) {
    // Everything it acked is loaded; give a slow flush (catalog registrations) 10 s more.
    st.persistor_status = st.persistor.wait(std::chrono::seconds(10));
    if (!st.persistor_status) {
      st.persistor_status = st.persistor.terminate(std::chrono::seconds(2));
      st.persistor_note = "persistor still flushing 10 s after every record was loaded; stopped";
    } else if (*st.persistor_status != 0) {
      st.persistor_note = "persistor exited " + std::to_string(*st.persistor_status) +
                          " after SIGTERM: " + log_tail(s.logs / "persistor.log", 300);
    }
  }
  for (auto& c : st.round_procs)
    c.terminate(std::chrono::seconds(10));
  if (!st.supervisor)
    return {};
  const auto t_stop = clock_type::now();
  const int code = st.supervisor->terminate(std::chrono::milliseconds(drain_timeout_ms + 15'000));
  if (code != 0) {
    stop_ok = false;
    return "supervisor exited " + std::to_string(code) + " after SIGTERM (logs in " +
           s.logs.string() + ")";
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "supervisor drained and exited 0 in %.1f s",
                seconds_between(t_stop, clock_type::now()));
  return buf;
}

int run_main(const global_options& g, const run_args& a) {
  const auto t_start = clock_type::now();
  auto cfg = load(g);
  if (!cfg)
    return 2;
  init_logging(*cfg);
  if (!check_run_args(a))
    return 2;
  auto ds = resolve_dataset(a.dataset, a.event_time_field, a.partition);
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
  const run_setup s = make_run_setup(g, storage->connection_string, *ds, run_dir, db, workers);
  // Every `shoal` process of this run writes its CPU time and storage requests here at exit.
  fs::remove_all(s.stats_dir, ec);
  fs::create_directories(s.stats_dir, ec);
  std::printf("storage: %s%s; logs in %s\n", storage_summary(*cfg).c_str(),
              storage->started ? " (Azurite started by shoal run)" : "", s.logs.c_str());
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

  struct sigaction sa {};
  sa.sa_handler = on_run_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);

  // 1. the persistor; 2. the fleet: a supervisor with N workers running the ETL job
  const auto t_persistor_spawn = clock_type::now();
  auto persistor = start_persistor(s, *ds);
  if (!persistor) {
    std::fprintf(stderr, "shoal run: persistor: %s\n", persistor.error().describe().c_str());
    return 1;
  }
  std::optional<workers::child_process> supervisor;
  if (a.etl == "fleet") {
    auto c = start_fleet(s, cfg->etl.queue);
    if (!c) {
      std::fprintf(stderr, "shoal run: supervisor: %s\n", c.error().describe().c_str());
      return 1;
    }
    supervisor = std::move(*c);
  }
  // 3. send, once the persistor listens. The stage times below are then those of a running
  // pipeline, as a producer meets it; the persistor's start-up (its storage set-up beside a
  // cold emulator and the fleet's own start) is in the wall time.
  if (int rc = wait_until_listening(*persistor, s.logs / "persistor.log"); rc != 0)
    return rc;
  const auto t_send = clock_type::now();
  auto sender = start_send(s, *ds, s.logs / "send.log");
  if (!sender) {
    std::fprintf(stderr, "shoal run: send: %s\n", sender.error().describe().c_str());
    return 1;
  }
  run_state st(std::move(*persistor), std::move(*sender), std::move(supervisor), t_persistor_spawn, t_send);

  // 4. watch until every record is loaded or quarantined; 5. stop
  watch(st, a, s, *ds, *records_in, queue, cfg->etl.queue);
  const auto t_end = st.t_all.value_or(clock_type::now());
  bool stop_ok = true;
  std::string stop_note = stop_children(st, s, cfg->fleet.drain_timeout_ms, stop_ok);
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);

  // 6. verify and summarise
  open_ledger(st, s.db);
  if (!st.ledger_db) {
    std::fprintf(stderr, "shoal run: %s has no ETL ledger%s%s (logs in %s)\n", db.c_str(),
                 st.failure.empty() ? "" : ": ", st.failure.c_str(), s.logs.c_str());
    return 1;
  }
  run_report r;
  r.dataset = a.dataset;
  r.table = ds->table;
  r.etl_mode = a.etl;
  r.partition_depth = !ds->partition.empty() ? ds->partition : cfg->persistor.partition;
  r.workers = workers;
  r.records_in = *records_in;
  r.totals = read_ledger(st.ledger_db.get(), s.persistor_name).value_or(ledger_totals{});
  r.table_rows = scalar(st.ledger_db.get(), "SELECT count(*) FROM \"" + ds->table + "\"");
  r.duplicate_ids = scalar(st.ledger_db.get(), "SELECT count(*) - count(DISTINCT message_id) FROM \"" +
                                                   ds->table + "\"");
  r.counts_ok = r.totals.accounted() == static_cast<std::int64_t>(*records_in);
  r.ok = st.failure.empty() && r.counts_ok && r.duplicate_ids && *r.duplicate_ids == 0 && stop_ok;
  r.persistor_start_s = seconds_between(st.t_persistor_spawn, st.t_send);
  r.send_s = seconds_between(st.t_send, st.t_send_done.value_or(t_end));
  r.etl_s = st.t_first_blob ? seconds_between(*st.t_first_blob, st.t_last_load.value_or(t_end)) : 0;
  r.end_to_end_s = seconds_between(st.t_send, t_end);
  r.wall_s = seconds_between(t_start, clock_type::now());
  r.stop_note = std::move(stop_note);
  r.persistor_note = st.persistor_note;
  r.failure = st.failure;
  r.cost = run_cost_of(workers::read_process_stats(s.stats_dir), r.totals.blobs, *records_in);
  if (emulator && emulator_cpu0)
    if (auto now = workers::process_cpu_seconds(*emulator))
      r.emulator_cpu_s = *now - *emulator_cpu0;
  print_summary(r, g.json);
  return r.ok ? 0 : 1;
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
