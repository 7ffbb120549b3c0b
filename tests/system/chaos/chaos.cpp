#include "tests/system/chaos/chaos.hpp"

#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/netns.hpp"
#include "tests/support/processes.hpp"
#include "workers/child_process.hpp"
#include "workers/etl/sql_sink.hpp"
#include "workers/local_azurite.hpp"

#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

namespace shoal::tests::chaos {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using clock_type = std::chrono::steady_clock;

double secs(clock_type::duration d) { return std::chrono::duration<double>(d).count(); }

std::string fmt1(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string tail(const std::string& s, std::size_t n = 3000) { return s.size() > n ? s.substr(s.size() - n) : s; }

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// stdout of `cmd` run by /bin/sh; nullopt when it exits non-zero.
std::optional<std::string> capture(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return std::nullopt;
  std::string out;
  std::array<char, 4096> buf{};
  std::size_t k;
  while ((k = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), k);
  const int rc = ::pclose(p);
  if (rc != 0) return std::nullopt;
  return out;
}

// -- SQL, read from outside --------------------------------------------------------------------

// One-integer queries against the scenario's database: SQLite read-only, or PostgreSQL through
// shoal's own sink (reconnecting after a restart). Thread-safe.
class sql_reader {
public:
  sql_reader(std::string sqlite_path, std::string pg_url) : path_(std::move(sqlite_path)), url_(std::move(pg_url)) {}
  ~sql_reader() {
    if (db_) sqlite3_close(db_);
  }
  sql_reader(const sql_reader&) = delete;
  sql_reader& operator=(const sql_reader&) = delete;

  std::optional<std::int64_t> scalar(const std::string& sql) {
    std::lock_guard lk(m_);
    if (!url_.empty()) {
      if (!pg_) {
        auto s = workers::etl::open_postgres_sink(url_);
        if (!s) return std::nullopt;
        pg_ = std::move(*s);
      }
      auto v = pg_->scalar(sql);
      if (!v) {
        pg_.reset(); // the server may have restarted: reconnect next time
        return std::nullopt;
      }
      return *v;
    }
    if (!db_) {
      if (!fs::exists(path_)) return std::nullopt;
      if (sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
        sqlite3_close(db_);
        db_ = nullptr;
        return std::nullopt;
      }
      sqlite3_busy_timeout(db_, 5000);
    }
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      sqlite3_finalize(st);
      return std::nullopt;
    }
    std::optional<std::int64_t> v;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
  }

private:
  std::mutex m_;
  std::string path_, url_;
  sqlite3* db_ = nullptr;
  std::unique_ptr<workers::etl::sql_sink> pg_;
};

// -- the pipeline under test -------------------------------------------------------------------

// One fleet host: a `shoal supervisor` with its workers, in a network namespace or not.
struct host_spec {
  std::string name = "chaos";
  std::string ns;  // "" = this namespace
  std::string ip;  // "" = single host (no tcp link, no CURVE)
  int workers = 3;
};

struct rig_options {
  std::string scenario;
  std::string storage_cs;  // what the daemons use (the proxy, or Azurite)
  std::string observe_cs;  // what the harness reads the work table with (Azurite itself)
  std::string pg_url;      // "" = SQLite
  fs::path sqlite_path;    // "" = dir/chaos.db
  std::vector<host_spec> hosts{host_spec{}};
  std::uint32_t lease_ms = 10'000;
  std::uint32_t request_timeout_ms = 5'000;
};

// A record of the producer: id, sequence number; every 50th is bad (fails the schema).
constexpr std::size_t k_bad_every = 50;
bool is_bad(std::size_t i) { return i % k_bad_every == k_bad_every - 1; }
std::size_t good_below(std::size_t k) { return k - k / k_bad_every; }
std::size_t bad_below(std::size_t k) { return k / k_bad_every; }

class rig {
public:
  rig(const environment& env, rig_options o) : env_(env), o_(std::move(o)) {
    static std::atomic<unsigned> counter{0};
    tag_ = "ch" + std::to_string(::getpid() % 100000) + "n" + std::to_string(counter++);
    dir_ = env_.work_dir / (o_.scenario + "-" + tag_);
    if (o_.sqlite_path.empty()) o_.sqlite_path = dir_ / "chaos.db";
    sql_.emplace(o_.sqlite_path.string(), o_.pg_url);
  }
  rig(const rig&) = delete;
  rig& operator=(const rig&) = delete;
  ~rig() { stop_all(); }

  const fs::path& dir() const { return dir_; }
  const std::string& tag() const { return tag_; }
  std::string table() const { return "chaos_" + tag_; }
  sql_reader& sql() { return *sql_; }
  const rig_options& options() const { return o_; }

  void log(const std::string& line) const {
    if (env_.log) env_.log("[" + o_.scenario + " " + fmt1(secs(clock_type::now() - t0_)) + "s] " + line);
  }
  double t() const { return secs(clock_type::now() - t0_); }

  // Folders, configuration, dataset, keys. Errors: a sentence.
  std::optional<std::string> setup() {
    std::error_code ec;
    fs::create_directories(dir_ / "logs", ec);
    fs::create_directories(dir_ / "datasets", ec);
    if (ec) return "cannot create " + dir_.string() + ": " + ec.message();
    std::ofstream(dir_ / "datasets" / "chaos.schema.json")
        << R"({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "required": ["id", "n"],)"
        << R"( "properties": {"id": {"type": "string"}, "n": {"type": "integer", "minimum": 0}}})";
    // No unique key on the row table: only the ledger (blob) and the message-id table keep a
    // record from landing twice, so a duplicate shows as a second row.
    std::ofstream(dir_ / "datasets" / "chaos.toml")
        << "name = \"" << table() << "\"\ndest = \"" << dest() << "\"\nschema_file = \"chaos.schema.json\"\n"
        << "ddl = \"CREATE TABLE IF NOT EXISTS " << table()
        << " (message_id TEXT NOT NULL, rec_id TEXT NOT NULL, n BIGINT NOT NULL, blob TEXT NOT NULL)\"\n"
        << "insert = \"INSERT INTO " << table() << " (message_id, rec_id, n, blob) VALUES (?, ?, ?, ?)\"\n"
        << "message_key = \"ledger\"\n"
        << "[[fields]]\ncolumn = \"message_id\"\nsource = \"$message_id\"\n"
        << "[[fields]]\ncolumn = \"rec_id\"\nsource = \"/id\"\n"
        << "[[fields]]\ncolumn = \"n\"\nsource = \"/n\"\ntype = \"integer\"\n"
        << "[[fields]]\ncolumn = \"blob\"\nsource = \"$blob\"\n";
    for (std::size_t h = 0; h < o_.hosts.size(); ++h) {
      if (!o_.hosts[h].ip.empty()) {
        const std::string cmd = quote(env_.shoal) + " keys generate --out " + quote((dir_ / "keys").string()) +
                                " --name " + o_.hosts[h].name + " > " + quote((dir_ / "logs" / "keys.log").string()) + " 2>&1";
        if (std::system(cmd.c_str()) != 0) return "shoal keys generate failed: " + read_text(dir_ / "logs" / "keys.log");
        fs::create_directories(dir_ / "allow", ec);
        fs::copy_file(dir_ / "keys" / (o_.hosts[h].name + ".pub"), dir_ / "allow" / (o_.hosts[h].name + ".pub"),
                      fs::copy_options::overwrite_existing, ec);
      }
      std::ofstream(config(h)) << toml(h);
    }
    return std::nullopt;
  }

  fs::path config(std::size_t host = 0) const { return dir_ / ("shoal-" + o_.hosts[host].name + ".toml"); }

  // -- processes ------------------------------------------------------------------------------

  bool start_persistor() {
    auto p = spawn({env_.shoal, "--config", config().string(), "persistor"}, "persistor", o_.storage_cs);
    if (!p) return false;
    persistor_.emplace(std::move(*p));
    return true;
  }
  pid_t persistor_pid() const { return persistor_ ? persistor_->pid() : -1; }
  // SIGKILL, then started again at once (as systemd's Restart=always would).
  void kill_persistor() {
    if (!persistor_) return;
    persistor_->signal(SIGKILL);
    (void)persistor_->wait(5000ms);
    ++kills;
    start_persistor();
  }

  bool start_supervisor(std::size_t h) {
    std::vector<std::string> argv;
    if (!o_.hosts[h].ns.empty()) argv = {fs::exists("/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip", "netns", "exec", o_.hosts[h].ns};
    argv.insert(argv.end(), {env_.shoal, "--config", config(h).string(), "supervisor"});
    auto p = spawn(argv, "supervisor-" + o_.hosts[h].name, o_.storage_cs);
    if (!p) return false;
    if (sups_.size() <= h) sups_.resize(h + 1);
    sups_[h].emplace(std::move(*p));
    return true;
  }
  pid_t supervisor_pid(std::size_t h) const { return h < sups_.size() && sups_[h] ? sups_[h]->pid() : -1; }
  std::vector<pid_t> workers(std::size_t h) const {
    const pid_t s = supervisor_pid(h);
    return s > 0 ? children_of(s, " worker") : std::vector<pid_t>{};
  }
  // SIGKILL to the supervisor alone; its workers are left running (they must notice).
  void kill_supervisor(std::size_t h) {
    sups_[h]->signal(SIGKILL);
    (void)sups_[h]->wait(5000ms);
    ++kills;
  }

  // Starts `shoal send` on a FIFO and a thread writing `rate` records/s into it for `length`.
  bool start_load(double rate, milliseconds length) {
    const fs::path fifo = dir_ / "records.fifo";
    if (::mkfifo(fifo.c_str(), 0600) != 0) return false;
    auto p = spawn({env_.shoal, "--config", config().string(), "send", fifo.string(), "--format", "ndjson", "--dest",
                    dest(), "--id-field", "id", "--ack-timeout-ms", "3000", "--timeout-s", "900", "--quiet"},
                   "send", o_.storage_cs);
    if (!p) return false;
    sender_.emplace(std::move(*p));
    producer_ = std::thread([this, fifo, rate, length] { produce(fifo, rate, length); });
    monitor_ = std::thread([this] { monitor(); });
    return true;
  }
  std::size_t written() const { return written_.load(); }
  bool producer_done() const { return producer_done_.load(); }
  // Waits for the producer to finish writing and `shoal send` to exit; its status.
  std::optional<int> wait_sender(milliseconds limit) {
    if (producer_.joinable()) producer_.join();
    return sender_ ? sender_->wait(limit) : std::nullopt;
  }

  // -- observing --------------------------------------------------------------------------------

  std::size_t rows_distinct(std::optional<std::size_t> below = std::nullopt) {
    std::string q = "SELECT count(DISTINCT rec_id) FROM " + table();
    if (below) q += " WHERE n < " + std::to_string(*below);
    return static_cast<std::size_t>(sql_->scalar(q).value_or(0));
  }
  std::size_t rows_total() { return static_cast<std::size_t>(sql_->scalar("SELECT count(*) FROM " + table()).value_or(0)); }
  std::size_t quarantined() {
    return static_cast<std::size_t>(
        sql_->scalar("SELECT count(DISTINCT message_id) FROM shoal_etl_quarantine WHERE dataset = '" + table() + "'")
            .value_or(0));
  }

  struct queue_counts {
    bool ok = false;
    std::size_t pending = 0, claimed = 0, done = 0, dead = 0;
  };
  // The ETL queue, as `shoal records list` shows it (straight from Azurite, no faults).
  queue_counts queue() const {
    queue_counts c;
    const std::string cmd = "AZURE_STORAGE_CONNECTION_STRING=" + quote(o_.observe_cs) + " " + quote(env_.shoal) +
                            " --config " + quote(config().string()) +
                            " --json records list --queue etl --limit 1 2>/dev/null";
    auto out = capture(cmd);
    if (!out) return c;
    auto j = nlohmann::json::parse(*out, nullptr, false);
    if (j.is_discarded() || !j.contains("counts")) return c;
    const auto& k = j["counts"];
    c.pending = k.value("pending", 0u);
    c.claimed = k.value("claimed", 0u);
    c.done = k.value("done", 0u);
    c.dead = k.value("dead", 0u);
    c.ok = true;
    return c;
  }

  // Every ETL record done, and SQL holding what was sent: true when it came to that within
  // `limit`.
  bool wait_finished(milliseconds limit) {
    const std::size_t n = written();
    return eventually(
        [&] {
          if (rows_distinct() < good_below(n) || quarantined() < bad_below(n)) return false;
          auto q = queue();
          return q.ok && q.pending == 0 && q.claimed == 0;
        },
        limit, 1000ms);
  }

  // Recovery: from now (a fault's end), until SQL holds every good record sent before it. The
  // monitor thread notes when that happens.
  void mark_fault_end() {
    std::lock_guard lk(mark_m_);
    mark_ = {clock_type::now(), written()};
    recovered_.reset();
  }
  // The time from the last mark until SQL held every good record written before it (waits up
  // to `limit` for it).
  std::optional<double> recovery_after_mark(milliseconds limit) {
    std::optional<double> out;
    (void)eventually( // out says how it ended
        [&] {
          std::lock_guard lk(mark_m_);
          out = recovered_;
          return !mark_ || recovered_;
        },
        limit, 100ms);
    return out;
  }

  // -- ending -----------------------------------------------------------------------------------

  // SIGTERM to the supervisors (drain) and the persistor; SIGKILL what is left of every tree.
  void stop_all() {
    stopping_ = true;
    if (producer_.joinable()) producer_.join();
    if (monitor_.joinable()) monitor_.join();
    for (auto& s : sups_)
      if (s) s->signal(SIGTERM);
    for (auto& s : sups_)
      if (s && !s->wait(30'000ms)) kill_tree(*s);
    if (persistor_) persistor_->terminate(15'000ms);
    if (sender_) sender_->terminate(2'000ms);
    for (pid_t p : stray_) ::kill(p, SIGKILL);
  }
  // Processes to SIGKILL at the end if still alive (orphans of a killed supervisor).
  void add_stray(const std::vector<pid_t>& pids) { stray_.insert(stray_.end(), pids.begin(), pids.end()); }

  std::string logs_tail() const {
    std::string s;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_ / "logs", ec))
      s += "---- " + e.path().filename().string() + "\n" + tail(read_text(e.path()), 1500) + "\n";
    return s;
  }

  std::size_t kills = 0;

private:
  std::string dest() const { return "chaos-" + tag_; }

  std::string toml(std::size_t h) const {
    const host_spec& host = o_.hosts[h];
    std::ostringstream t;
    t << "[storage]\nrequest_timeout_ms = " << o_.request_timeout_ms << "\nconnect_timeout_ms = 2000\n"
      << "[work]\ntable = \"" << tag_ << "work\"\nlease_ms = " << o_.lease_ms << "\nlease_renew_ms = " << o_.lease_ms / 3
      << "\nretry_base_ms = 200\nretry_max_ms = 5000\n"
      << "[catalog]\ntable = \"" << tag_ << "cat\"\n"
      << "[etl]\ncontainer = \"" << tag_ << "c\"\nruns_table = \"" << tag_ << "runs\"\ndatasets_dir = \""
      << (dir_ / "datasets").string() << "\"\n";
    if (o_.pg_url.empty()) t << "sqlite_path = \"" << o_.sqlite_path.string() << "\"\nbusy_timeout_ms = 10000\n";
    else t << "postgres_url = \"" << o_.pg_url << "\"\n";
    t << "[persistor]\nendpoint = \"ipc://" << (dir_ / "persistor.sock").string() << "\"\n"
      << "committed_endpoint = \"ipc://" << (dir_ / "committed.sock").string() << "\"\n"
      << "container = \"" << tag_ << "c\"\nbatch_max_records = 200\nbatch_max_delay_ms = 300\n"
      << "host = \"chaos\"\nname = \"" << tag_ << "\"\n"
      << "[worker]\njob = \"etl\"\npoll_min_ms = 100\npoll_max_ms = 1000\ndrain_timeout_ms = 5000\nconcurrency = 2\n"
      << "[fleet]\nhost = \"" << host.name << "\"\nworkers = " << host.workers << "\ntable = \"" << tag_ << "fleet\"\n"
      << "endpoint = \"ipc://" << (dir_ / ("fleet-" + host.name + ".sock")).string() << "\"\n"
      << "heartbeat_interval_ms = 250\nheartbeat_liveness = 4\n"
      << "restart_intensity = 1000\nrestart_period_ms = 60000\nrestart_backoff_ms = 1000\n"
      << "coordinator_lease_ms = 4000\ncoordinator_renew_ms = 1000\ndrain_timeout_ms = 10000\n";
    if (!host.ip.empty())
      t << "host_endpoint = \"tcp://" << host.ip << ":7300\"\n"
        << "curve_secret_key = \"" << (dir_ / "keys" / (host.name + ".key")).string() << "\"\n"
        << "curve_public_key = \"" << (dir_ / "keys" / (host.name + ".pub")).string() << "\"\n"
        << "curve_allow_dir = \"" << (dir_ / "allow").string() << "\"\n";
    t << "[log]\nlevel = \"info\"\n";
    return t.str();
  }

  std::optional<workers::child_process> spawn(std::vector<std::string> argv, const std::string& role,
                                              const std::string& cs) {
    workers::child_options co;
    co.argv = std::move(argv);
    co.env = {{"AZURE_STORAGE_CONNECTION_STRING", cs}};
    co.output = dir_ / "logs" / (role + "-" + std::to_string(++spawned_[role]) + ".log");
    co.new_process_group = true;
    auto p = workers::child_process::spawn(co);
    if (!p) {
      log("cannot start " + role + ": " + p.error().describe());
      return std::nullopt;
    }
    return std::move(*p);
  }

  void kill_tree(workers::child_process& p) {
    for (pid_t pid : process_tree(p.pid())) ::kill(pid, SIGKILL);
    (void)p.wait(5000ms);
  }

  // Every 200 ms: has SQL caught up with the last fault mark?
  void monitor() {
    while (!stopping_) {
      std::optional<std::pair<clock_type::time_point, std::size_t>> m;
      {
        std::lock_guard lk(mark_m_);
        if (!recovered_) m = mark_;
      }
      if (m && rows_distinct(m->second) >= good_below(m->second)) {
        std::lock_guard lk(mark_m_);
        if (mark_ && mark_->first == m->first) recovered_ = secs(clock_type::now() - m->first);
      }
      std::this_thread::sleep_for(200ms);
    }
  }

  // Writes NDJSON records into the FIFO at a steady rate, then closes it (end of input).
  void produce(const fs::path& fifo, double rate, milliseconds length) {
    const int fd = ::open(fifo.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      producer_done_ = true;
      return;
    }
    const auto start = clock_type::now();
    std::size_t i = 0;
    while (!stopping_) {
      const auto now = clock_type::now();
      if (now - start >= length) break;
      const auto due = static_cast<std::size_t>(secs(now - start) * rate);
      std::string chunk;
      for (; i < due; ++i) {
        char id[64];
        std::snprintf(id, sizeof id, "%s-%07zu", tag_.c_str(), i);
        if (is_bad(i)) chunk += std::string(R"({"id":")") + id + R"(","n":"not a number"})" + "\n";
        else chunk += std::string(R"({"id":")") + id + R"(","n":)" + std::to_string(i) + R"(,"pad":"chaos-)" + tag_ + "\"}\n";
      }
      std::string_view rest = chunk;
      while (!rest.empty()) {
        const ssize_t n = ::write(fd, rest.data(), rest.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; // send died: its exit status tells
        rest.remove_prefix(static_cast<std::size_t>(n));
      }
      written_ = i;
      std::this_thread::sleep_for(50ms);
    }
    ::close(fd);
    producer_done_ = true;
  }

  const environment& env_;
  rig_options o_;
  std::string tag_;
  fs::path dir_;
  std::optional<sql_reader> sql_;
  std::optional<workers::child_process> persistor_, sender_;
  std::vector<std::optional<workers::child_process>> sups_;
  std::vector<pid_t> stray_;
  std::map<std::string, int> spawned_;
  std::thread producer_, monitor_;
  std::atomic<std::size_t> written_{0};
  std::atomic<bool> producer_done_{false}, stopping_{false};
  std::mutex mark_m_;
  std::optional<std::pair<clock_type::time_point, std::size_t>> mark_;
  std::optional<double> recovered_;
  clock_type::time_point t0_ = clock_type::now();
};

// -- checks common to every scenario -------------------------------------------------------------

// After the load: the producer's records acknowledged, the pipeline finished, then the result
// read from outside into `r`.
void finish_and_check(rig& g, result& r, const run_size& size) {
  auto st = g.wait_sender(size.settle);
  if (!st) r.problems.push_back("shoal send still waits for acknowledgements " + fmt1(secs(size.settle)) + " s after the load");
  else if (*st != 0) r.problems.push_back("shoal send exited " + std::to_string(*st) + " (records not acknowledged)");
  r.records = g.written();
  r.bad = bad_below(r.records);
  if (!r.recovery_s) r.recovery_s = g.recovery_after_mark(size.settle);
  const bool finished = g.wait_finished(size.settle);
  if (!finished) r.problems.push_back("the pipeline did not finish within " + fmt1(secs(size.settle)) + " s of the load's end");
  const std::size_t good = good_below(r.records);
  const std::size_t distinct = g.rows_distinct();
  const std::size_t total = g.rows_total();
  r.lost = distinct < good ? good - distinct : 0;
  r.duplicates = total > distinct ? total - distinct : 0;
  r.quarantined = g.quarantined();
  auto q = g.queue();
  if (!q.ok) r.problems.push_back("cannot read the work table with shoal records list");
  r.dead = q.dead;
  r.pending = q.pending;
  r.claimed = q.claimed;
  if (r.lost) r.problems.push_back(std::to_string(r.lost) + " good records are not in SQL");
  if (r.duplicates) r.problems.push_back(std::to_string(r.duplicates) + " duplicate rows in SQL");
  if (distinct > good) r.problems.push_back(std::to_string(distinct - good) + " unexpected records in SQL");
  if (r.quarantined != r.bad)
    r.problems.push_back(std::to_string(r.quarantined) + " records quarantined, " + std::to_string(r.bad) + " were bad");
  if (r.dead) r.problems.push_back(std::to_string(r.dead) + " ETL records dead (no blob is bad)");
  if (r.pending || r.claimed)
    r.problems.push_back(std::to_string(r.pending) + " ETL records pending and " + std::to_string(r.claimed) + " claimed at the end");
  if (r.records == 0) r.problems.push_back("the producer wrote nothing");
}

// Everything a scenario needs before its faults: folders, persistor, fleet, load.
bool start_pipeline(rig& g, result& r, const run_size& size) {
  if (auto e = g.setup()) {
    r.problems.push_back(*e);
    return false;
  }
  if (!g.start_persistor()) {
    r.problems.push_back("cannot start the persistor");
    return false;
  }
  for (std::size_t h = 0; h < g.options().hosts.size(); ++h)
    if (!g.start_supervisor(h)) {
      r.problems.push_back("cannot start supervisor " + g.options().hosts[h].name);
      return false;
    }
  if (!g.start_load(size.records_per_s, size.load)) {
    r.problems.push_back("cannot start the producer");
    return false;
  }
  g.log("pipeline started in " + g.dir().string());
  return true;
}

// Sleeps until `t` seconds into the scenario (scenario time), or returns at once if past.
void sleep_until_t(const rig& g, double t) {
  const double d = t - g.t();
  if (d > 0) std::this_thread::sleep_for(std::chrono::duration<double>(d));
}

rig_options base_options(const environment& env, const std::string& name) {
  rig_options o;
  o.scenario = name;
  o.storage_cs = env.proxy_connection_string;
  o.observe_cs = env.azurite_connection_string;
  return o;
}

// The proxy's counters since the scenario's reset, into r.faults and r.storage_requests.
void read_proxy(const environment& env, result& r) {
  if (!env.proxy_control_port) return;
  auto s = fault_proxy_client(env.proxy_control_port).stats();
  if (!s) {
    r.problems.push_back("fault proxy stats: " + s.error().describe());
    return;
  }
  r.storage_requests = (*s)["requests"].value("total", 0ull);
  for (auto& [k, v] : (*s)["injected"].items())
    if (v.get<std::uint64_t>() > 0) r.faults[k] = v.get<std::uint64_t>();
}

bool reset_proxy(const environment& env, result& r, const fault_plan& plan = {}) {
  fault_proxy_client c(env.proxy_control_port);
  if (auto e = c.set_plan(plan); !e) {
    r.problems.push_back("fault proxy: " + e.error().describe());
    return false;
  }
  if (auto e = c.reset(); !e) {
    r.problems.push_back("fault proxy: " + e.error().describe());
    return false;
  }
  return true;
}

// The end every scenario shares: the checks from outside, the kills and the proxy's counters
// into `r`, the logs' tails when something is wrong; then the proxy's plan cleared if the
// scenario set one.
void conclude(const environment& env, rig& g, result& r, const run_size& size, bool clear_plan = false) {
  finish_and_check(g, r, size);
  r.kills = g.kills;
  read_proxy(env, r);
  if (clear_plan) reset_proxy(env, r);
  if (!r.problems.empty()) r.notes.push_back(g.logs_tail());
}

// Every `period` from `start_s` until 1 s before the load ends (scenario time): `fault`, then
// the fault's end marked for the recovery time.
template <typename Fault>
void repeat_during_load(rig& g, const run_size& size, double start_s, std::chrono::milliseconds period, Fault fault) {
  const double end = secs(size.load) - 1;
  sleep_until_t(g, start_s);
  while (g.t() < end) {
    if (fault()) g.mark_fault_end();
    std::this_thread::sleep_for(period);
  }
}

// -- the scenarios ---------------------------------------------------------------------------

// Workers killed with SIGKILL every second while the load runs.
void kill_workers(const environment& env, const run_size& size, result& r) {
  rig g(env, base_options(env, r.name));
  if (!reset_proxy(env, r) || !start_pipeline(g, r, size)) return;
  std::mt19937 rng(7);
  repeat_during_load(g, size, 3, 1000ms, [&] {
    auto w = g.workers(0);
    if (w.empty()) return false;
    ::kill(w[std::uniform_int_distribution<std::size_t>(0, w.size() - 1)(rng)], SIGKILL);
    ++g.kills;
    return true;
  });
  r.faults["sigkill_worker"] = g.kills;
  conclude(env, g, r, size);
}

// The persistor killed with SIGKILL every 3 s (restarted at once); `shoal send` re-sends what
// was not acknowledged.
void kill_persistor(const environment& env, const run_size& size, result& r) {
  rig g(env, base_options(env, r.name));
  if (!reset_proxy(env, r) || !start_pipeline(g, r, size)) return;
  repeat_during_load(g, size, 2, 3000ms, [&] {
    g.kill_persistor();
    return true;
  });
  r.faults["sigkill_persistor"] = g.kills;
  conclude(env, g, r, size);
}

// The supervisor killed once with SIGKILL, its workers left running: they must stop on their
// own (not run on unsupervised), and a new supervisor started at once must duplicate nothing.
void kill_supervisor(const environment& env, const run_size& size, result& r) {
  rig g(env, base_options(env, r.name));
  if (!reset_proxy(env, r) || !start_pipeline(g, r, size)) return;
  sleep_until_t(g, secs(size.load) / 3);
  auto orphans = g.workers(0);
  if (orphans.empty()) r.problems.push_back("the supervisor had no workers to orphan");
  g.add_stray(orphans);
  g.kill_supervisor(0);
  const auto killed = clock_type::now();
  g.log("killed the supervisor; " + std::to_string(orphans.size()) + " workers orphaned");
  g.mark_fault_end();
  g.start_supervisor(0);
  // The workers' supervisor is gone: they notice within their liveness window (4 × 250 ms),
  // finish or release what they hold within drain_timeout_ms (5 s), and exit.
  const auto bound = 1000ms + 5000ms + 4000ms;
  std::optional<double> orphan_s;
  if (eventually([&] { return std::none_of(orphans.begin(), orphans.end(), process_alive); }, 60s, 50ms))
    orphan_s = secs(clock_type::now() - killed);
  if (!orphan_s) r.problems.push_back("the killed supervisor's workers still run 60 s later (unsupervised)");
  else if (*orphan_s > secs(bound)) r.problems.push_back("the orphaned workers ran on for " + fmt1(*orphan_s) + " s");
  if (orphan_s) r.notes.push_back("orphaned workers exited " + fmt1(*orphan_s) + " s after their supervisor died");
  r.faults["sigkill_supervisor"] = 1;
  conclude(env, g, r, size);
}

// Storage answering like Azure under load: 5 % of requests fail (ServerBusy with and without
// Retry-After, OperationTimedOut before and after executing, resets before and in the middle of
// a response).
void storage_errors(const environment& env, const run_size& size, result& r) {
  rig g(env, base_options(env, r.name));
  fault_plan plan;
  plan.seed = 16;
  const auto until = size.load;
  auto rule = [&](fault_kind k, double rate) {
    fault_rule f;
    f.kind = k;
    f.rate = rate;
    f.to = until;
    f.retry_after_s = 1;
    plan.rules.push_back(f);
  };
  rule(fault_kind::server_busy, 0.01);
  rule(fault_kind::server_busy_retry_after, 0.01 / 0.99);
  rule(fault_kind::operation_timed_out, 0.01 / 0.98);
  rule(fault_kind::operation_timed_out_after, 0.0075 / 0.97);
  rule(fault_kind::reset_before_response, 0.005 / 0.9625);
  rule(fault_kind::reset_mid_body, 0.0075 / 0.9575);
  if (!reset_proxy(env, r, plan) || !start_pipeline(g, r, size)) return;
  sleep_until_t(g, secs(size.load));
  g.mark_fault_end();
  conclude(env, g, r, size, /*clear_plan=*/true);
}

// One full storage outage (every connection reset) of size.outage, a third into the load.
void storage_outage(const environment& env, const run_size& size, result& r) {
  rig g(env, base_options(env, r.name));
  fault_plan plan;
  fault_rule f;
  f.kind = fault_kind::outage;
  f.from = milliseconds(static_cast<long>(size.load.count() / 3));
  f.to = f.from + size.outage;
  plan.rules.push_back(f);
  if (!reset_proxy(env, r, plan) || !start_pipeline(g, r, size)) return;
  sleep_until_t(g, secs(f.to) + 0.2);
  g.mark_fault_end();
  g.log("outage over");
  conclude(env, g, r, size, /*clear_plan=*/true);
}

// Latency spikes: every 8 s, 2 s during which every request waits 1.5 s; and stalls longer
// than request_timeout_ms (5 s) on 0.3 % of requests.
void storage_latency(const environment& env, const run_size& size, result& r) {
  rig g(env, base_options(env, r.name));
  fault_plan plan;
  fault_rule stall;
  stall.kind = fault_kind::stall;
  stall.rate = 0.003;
  stall.delay = 8000ms;
  stall.to = size.load;
  fault_rule spike;
  spike.kind = fault_kind::latency;
  spike.rate = 1.0;
  spike.delay = 1500ms;
  spike.period = 8000ms;
  spike.active = 2000ms;
  spike.from = 4000ms;
  spike.to = size.load;
  plan.rules = {stall, spike};
  if (!reset_proxy(env, r, plan) || !start_pipeline(g, r, size)) return;
  sleep_until_t(g, secs(size.load));
  g.mark_fault_end();
  conclude(env, g, r, size, /*clear_plan=*/true);
}

// The SQLite database on a small tmpfs that fills up mid-load for size.disk_full: commits fail
// (SQLITE_FULL), the ETL must retry later and never complete a record whose commit failed.
void sqlite_disk_full(const environment& env, const run_size& size, result& r) {
  if (::geteuid() != 0) {
    r.skipped = true;
    r.skip_reason = "needs root to mount a tmpfs";
    return;
  }
  auto o = base_options(env, r.name);
  rig probe(env, o); // for its folder name only
  const fs::path mnt = env.work_dir / ("sqlfs-" + probe.tag());
  std::error_code ec;
  fs::create_directories(mnt, ec);
  const std::string fs_size = "size=" + std::to_string(size.sqlite_fs_mib) + "m";
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, fs_size.c_str()) != 0) {
    r.skipped = true;
    r.skip_reason = std::string("mount -t tmpfs failed: ") + std::strerror(errno);
    return;
  }
  struct unmount {
    fs::path p;
    ~unmount() {
      ::umount2(p.c_str(), MNT_DETACH);
      std::error_code e;
      fs::remove(p, e);
    }
  } um{mnt};
  o.sqlite_path = mnt / "chaos.db";
  {
    rig g(env, o);
    if (!reset_proxy(env, r) || !start_pipeline(g, r, size)) return;
    sleep_until_t(g, secs(size.load) / 3);
    // Fill the file system: a filler file grown until ENOSPC.
    const fs::path filler = mnt / "filler";
    const int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    std::string block(64 * 1024, 'x');
    std::size_t filled = 0;
    while (fd >= 0) {
      const ssize_t n = ::write(fd, block.data(), block.size());
      if (n <= 0) break;
      filled += static_cast<std::size_t>(n);
    }
    // The last partial block: fill byte by byte down to zero space.
    while (fd >= 0 && ::write(fd, "x", 1) == 1) ++filled;
    if (fd >= 0) ::close(fd);
    g.log("disk full (" + std::to_string(filled / 1024) + " KiB filler)");
    const std::size_t rows_at_full = g.rows_distinct();
    std::this_thread::sleep_for(size.disk_full);
    const std::size_t rows_during = g.rows_distinct();
    fs::remove(filler, ec);
    g.mark_fault_end();
    g.log("disk space back; rows " + std::to_string(rows_at_full) + " → " + std::to_string(rows_during) + " while full");
    r.faults["disk_full"] = 1;
    r.notes.push_back(std::to_string(rows_during - std::min(rows_during, rows_at_full)) +
                      " records landed while the disk was full (space freed by SQLite's own pages)");
    conclude(env, g, r, size);
  }
}

// PostgreSQL (a private one) stopped and started again mid-load.
void postgres_restart(const environment& env, const run_size& size, result& r) {
  const std::string launcher = env.source_dir + "/tests/support/postgres_launcher.sh";
  auto o = base_options(env, r.name);
  rig probe(env, o);
  const fs::path state = env.work_dir / ("pg-" + probe.tag());
  if (std::system((quote(launcher) + " start " + quote(state.string()) + " > /dev/null 2>&1").c_str()) != 0) {
    r.problems.push_back("cannot start a PostgreSQL (tests/support/postgres_launcher.sh start)");
    return;
  }
  struct stop_pg {
    std::string cmd;
    ~stop_pg() { (void)std::system(cmd.c_str()); }
  } stopper{quote(launcher) + " stop " + quote(state.string()) + " > /dev/null 2>&1"};
  std::ifstream(state / "url") >> o.pg_url;
  {
    rig g(env, o);
    if (!reset_proxy(env, r) || !start_pipeline(g, r, size)) return;
    sleep_until_t(g, secs(size.load) / 3);
    if (std::system((quote(launcher) + " pause " + quote(state.string()) + " > /dev/null 2>&1").c_str()) != 0)
      r.problems.push_back("postgres_launcher.sh pause failed");
    g.log("PostgreSQL stopped");
    std::this_thread::sleep_for(size.postgres_down);
    if (std::system((quote(launcher) + " resume " + quote(state.string()) + " > /dev/null 2>&1").c_str()) != 0)
      r.problems.push_back("postgres_launcher.sh resume failed");
    g.mark_fault_end();
    g.log("PostgreSQL started again");
    r.faults["postgres_restart"] = 1;
    conclude(env, g, r, size);
  }
}

// Two fleet hosts in network namespaces sharing a private Azurite on the bridge; host b is cut
// off (from host a, or from storage) for size.cut a third into the load.
void two_hosts(const environment& env, const run_size& size, result& r, bool from_storage) {
  if (::geteuid() != 0) {
    r.skipped = true;
    r.skip_reason = "needs root for ip netns";
    return;
  }
  const int id = static_cast<int>(::getpid() % 10000) * 10 + (from_storage ? 1 : 0);
  test_network net;
  if (!net.create_bridge("shcb" + std::to_string(id), "10.214." + std::to_string(id % 250 + 1))) {
    r.skipped = true;
    r.skip_reason = "cannot make a bridge";
    return;
  }
  std::vector<std::string> ns;
  for (int i = 0; i < 2; ++i) {
    ns.push_back("shoalch" + std::to_string(id) + "h" + std::to_string(i));
    if (!net.add(ns.back(), "shc" + std::to_string(id) + "v" + std::to_string(i), 2 + i)) {
      r.skipped = true;
      r.skip_reason = "ip netns / veth set-up failed";
      return;
    }
  }
  const std::string bridge_ip = net.subnet + ".1";
  auto o = base_options(env, r.name);
  rig probe(env, o);
  workers::azurite_options ao;
  ao.executable = fs::path(env.source_dir) / "deploy/local/node_modules/.bin/azurite";
  ao.workspace = env.work_dir / ("azurite-" + probe.tag());
  ao.host = bridge_ip;
  auto az = workers::azurite_process::start(ao);
  if (!az) {
    r.problems.push_back("cannot start Azurite on the bridge: " + az.error().describe());
    return;
  }
  o.storage_cs = o.observe_cs = az->connection_string();
  o.hosts = {host_spec{"hosta", ns[0], net.subnet + ".2", 2}, host_spec{"hostb", ns[1], net.subnet + ".3", 2}};
  {
    rig g(env, o);
    if (!start_pipeline(g, r, size)) return;
    sleep_until_t(g, secs(size.load) / 3);
    const std::string b_ip = net.subnet + ".3", a_ip = net.subnet + ".2";
    bool ok;
    if (from_storage) ok = test_network::cut(ns[1], bridge_ip);
    else ok = test_network::cut(ns[1], a_ip) && test_network::cut(ns[0], b_ip);
    if (!ok) r.problems.push_back("cannot cut the network (ip route add blackhole)");
    g.log(from_storage ? "hostb cut off from storage" : "hostb and hosta cut off from each other");
    std::this_thread::sleep_for(size.cut);
    if (from_storage) test_network::heal(ns[1], bridge_ip);
    else test_network::heal(ns[1], a_ip), test_network::heal(ns[0], b_ip);
    g.mark_fault_end();
    g.log("network healed");
    r.faults[from_storage ? "host_cut_from_storage" : "hosts_cut_apart"] = 1;
    finish_and_check(g, r, size);
    if (!r.problems.empty()) r.notes.push_back(g.logs_tail());
  }
  az->stop();
  std::error_code ec;
  fs::remove_all(ao.workspace, ec);
}

} // namespace

// -- public ----------------------------------------------------------------------------------

environment fixture_environment() {
  environment env;
  env.shoal = shoal_binary();
  env.source_dir = source_dir();
  env.azurite_connection_string = azurite_connection_string();
  env.proxy_connection_string = fault_proxy_connection_string();
  env.proxy_control_port = fault_proxy_control_port();
  env.work_dir = fs::temp_directory_path() / unique_name("shoalchaos");
  env.keep = std::getenv("SHOAL_TEST_KEEP") != nullptr;
  return env;
}

run_size run_size::short_run() {
  run_size s;
  s.load = 18'000ms;
  s.records_per_s = 80;
  s.outage = 10'000ms;
  s.cut = 12'000ms;
  s.disk_full = 6'000ms;
  s.postgres_down = 5'000ms;
  s.settle = 150'000ms;
  return s;
}

run_size run_size::full_run() {
  run_size s;
  s.load = 60'000ms;
  s.records_per_s = 150;
  s.outage = 10'000ms;
  s.cut = 20'000ms;
  s.disk_full = 15'000ms;
  s.sqlite_fs_mib = 96; // 9,000 rows (~10 MiB with indexes) + a 40 MiB WAL, with room to spare
  s.postgres_down = 10'000ms;
  s.settle = 300'000ms;
  return s;
}

std::vector<std::string> scenario_names() {
  return {"kill-workers",     "kill-persistor", "kill-supervisor",  "storage-errors",    "storage-outage",
          "storage-latency", "sqlite-disk-full", "postgres-restart", "hosts-cut-apart", "host-cut-from-storage"};
}

result run_scenario(const std::string& name, const environment& env, const run_size& size) {
  result r;
  r.name = name;
  const auto start = clock_type::now();
  ::signal(SIGPIPE, SIG_IGN); // the producer writes into a FIFO whose reader may die
  if (name == "kill-workers") kill_workers(env, size, r);
  else if (name == "kill-persistor") kill_persistor(env, size, r);
  else if (name == "kill-supervisor") kill_supervisor(env, size, r);
  else if (name == "storage-errors") storage_errors(env, size, r);
  else if (name == "storage-outage") storage_outage(env, size, r);
  else if (name == "storage-latency") storage_latency(env, size, r);
  else if (name == "sqlite-disk-full") sqlite_disk_full(env, size, r);
  else if (name == "postgres-restart") postgres_restart(env, size, r);
  else if (name == "hosts-cut-apart") two_hosts(env, size, r, false);
  else if (name == "host-cut-from-storage") two_hosts(env, size, r, true);
  else r.problems.push_back("unknown scenario '" + name + "'");
  r.seconds = secs(clock_type::now() - start);
  return r;
}

std::string format_table(const std::vector<result>& results) {
  static const std::map<std::string, std::string> short_names{
      {"server_busy", "503"},
      {"server_busy_retry_after", "503+Retry-After"},
      {"operation_timed_out", "500"},
      {"operation_timed_out_after", "500 after executing"},
      {"reset_before_response", "reset"},
      {"reset_mid_body", "reset mid-body"},
      {"latency", "latency"},
      {"stall", "stall"},
      {"outage", "outage resets"},
      {"sigkill_worker", "SIGKILL worker"},
      {"sigkill_persistor", "SIGKILL persistor"},
      {"sigkill_supervisor", "SIGKILL supervisor"},
      {"disk_full", "disk full"},
      {"postgres_restart", "PostgreSQL restart"},
      {"hosts_cut_apart", "hosts cut apart"},
      {"host_cut_from_storage", "host cut from storage"}};
  std::ostringstream t;
  t << "| scenario | records | faults injected | kills | recovery | lost | duplicate rows | dead letters | storage requests | time |\n"
    << "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : results) {
    if (r.skipped) {
      t << "| " << r.name << " | skipped: " << r.skip_reason << " | | | | | | | | |\n";
      continue;
    }
    std::string faults;
    for (const auto& [k, v] : r.faults) {
      auto it = short_names.find(k);
      faults += (faults.empty() ? "" : ", ") + (it == short_names.end() ? k : it->second) + " " + std::to_string(v);
    }
    t << "| " << r.name << (r.problems.empty() ? "" : " **FAILED**") << " | " << r.records << " | " << faults << " | "
      << r.kills << " | " << (r.recovery_s ? fmt1(*r.recovery_s) + " s" : "-") << " | " << r.lost << " | "
      << r.duplicates << " | " << r.quarantined << " of " << r.bad << " bad" << (r.dead ? " + " + std::to_string(r.dead) + " dead" : "")
      << " | " << r.storage_requests << " | " << fmt1(r.seconds) << " s |\n";
  }
  return t.str();
}

// -- the soak --------------------------------------------------------------------------------

soak_result run_soak(const environment& env, std::chrono::seconds duration, double records_per_s,
                     std::chrono::seconds every) {
  soak_result out;
  ::signal(SIGPIPE, SIG_IGN);
  rig_options o;
  o.scenario = "soak";
  o.storage_cs = o.observe_cs = env.azurite_connection_string;
  o.lease_ms = 30'000;
  o.request_timeout_ms = 30'000;
  rig g(env, o);
  result r;
  run_size size;
  size.load = duration;
  size.records_per_s = records_per_s;
  size.settle = 600'000ms;
  if (!start_pipeline(g, r, size)) {
    out.problems = r.problems;
    return out;
  }
  out.csv = g.dir() / "soak.csv";
  std::ofstream csv(out.csv);
  csv << "t_s,process,pid,rss_kib,fds,rows\n";
  // The first sample ("start") once every process runs its own program and each worker has made
  // its job (its SQLite database is open): a child sampled between fork and exec, or a supervisor
  // whose workers are not started yet, read 0.0 MiB and "-", and a worker just after exec ~3 MiB.
  const std::size_t want_workers = static_cast<std::size_t>(g.options().hosts.front().workers);
  auto execed = [](pid_t pid, const char* word) {
    return pid > 0 && rss_kib(pid) > 0 && command_line(pid).find(word) != std::string::npos;
  };
  auto has_open = [](pid_t pid, const fs::path& file) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec))
      if (fs::read_symlink(e.path(), ec) == file) return true;
    return false;
  };
  const bool up = eventually(
      [&] {
        auto w = g.workers(0);
        const auto senders = children_of(::getpid(), " send ");
        return execed(g.persistor_pid(), " persistor") && execed(g.supervisor_pid(0), " supervisor") &&
               w.size() == want_workers &&
               std::all_of(w.begin(), w.end(),
                           [&](pid_t p) { return execed(p, " worker") && has_open(p, g.options().sqlite_path); }) &&
               senders.size() == 1 && execed(senders.front(), " send ");
      },
      120s, 100ms);
  if (!up) out.problems.push_back("the pipeline's processes were not all up within 120 s");
  const auto start = clock_type::now();
  for (;;) {
    soak_sample s;
    s.t_s = secs(clock_type::now() - start);
    s.rows = g.rows_distinct();
    auto add = [&](const std::string& role, pid_t pid) {
      if (pid <= 0) return;
      const long rss = rss_kib(pid), fds = open_fds(pid);
      if (rss < 0) return;
      s.processes[role] = {rss, fds};
      csv << fmt1(s.t_s) << ',' << role << ',' << pid << ',' << rss << ',' << fds << ',' << s.rows << '\n';
    };
    add("persistor", g.persistor_pid());
    add("supervisor", g.supervisor_pid(0));
    auto w = g.workers(0);
    std::sort(w.begin(), w.end());
    for (std::size_t i = 0; i < w.size(); ++i) add("worker " + std::to_string(i + 1), w[i]);
    for (pid_t p : children_of(::getpid(), " send ")) add("send", p);
    add("azurite", env.azurite_pid);
    if (env.log)
      env.log("[soak " + fmt1(s.t_s) + "s] rows " + std::to_string(s.rows) + ", persistor " +
              std::to_string(s.processes["persistor"].first / 1024) + " MiB");
    out.samples.push_back(std::move(s));
    if (clock_type::now() - start >= duration) break;
    std::this_thread::sleep_for(every);
  }
  finish_and_check(g, r, size);
  out.records = r.records;
  out.problems = r.problems;
  // Nothing may grow without bound: from the middle to the end, RSS by at most 10 % + 8 MiB and
  // open descriptors by at most 4. Judged on runs of 5 minutes or more only: in a shorter one
  // the middle is still the start-up (the CTest check of the first sample runs 20 s).
  if (out.samples.size() >= 3 && duration >= std::chrono::minutes(5)) {
    const auto& mid = out.samples[out.samples.size() / 2];
    const auto& end = out.samples.back();
    for (const auto& [role, v] : end.processes) {
      auto it = mid.processes.find(role);
      if (it == mid.processes.end()) continue;
      const auto [rss0, fd0] = it->second;
      const auto [rss1, fd1] = v;
      if (rss1 > rss0 + rss0 / 10 + 8 * 1024)
        out.problems.push_back(role + ": RSS grew from " + std::to_string(rss0 / 1024) + " to " + std::to_string(rss1 / 1024) +
                               " MiB in the second half");
      if (fd1 > fd0 + 4)
        out.problems.push_back(role + ": open descriptors grew from " + std::to_string(fd0) + " to " + std::to_string(fd1) +
                               " in the second half");
    }
  }
  return out;
}

std::string format_soak(const soak_result& r) {
  if (r.samples.empty()) return "(no samples)\n";
  const soak_sample* picks[3] = {&r.samples.front(), &r.samples[r.samples.size() / 2], &r.samples.back()};
  std::ostringstream t;
  t << "| process | RSS at " << fmt1(picks[0]->t_s / 60) << " min | at " << fmt1(picks[1]->t_s / 60) << " min | at "
    << fmt1(picks[2]->t_s / 60) << " min | fds at start | middle | end |\n|---|---:|---:|---:|---:|---:|---:|\n";
  std::set<std::string> roles;
  for (const auto* s : picks)
    for (const auto& [role, v] : s->processes) roles.insert(role);
  for (const auto& role : roles) {
    t << "| " << role;
    for (const auto* s : picks) {
      auto it = s->processes.find(role);
      t << " | " << (it == s->processes.end() ? std::string("-") : fmt1(static_cast<double>(it->second.first) / 1024) + " MiB");
    }
    for (const auto* s : picks) {
      auto it = s->processes.find(role);
      t << " | " << (it == s->processes.end() ? std::string("-") : std::to_string(it->second.second));
    }
    t << " |\n";
  }
  t << "\nrecords in SQL: " << picks[0]->rows << " → " << picks[1]->rows << " → " << picks[2]->rows << " (" << r.records
    << " sent)\n";
  return t.str();
}

} // namespace shoal::tests::chaos
