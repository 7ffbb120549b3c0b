// fleet_bench (issue 20): the fleet's per-record path on this machine, against Celery and the
// spawn ceiling, in one run on one Azurite.
//
//   (c) raw spawn    — N × `/bin/sh -c <command>` with a ~50-byte payload on stdin, from W
//                      threads at once (posix_spawn, write, waitpid): what the machine can spawn.
//   (b) celery       — Celery 5.2 + Redis 7 (Debian), W prefork processes, acks_late, prefetch 1,
//                      one task per record running the same command with the payload on stdin
//                      (bench/fleet_celery.py); Redis on a unix socket, in memory (no AOF, no
//                      snapshot during the run): a crash loses the queue.
//   (a) shoal exec   — `shoal supervisor --workers W --job exec --exec <command>` over N records
//                      enqueued in a fresh work table.
//   (d) shoal noop   — the same with `--job noop`: the claim path alone.
//   history          — the same two shoal runs on a queue that already completed H records
//                      (written straight into the table as done record rows, 100 per entity
//                      group transaction: seed_done):
//                      "kept" while those done records are still in the table (within
//                      done_retention_ms), "swept" once the sweep removed them (past it); and
//                      the entities a claim query reads in each case, with the layout-1 query for
//                      comparison.
//
// Timing: shoal from the supervisor's launch to the last completion (the service's Timestamp of
// the last record row completed, against the Timestamp of a marker written just before the
// launch); Celery from the worker's launch to the counter reaching N (polled every 10 ms);
// "first→last" leaves out each system's start-up.
//
//   bench/run.sh fleet [--records N] [--workers W] [--history H] [--command CMD] [--skip-celery]
//                      [--skip-history] [--noop-only] [--spawn-profile] [--shards N]

#include "storage/connection_string.hpp"
#include "storage/encoding.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "workers/child_process.hpp"
#include "workers/dev_storage.hpp"
#include "workers/claim/key_escape.hpp"
#include "workers/process_stats.hpp"
#include "workers/claim/work_table.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

using namespace shoal;
using namespace std::chrono;
namespace fs = std::filesystem;

namespace {

struct options {
  std::size_t records = 10'000;
  std::size_t workers = 4;
  std::size_t history = 100'000;
  std::string command = "true";
  std::string shoal;
  std::string python = "/usr/bin/python3";
  bool celery = true;
  bool history_runs = true;
  bool exec_runs = true; // false (--noop-only): no raw spawn loop, Celery nor exec runs
  bool spawn_profile = false; // --spawn-profile: only the spawn loop's variants, then exit
  std::uint32_t shards = 16;  // [work] shards of the bench's work tables (--shards)
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "fleet_bench: %s\n", what.c_str());
  std::exit(1);
}

std::string self_dir() {
  std::array<char, 4096> buf{};
  const auto n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  return n > 0 ? fs::path(std::string(buf.data(), static_cast<std::size_t>(n))).parent_path().string() : ".";
}

double secs_since(steady_clock::time_point t0) { return duration<double>(steady_clock::now() - t0).count(); }

// CPU seconds (user + system) of this process, of its reaped children (and theirs), and of the
// Azurite process ($SHOAL_TEST_AZURITE/pid, from bench/run.sh).
struct cpu_sample {
  double self = 0, children = 0, azurite = 0;
};

double tv(const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; }

double azurite_cpu() {
  const char* state = std::getenv("SHOAL_TEST_AZURITE");
  if (!state) return 0;
  long pid = 0;
  if (!(std::ifstream(fs::path(state) / "pid") >> pid)) return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; rest >> field; ++i) { // field 3 is the state; utime = 14, stime = 15
    if (i == 14) utime = std::stod(field);
    if (i == 15) { stime = std::stod(field); break; }
  }
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

cpu_sample cpu_now() {
  rusage self{}, kids{};
  ::getrusage(RUSAGE_SELF, &self);
  ::getrusage(RUSAGE_CHILDREN, &kids);
  return {tv(self.ru_utime) + tv(self.ru_stime), tv(kids.ru_utime) + tv(kids.ru_stime), azurite_cpu()};
}

// CPU milliseconds per record spent between two samples.
struct cpu_use {
  double processes_ms = 0, azurite_ms = 0; // per record: the system measured (its processes and their children), Azurite
};
cpu_use per_record(const cpu_sample& a, const cpu_sample& b, std::size_t records) {
  const double n = static_cast<double>(std::max<std::size_t>(records, 1));
  return {1000.0 * ((b.self - a.self) + (b.children - a.children)) / n, 1000.0 * (b.azurite - a.azurite) / n};
}

// -- (c) raw spawn loop ----------------------------------------------------------------------------

// `threads` threads spawn `n` commands in total, each with `payload` on its stdin via a pipe:
// `/bin/sh -c command`, or with `direct` the program `command` itself (no shell; --spawn-profile).
double raw_spawn(const std::string& command, std::size_t n, std::size_t threads, const std::string& payload, bool direct = false) {
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> failed{0};
  std::vector<std::thread> ts;
  const auto t0 = steady_clock::now();
  for (std::size_t t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      std::string sh = "/bin/sh", c = "-c", cmd = command;
      char* shell_argv[] = {sh.data(), c.data(), cmd.data(), nullptr};
      char* direct_argv[] = {cmd.data(), nullptr};
      char** argv = direct ? direct_argv : shell_argv;
      // Raw posix_spawn on purpose, not workers::spawn_process: this loop is the benchmark's
      // raw baseline. SIGPIPE is ignored in this process (a command may exit before reading its
      // stdin): give the command back the default.
      posix_spawnattr_t attr;
      posix_spawnattr_init(&attr);
      sigset_t pipe_only;
      sigemptyset(&pipe_only);
      sigaddset(&pipe_only, SIGPIPE);
      posix_spawnattr_setsigdefault(&attr, &pipe_only);
      posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
      while (next.fetch_add(1) < n) {
        int p[2];
        if (::pipe2(p, O_CLOEXEC) != 0) { ++failed; continue; }
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, p[0], 0);
        pid_t pid = 0;
        const int rc = posix_spawn(&pid, argv[0], &fa, &attr, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        ::close(p[0]);
        if (rc != 0) { ::close(p[1]); ++failed; continue; }
        [[maybe_unused]] auto w = ::write(p[1], payload.data(), payload.size());
        ::close(p[1]);
        int st = 0;
        ::waitpid(pid, &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ++failed;
      }
      posix_spawnattr_destroy(&attr);
    });
  for (auto& t : ts) t.join();
  if (failed.load() > 0) std::fprintf(stderr, "raw spawn: %zu failed\n", failed.load());
  return secs_since(t0);
}

// The spawn ceiling in detail (--spawn-profile): the raw loop with 1 and W threads, through the
// shell and direct, with the CPU each spawn costs (this process + its reaped children: fork,
// exec, the dynamic loader, the shell).
void spawn_profile(const options& o, const std::string& payload) {
  std::printf("| spawn loop | threads | spawns | seconds | spawns/s | CPU ms/spawn | CPU cores busy |\n|---|---:|---:|---:|---:|---:|---:|\n");
  const std::string direct = o.command.find('/') == std::string::npos ? "/bin/" + o.command : o.command;
  for (bool via_shell : {true, false})
    for (std::size_t threads : {std::size_t{1}, o.workers}) {
      const auto c0 = cpu_now();
      const double s = raw_spawn(via_shell ? o.command : direct, o.records, threads, payload, !via_shell);
      const auto c = per_record(c0, cpu_now(), o.records);
      std::printf("| %s | %zu | %zu | %.2f | %.0f | %.2f | %.2f |\n",
                  via_shell ? ("/bin/sh -c " + o.command).c_str() : direct.c_str(), threads, o.records, s,
                  static_cast<double>(o.records) / s, c.processes_ms, c.processes_ms * static_cast<double>(o.records) / 1000.0 / s);
      std::fflush(stdout);
    }
}

// -- Redis / Celery ----------------------------------------------------------------------------------

// A minimal RESP client: enough for GET of an integer counter.
class redis_conn {
public:
  explicit redis_conn(const fs::path& socket_path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", socket_path.c_str());
    ok_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~redis_conn() { ::close(fd_); }
  bool ok() const { return ok_; }
  // GET key as an integer (0 when absent); -1 on a broken connection.
  long long get(const std::string& key) {
    const std::string cmd = "*2\r\n$3\r\nGET\r\n$" + std::to_string(key.size()) + "\r\n" + key + "\r\n";
    if (::send(fd_, cmd.data(), cmd.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(cmd.size())) return -1;
    std::string in;
    char buf[256];
    for (;;) {
      auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return -1;
      in.append(buf, static_cast<std::size_t>(n));
      if (in.starts_with("$-1\r\n")) return 0;
      auto first = in.find("\r\n");
      if (first == std::string::npos) continue;
      if (in[0] != '$') return -1;
      const auto len = std::stoul(in.substr(1, first - 1));
      if (in.size() < first + 2 + len + 2) continue;
      return std::stoll(in.substr(first + 2, len));
    }
  }

private:
  int fd_ = -1;
  bool ok_ = false;
};

struct run_result {
  std::size_t records = 0;
  double launch_to_last_s = 0;
  double first_to_last_s = 0;
  bool ok = false;
  cpu_use cpu;
  double requests_per_1000 = 0; // shoal runs: work-table requests of the supervisor and workers
  double rate() const { return launch_to_last_s > 0 ? static_cast<double>(records) / launch_to_last_s : 0; }
  double steady_rate() const { return first_to_last_s > 0 ? static_cast<double>(records - 1) / first_to_last_s : 0; }
};

run_result run_celery(const options& o, const fs::path& dir) {
  run_result r;
  r.records = o.records;
  // Redis on a unix socket in the bench's folder (no TCP port to pick), default persistence
  // settings but no RDB file written during the run (--save "": nothing to snapshot for).
  const fs::path sock = dir / "redis.sock";
  auto redis = workers::child_process::spawn({{"/usr/bin/redis-server", "--port", "0", "--unixsocket", sock.string(),
                                               "--save", "", "--appendonly", "no", "--dir", dir.string()},
                                              {},
                                              dir / "redis.log",
                                              true});
  if (!redis) die("redis-server: " + redis.error().describe());
  std::optional<redis_conn> conn;
  for (int i = 0; i < 200 && !(conn && conn->ok()); ++i) {
    std::this_thread::sleep_for(25ms);
    conn.emplace(sock);
  }
  if (!conn || !conn->ok()) die("redis-server did not start (see " + (dir / "redis.log").string() + ")");
  const std::string py_dir = (workers::source_dir() / "bench").string();
  std::vector<std::pair<std::string, std::string>> env = {
      {"FLEET_BENCH_REDIS_SOCKET", sock.string()}, {"FLEET_BENCH_COMMAND", o.command}, {"PYTHONPATH", py_dir}, {"PYTHONDONTWRITEBYTECODE", "1"}};
  auto enq = workers::child_process::spawn({{o.python, py_dir + "/fleet_celery.py", "enqueue", std::to_string(o.records)}, env,
                                            dir / "celery-enqueue.log", true});
  if (!enq || enq->wait() != 0) die("celery enqueue failed (see " + (dir / "celery-enqueue.log").string() + ")");
  const auto c0 = cpu_now();
  const auto t0 = steady_clock::now();
  auto worker = workers::child_process::spawn(
      {{o.python, "-m", "celery", "-A", "fleet_celery", "worker", "-Q", "fleet", "-c", std::to_string(o.workers),
        "--prefetch-multiplier", "1", "-P", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l",
        "WARNING"},
       env, dir / "celery-worker.log", true});
  if (!worker) die("celery worker: " + worker.error().describe());
  std::optional<double> first;
  const auto limit = t0 + minutes(30);
  for (;;) {
    const auto n = conn->get("fleet:done");
    if (n < 0) die("lost the Redis connection");
    if (n > 0 && !first) first = secs_since(t0);
    if (static_cast<std::size_t>(n) >= o.records) break;
    if (steady_clock::now() > limit) die("celery did not finish in 30 minutes");
    std::this_thread::sleep_for(10ms);
  }
  r.launch_to_last_s = secs_since(t0);
  r.first_to_last_s = r.launch_to_last_s - first.value_or(0);
  r.ok = true;
  worker->terminate(10s);
  r.cpu = per_record(c0, cpu_now(), o.records); // the worker and its pool (and their commands), reaped
  redis->terminate(5s);
  return r;
}

// -- shoal --------------------------------------------------------------------------------------------

struct shoal_env {
  storage::pipeline pipe;
  std::string suffix;
  fs::path dir;
};

workers::work_table open_work(const options& o, const shoal_env& e, const std::string& table) {
  auto t = storage::table_client::make(e.pipe, table);
  if (!t) die(t.error().describe());
  workers::work_table_options wo;
  wo.work.shards = o.shards;
  auto w = workers::work_table::make(*t, std::nullopt, wo);
  if (!w) die(w.error().describe());
  if (auto c = w->create_if_missing(); !c) die(c.error().describe());
  return *w;
}

void enqueue(const workers::work_table& w, const std::string& queue, std::size_t n, const std::string& prefix) {
  std::vector<workers::new_record> recs;
  recs.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    recs.push_back({prefix + std::to_string(i), "{\"record\": " + std::to_string(i) + ", \"pad\": \"0123456789abcdef\"}", {}});
  for (std::size_t at = 0; at < recs.size(); at += 5000) {
    auto part = std::span<const workers::new_record>(recs).subspan(at, std::min<std::size_t>(5000, recs.size() - at));
    auto r = w.enqueue(queue, part);
    if (!r) die("enqueue: " + r.error().describe());
  }
}

// Writes `n` done records (ids prefix + i) straight into the table as layout 2 leaves a completed
// record (SCHEMA.md "Properties": the record row with status done, no ticket), 100 record rows
// per entity group transaction, 4 transactions in flight: the history a queue has after
// completing them, without pushing them through enqueue + claim + complete (12+ minutes on
// Azurite for 100,000). Also marks every partition as layout 2 (its meta row), as the workers
// would have. Returns the seconds taken.
double seed_done(const workers::work_table& w, const std::string& queue, std::size_t n, const std::string& prefix) {
  const auto t0 = steady_clock::now();
  const std::uint32_t shards = w.options().work.shards;
  if (auto ok = w.sync_clock(); !ok) die("seed: " + ok.error().describe());
  const auto now = w.clock().now().value_or(system_clock::now());
  const auto stamp = storage::to_table_time(now);
  std::vector<std::vector<storage::table_entity>> by_shard(shards);
  for (std::size_t i = 0; i < n; ++i) {
    const std::string id = prefix + std::to_string(i);
    const auto shard = workers::shard_of(id, shards);
    auto rk = workers::escape_key(id);
    if (!rk) die("seed: " + rk.error().describe());
    storage::table_entity e;
    e.partition_key = workers::partition_key(queue, shard);
    e.row_key = *rk;
    const std::string payload = "{\"record\": " + std::to_string(i) + ", \"pad\": \"0123456789abcdef\"}";
    e.set("status", std::string("done"));
    e.set("ticket", std::string());
    e.set("owner", std::string("fleet-bench-seed"));
    e.set("gen", std::int64_t{1});
    e.set("attempts", std::int32_t{1});
    e.set("lease_until", stamp);
    e.set("payload", payload);
    e.set("payload_bytes", static_cast<std::int64_t>(payload.size()));
    e.set("created", stamp);
    e.set("updated", stamp);
    by_shard[shard].push_back(std::move(e));
  }
  std::vector<storage::table_transaction> txs;
  for (std::uint32_t s = 0; s < shards; ++s) {
    storage::table_entity meta;
    meta.partition_key = workers::partition_key(queue, s);
    meta.row_key = "%~meta";
    meta.set("layout", std::int32_t{2});
    storage::table_transaction tx;
    tx.insert_or_merge(std::move(meta));
    for (auto& e : by_shard[s]) {
      if (tx.size() == 100) {
        txs.push_back(std::move(tx));
        tx = {};
      }
      tx.insert_or_replace(std::move(e)); // idempotent: a resubmitted chunk rewrites the same rows
    }
    if (!tx.empty()) txs.push_back(std::move(tx));
  }
  std::atomic<std::size_t> next{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (std::size_t i; (i = next.fetch_add(1)) < txs.size() && !failed;)
        if (auto r = w.table().submit_transaction(txs[i]); !r) {
          std::fprintf(stderr, "seed: %s\n", r.error().describe().c_str());
          failed = true;
        }
    });
  for (auto& t : ts) t.join();
  if (failed) die("seeding the history failed");
  return secs_since(t0);
}

// The service's time now: the Timestamp of an upserted marker row.
system_clock::time_point server_stamp(const workers::work_table& w) {
  storage::table_entity m;
  m.partition_key = "~bench";
  m.row_key = "marker";
  auto r = w.table().insert_or_replace(m);
  if (!r) die("marker: " + r.error().describe());
  auto got = w.table().get("~bench", "marker");
  if (!got || !got->timestamp) die("marker read");
  return system_clock::time_point(duration_cast<system_clock::duration>(got->timestamp->time_since_epoch()));
}

// Runs `shoal supervisor` with `job` over the pending records of `queue` until none is open.
run_result run_shoal(const options& o, const shoal_env& e, const workers::work_table& w, const std::string& table,
                     const std::string& queue, const std::string& job, std::size_t records, const std::string& label) {
  run_result r;
  r.records = records;
  const fs::path cfg = e.dir / (label + ".toml");
  std::ofstream(cfg) << "[work]\ntable = \"" << table << "\"\nshards = " << o.shards << "\n"
                     << "[worker]\nqueue = \"" << queue << "\"\nexec_command = \"" << o.command << "\"\n"
                     << "[fleet]\ntable = \"fleet" << e.suffix << "\"\nendpoint = \"ipc://" << (e.dir / (label + ".sock")).string()
                     << "\"\n[log]\nlevel = \"warn\"\n";
  const auto start = server_stamp(w);
  const auto c0 = cpu_now();
  const auto t0 = steady_clock::now();
  std::vector<std::string> argv = {o.shoal, "--config", cfg.string(), "supervisor", "--workers", std::to_string(o.workers),
                                   "--job", job};
  if (job == "exec") argv.insert(argv.end(), {"--exec", o.command});
  // Each shoal process writes what it cost (CPU, storage requests by kind) there at its exit.
  const fs::path stats = e.dir / (label + "-stats");
  fs::create_directories(stats);
  auto sup = workers::child_process::spawn({argv, {{workers::stats_dir_env, stats.string()}}, e.dir / (label + ".log"), true});
  if (!sup) die("supervisor: " + sup.error().describe());
  // Wait (coarsely: timing comes from the records' Timestamps) until the queue has no ticket
  // left: one $top=1 query a second over the queue's ticket ranges (Azurite evaluates a query
  // over its whole table, so the probe is kept rare).
  storage::table_query probe;
  probe.filter = storage::table_filter::starts_with("PartitionKey", queue + "-") &&
                 storage::table_filter::ge("RowKey", std::string("%|")) && storage::table_filter::lt("RowKey", std::string("%}"));
  probe.select = {"PartitionKey"};
  probe.page_size = 1;
  probe.max_entities = 1;
  for (;;) {
    std::this_thread::sleep_for(1s);
    if (auto st = sup->wait(0ms)) die(label + ": the supervisor exited with status " + std::to_string(*st) + " (see " +
                                      (e.dir / (label + ".log")).string() + ")");
    auto open = w.table().query_all(probe);
    if (open && open->empty()) break;
    if (secs_since(t0) > 1800) die(label + ": not done in 30 minutes");
  }
  const double wall = secs_since(t0);
  const double az = azurite_cpu();
  sup->terminate(30s);
  auto c1 = cpu_now();
  c1.azurite = az; // Azurite up to the end of the run, not the drain
  r.cpu = per_record(c0, c1, records);
  // The completions: the Timestamps of the record rows done since `start`.
  storage::table_query q;
  q.filter = storage::table_filter::starts_with("PartitionKey", queue + "-") && storage::table_filter::eq("status", std::string("done")) &&
             storage::table_filter::ge("Timestamp", storage::to_table_time(start));
  q.select = {"PartitionKey", "RowKey", "Timestamp"};
  auto done = w.table().query_all(q);
  if (!done) die("reading completions: " + done.error().describe());
  if (done->size() != records)
    std::fprintf(stderr, "%s: %zu records completed since the launch, expected %zu\n", label.c_str(), done->size(), records);
  system_clock::time_point first = system_clock::time_point::max(), last{};
  for (const auto& d : *done) {
    if (!d.timestamp) continue;
    const auto t = system_clock::time_point(duration_cast<system_clock::duration>(d.timestamp->time_since_epoch()));
    first = std::min(first, t);
    last = std::max(last, t);
  }
  r.launch_to_last_s = duration<double>(last - start).count();
  r.first_to_last_s = duration<double>(last - first).count();
  r.ok = done->size() == records;
  // The storage requests of the supervisor and its workers, by kind, per 1,000 records.
  std::map<std::string, std::uint64_t> by_op;
  std::uint64_t total = 0;
  for (const auto& ps : workers::read_process_stats(stats))
    for (const auto& c : ps.requests)
      if (c.svc == storage::service::table && c.resource == table) {
        by_op[c.op] += c.count;
        total += c.count;
      }
  std::string ops;
  for (const auto& [op, n] : by_op)
    ops += (ops.empty() ? "" : " · ") + op + " " +
           std::to_string(static_cast<double>(n) * 1000.0 / static_cast<double>(std::max<std::size_t>(records, 1))).substr(0, 6);
  r.requests_per_1000 = static_cast<double>(total) * 1000.0 / static_cast<double>(std::max<std::size_t>(records, 1));
  std::printf("  %-22s work-table requests per 1,000 records: %.1f (%s)\n", label.c_str(), r.requests_per_1000, ops.c_str());
  std::printf("  %-22s %6zu records: %.2f s launch→last (%.0f/s), %.2f s first→last (%.0f/s); polled wall %.1f s; "
              "CPU/record %.2f ms shoal + %.2f ms Azurite\n",
              label.c_str(), records, r.launch_to_last_s, r.rate(), r.first_to_last_s, r.steady_rate(), wall, r.cpu.processes_ms,
              r.cpu.azurite_ms);
  std::fflush(stdout);
  return r;
}

// Entities a claim query of partition `pk` reads: what it returns (the claim's own query, 150
// records wanted) and what lies in the key range the service walks for it; and what the
// layout-1 claim query (a property filter over the partition) walks: the whole partition.
struct query_reads {
  std::size_t returned = 0, range = 0, layout1_range = 0;
};

std::size_t count(const storage::table_client& t, const storage::table_filter& f) {
  storage::table_query q;
  q.filter = f;
  q.select = {"PartitionKey"};
  std::size_t n = 0;
  auto r = t.for_each(q, [&](const storage::table_entity&) { ++n; return true; });
  if (!r) die("count: " + r.error().describe());
  return n;
}

query_reads claim_reads(const workers::work_table& w, const std::string& pk, const char* what) {
  using storage::table_filter;
  query_reads out;
  auto now = w.clock().now();
  if (!now) {
    (void)w.sync_clock();
    now = w.clock().now();
  }
  const std::string bound = "%|" + storage::format_iso8601(*now);
  storage::table_query q;
  q.filter = table_filter::partition(pk) && table_filter::ge("RowKey", std::string("%|")) && table_filter::lt("RowKey", bound) &&
             table_filter::lt("lease_until", storage::to_table_time(*now));
  q.page_size = 100 + 50 + 16;
  auto page = w.table().query_page(q);
  if (!page) die("claim query: " + page.error().describe());
  out.returned = page->entities.size();
  out.range = count(w.table(), table_filter::partition(pk) && table_filter::ge("RowKey", std::string("%|")) && table_filter::lt("RowKey", bound));
  out.layout1_range = count(w.table(), table_filter::partition(pk));
  // Printed at once too: a long run stopped later keeps the figure.
  std::printf("  claim query of %s (%s): %zu returned, %zu in its key range, layout-1 query walks %zu\n", pk.c_str(), what,
              out.returned, out.range, out.layout1_range);
  std::fflush(stdout);
  return out;
}

} // namespace

int main(int argc, char** argv) {
  // Line-buffered even into a file: a run stopped midway keeps every figure it printed.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  options o;
  o.shoal = (fs::path(self_dir()).parent_path() / "workers/shoal").string();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--records") o.records = std::stoul(next());
    else if (a == "--workers") o.workers = std::stoul(next());
    else if (a == "--history") o.history = std::stoul(next());
    else if (a == "--command") o.command = next();
    else if (a == "--shoal") o.shoal = next();
    else if (a == "--python") o.python = next();
    else if (a == "--skip-celery") o.celery = false;
    else if (a == "--skip-history") o.history_runs = false;
    else if (a == "--noop-only") o.exec_runs = o.celery = false;
    else if (a == "--spawn-profile") o.spawn_profile = true;
    else if (a == "--shards") o.shards = static_cast<std::uint32_t>(std::stoul(next()));
    else {
      std::fprintf(stderr, "usage: fleet_bench [--records N] [--workers W] [--history H] [--command CMD] [--shoal PATH] "
                           "[--python PATH] [--skip-celery] [--skip-history] [--noop-only] [--spawn-profile] [--shards N]\n");
      return 2;
    }
  }
  ::signal(SIGPIPE, SIG_IGN);
  const char* cs = std::getenv("AZURE_STORAGE_CONNECTION_STRING");
  if (!cs || !*cs) die("AZURE_STORAGE_CONNECTION_STRING is not set (bench/run.sh fleet starts Azurite)");
  auto account = storage::parse_connection_string(cs);
  if (!account) die(account.error().describe());
  storage::pipeline_options po;
  po.http.max_idle_connections = 16;
  auto pipe = storage::pipeline::make(*account, po);
  if (!pipe) die(pipe.error().describe());
  const std::string suffix = std::to_string(::getpid());
  const fs::path dir = fs::temp_directory_path() / ("shoal-fleet-bench-" + suffix);
  fs::create_directories(dir);
  shoal_env env{*pipe, suffix, dir};
  const std::string payload = "{\"record\": 1, \"pad\": \"0123456789abcdef\"}";

  if (o.spawn_profile) {
    spawn_profile(o, payload);
    return 0;
  }
  std::printf("fleet_bench: %zu records, %zu workers/processes, command `/bin/sh -c %s`, history %zu; files in %s\n", o.records,
              o.workers, o.command.c_str(), o.history, dir.c_str());
  std::fflush(stdout);

  // (c) the spawn ceiling, first and last, so a drift of the machine's load shows.
  const auto rc0 = cpu_now();
  const double raw1 = o.exec_runs ? raw_spawn(o.command, o.records, o.workers, payload) : 0;
  const auto raw_cpu = per_record(rc0, cpu_now(), o.records);
  if (o.exec_runs) std::printf("  raw spawn              %6zu spawns: %.2f s (%.0f/s, %.2f ms each per thread); CPU/spawn %.2f ms\n", o.records, raw1,
              static_cast<double>(o.records) / raw1, raw1 * 1000.0 * static_cast<double>(o.workers) / static_cast<double>(o.records),
              raw_cpu.processes_ms);
  std::fflush(stdout);

  // (b) Celery.
  std::optional<run_result> celery;
  if (o.celery) {
    celery = run_celery(o, dir);
    std::printf("  celery                 %6zu tasks: %.2f s launch→last (%.0f/s), %.2f s first→last (%.0f/s); CPU/task %.2f ms\n",
                celery->records, celery->launch_to_last_s, celery->rate(), celery->first_to_last_s, celery->steady_rate(),
                celery->cpu.processes_ms);
    std::fflush(stdout);
  }

  // (a) shoal exec and (d) noop on fresh tables. Each table is dropped after its run: Azurite
  // keeps every table in one in-memory database that its disk mode serialises every 5 s, so a
  // table left behind would slow the runs after it.
  const std::string q = "fleet";
  query_reads fresh_reads;
  run_result exec_fresh, noop_fresh;
  if (o.exec_runs) {
    auto t = "fbexec" + suffix;
    auto w = open_work(o, env, t);
    enqueue(w, q, o.records, "e");
    exec_fresh = run_shoal(o, env, w, t, q, "exec", o.records, "exec-fresh");
    fresh_reads = claim_reads(w, workers::partition_key(q, 0), "fresh table after the exec run");
    (void)w.table().delete_table();
  }
  {
    auto t = "fbnoop" + suffix;
    auto w = open_work(o, env, t);
    enqueue(w, q, o.records, "n");
    noop_fresh = run_shoal(o, env, w, t, q, "noop", o.records, "noop-fresh");
    (void)w.table().delete_table();
  }

  const double raw2 = o.exec_runs ? raw_spawn(o.command, o.records, o.workers, payload) : 0;
  if (o.exec_runs) std::printf("  raw spawn (again)      %6zu spawns: %.2f s (%.0f/s)\n", o.records, raw2, static_cast<double>(o.records) / raw2);
  const double raw_rate = static_cast<double>(o.records) / std::min(raw1, raw2);

  // History: H records through the queue first, then the same runs with them kept and swept.
  std::optional<run_result> exec_kept, noop_kept, exec_swept, noop_swept;
  query_reads kept_reads, swept_reads, fresh_pending_reads;
  if (o.history_runs && o.history > 0) {
    auto t_hist = "fbhist" + suffix;
    auto w_hist = open_work(o, env, t_hist);
    const auto sc0 = cpu_now();
    const double seed_s = seed_done(w_hist, q, o.history, "h");
    std::printf("  seeded %zu done records in %.1f s (%.0f/s, 100 per transaction; Azurite CPU %.2f ms each)\n", o.history,
                seed_s, static_cast<double>(o.history) / seed_s, per_record(sc0, cpu_now(), o.history).azurite_ms);
    std::fflush(stdout);
    // Kept: the done records are still rows of the table.
    enqueue(w_hist, q, o.records, "ke");
    kept_reads = claim_reads(w_hist, workers::partition_key(q, 0), "history kept + records pending");
    if (o.exec_runs) exec_kept = run_shoal(o, env, w_hist, t_hist, q, "exec", o.records, "exec-kept");
    else if (auto d = w_hist.purge(q, {.ids = {}, .statuses = {workers::record_status::pending}, .stuck = false}); !d)
      die("purge: " + d.error().describe());
    enqueue(w_hist, q, o.records, "kn");
    noop_kept = run_shoal(o, env, w_hist, t_hist, q, "noop", o.records, "noop-kept");
    // Swept: past done_retention_ms, the sweep removed them (their count stays in the meta rows).
    auto sw = w_hist.sweep(q, {}, 0ms);
    if (!sw) die("sweep: " + sw.error().describe());
    std::printf("  swept %zu done records\n", sw->removed);
    enqueue(w_hist, q, o.records, "se");
    swept_reads = claim_reads(w_hist, workers::partition_key(q, 0), "history swept + records pending");
    if (o.exec_runs) exec_swept = run_shoal(o, env, w_hist, t_hist, q, "exec", o.records, "exec-swept");
    else if (auto d = w_hist.purge(q, {.ids = {}, .statuses = {workers::record_status::pending}, .stuck = false}); !d)
      die("purge: " + d.error().describe());
    if (auto s2 = w_hist.sweep(q, {}, 0ms); !s2) die("sweep: " + s2.error().describe());
    enqueue(w_hist, q, o.records, "sn");
    noop_swept = run_shoal(o, env, w_hist, t_hist, q, "noop", o.records, "noop-swept");
    auto counts = w_hist.counts(q);
    if (counts)
      std::printf("  history queue counts: %zu total, %zu done (%zu of them swept)\n", counts->total,
                  counts->by_status[workers::record_status::done], counts->swept);
    (void)w_hist.table().delete_table();
  }
  // The claim query of a fresh partition with records pending, for the "without history" row.
  {
    auto t_q = "fbq" + suffix;
    auto w_q = open_work(o, env, t_q);
    enqueue(w_q, q, o.records, "q");
    fresh_pending_reads = claim_reads(w_q, workers::partition_key(q, 0), "fresh table, records pending");
    (void)w_q.table().delete_table();
  }

  // -- the table ----------------------------------------------------------------------------------
  auto row = [&](const char* what, const run_result& r, const char* vs) {
    std::printf("| %s | %zu | %.2f | **%.0f** | %.0f | %.2f + %.2f | %s |\n", what, r.records, r.launch_to_last_s, r.rate(),
                r.steady_rate(), r.cpu.processes_ms, r.cpu.azurite_ms, vs);
  };
  char buf[256];
  std::printf("\n| run | records | launch→last s | records/s | first→last /s | CPU ms/record (system + Azurite) | ratios |\n"
              "|---|---:|---:|---:|---:|---:|---|\n");
  if (o.exec_runs) std::printf("| raw spawn loop (%zu threads) | %zu | %.2f | **%.0f** | – | %.2f + 0 | ceiling (first %.0f/s, last %.0f/s) |\n",
              o.workers, o.records, std::min(raw1, raw2), raw_rate, raw_cpu.processes_ms, static_cast<double>(o.records) / raw1,
              static_cast<double>(o.records) / raw2);
  if (celery) row("Celery + Redis (acks_late, prefetch 1)", *celery, "–");
  if (celery)
    std::snprintf(buf, sizeof buf, "%.2f× Celery, %.2f of raw spawn", exec_fresh.rate() / celery->rate(), exec_fresh.rate() / raw_rate);
  else
    std::snprintf(buf, sizeof buf, "%.2f of raw spawn (Celery skipped)", exec_fresh.rate() / raw_rate);
  if (o.exec_runs) row("shoal exec, fresh table", exec_fresh, buf);
  row("shoal noop, fresh table", noop_fresh, "–");
  if (exec_kept) {
    std::snprintf(buf, sizeof buf, "%.2f of fresh", exec_kept->rate() / exec_fresh.rate());
    row("shoal exec, history kept", *exec_kept, buf);
  }
  if (noop_kept) {
    std::snprintf(buf, sizeof buf, "%.2f of fresh", noop_kept->rate() / noop_fresh.rate());
    row("shoal noop, history kept", *noop_kept, buf);
  }
  if (exec_swept) {
    std::snprintf(buf, sizeof buf, "%.2f of fresh", exec_swept->rate() / exec_fresh.rate());
    row("shoal exec, history swept", *exec_swept, buf);
  }
  if (noop_swept) {
    std::snprintf(buf, sizeof buf, "%.2f of fresh", noop_swept->rate() / noop_fresh.rate());
    row("shoal noop, history swept", *noop_swept, buf);
  }
  std::printf("\n| claim query of partition 00 | returned | in its key range | layout-1 query range (whole partition) |\n|---|---:|---:|---:|\n");
  std::printf("| fresh table, %zu pending | %zu | %zu | %zu |\n", o.records, fresh_pending_reads.returned, fresh_pending_reads.range,
              fresh_pending_reads.layout1_range);
  if (o.exec_runs)
    std::printf("| fresh table after the exec run (all done) | %zu | %zu | %zu |\n", fresh_reads.returned, fresh_reads.range,
                fresh_reads.layout1_range);
  if (noop_kept) {
    std::printf("| %zu done kept + %zu pending | %zu | %zu | %zu |\n", o.history, o.records, kept_reads.returned, kept_reads.range,
                kept_reads.layout1_range);
    std::printf("| %zu done swept + %zu pending | %zu | %zu | %zu |\n", o.history, o.records, swept_reads.returned, swept_reads.range,
                swept_reads.layout1_range);
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}
