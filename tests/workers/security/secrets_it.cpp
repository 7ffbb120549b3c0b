// Secrets out of sight and no silent fallback (issue 15 items 3–5), with real processes:
//  - `shoal run`: /proc/PID/cmdline of every process it starts (persistor, send, supervisor,
//    workers) holds no account key, read over and over while they run;
//  - supervisor, worker, persistor and `etl run` without a connection string exit 2 saying
//    why; --dev-storage gets them past that;
//  - a process of the same user as a shoal daemon (the exec job's command) cannot read the
//    daemon's /proc/PID/environ: every shoal process is non-dumpable;
//  - `shoal etl --postgres` refuses a URL holding a password;
//  - `shoal records show` prints a payload's control characters escaped;
//  - `shoal init`: modes 0644/0600, never through a planted symlink, TOML strings escaped, the
//    unit deploy/systemd/shoal-persistor.service with the paths filled in, CURVE keys for a
//    non-loopback push endpoint; every shipped unit requires its environment file and is
//    sandboxed as a `shoal` user.

#include "tests/workers/security/security_harness.hpp"
#include "workers/config.hpp"

#include <grp.h>
#include <sys/stat.h>

#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace shoal::tests::security {
namespace {

// Every process whose ancestry reaches `root`, with its argv (NUL-separated, as in /proc).
std::map<pid_t, std::string> descendants(pid_t root) {
  std::map<pid_t, pid_t> parent;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0])))
      continue;
    const std::string stat = slurp(e.path() / "stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos)
      continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    parent[static_cast<pid_t>(std::stol(name))] = ppid;
  }
  std::map<pid_t, std::string> out;
  for (const auto& [pid, ppid] : parent) {
    pid_t p = ppid;
    for (int hops = 0; hops < 16 && p > 1; ++hops) {
      if (p == root) {
        out[pid] = slurp("/proc/" + std::to_string(pid) + "/cmdline");
        break;
      }
      auto it = parent.find(p);
      p = it == parent.end() ? 0 : it->second;
    }
  }
  return out;
}

// The value of AccountKey= in a connection string.
std::string account_key(const std::string& cs) {
  const auto at = cs.find("AccountKey=");
  if (at == std::string::npos)
    return {};
  return cs.substr(at + 11, cs.find(';', at) - at - 11);
}

class Secrets : public security_test {};

TEST_F(Secrets, NoChildOfShoalRunHasTheAccountKeyOnItsCommandLine) {
  const std::string key = account_key(cs_);
  ASSERT_FALSE(key.empty()) << cs_;
  const std::string name = unique_name("sec");
  std::string lower;
  for (char c : name)
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::ofstream(dir_ / "shoal.toml") << "[work]\ntable = \"" << name << "w\"\n"
                                     << "[etl]\ncontainer = \"" << lower << "\"\nruns_table = \"" << name << "r\"\n"
                                     << "[persistor]\ncontainer = \"" << lower << "\"\n"
                                     << "[catalog]\ntable = \"" << name << "c\"\n"
                                     << "[fleet]\ntable = \"" << name << "f\"\n";
  {
    std::ofstream data(dir_ / "records.ndjson");
    for (int i = 0; i < 400; ++i)
      data << "{\"n\":" << i << ",\"note\":\"secret-test\"}\n";
  }
  const fs::path log = dir_ / "run.log";
  // The key reaches `shoal run` the way a service gets it: in the environment.
  auto run = spawn_shoal({"--config", (dir_ / "shoal.toml").string(), "--log-level", "warn", "run", "--dataset",
                          (dir_ / "records.ndjson").string(), "--workers", "2", "--db", (dir_ / "run.db").string(),
                          "--run-dir", (dir_ / "run").string()},
                         storage_env(), log);
  std::set<std::string> roles;
  std::size_t seen = 0;
  std::optional<int> status;
  while (!(status = run.wait(10ms))) {
    for (const auto& [pid, cmdline] : descendants(run.pid())) {
      ++seen;
      EXPECT_EQ(cmdline.find(key), std::string::npos) << "pid " << pid << ": " << cmdline;
      EXPECT_EQ(cmdline.find("AccountKey"), std::string::npos) << "pid " << pid << ": " << cmdline;
      for (const char* role : {"persistor", "send", "supervisor", "worker"})
        if (cmdline.find(std::string(1, '\0') + role + '\0') != std::string::npos)
          roles.insert(role);
    }
  }
  ASSERT_EQ(*status, 0) << slurp(log);
  EXPECT_NE(slurp(log).find("verification: PASSED"), std::string::npos) << slurp(log);
  // Every kind of child was looked at while it ran.
  EXPECT_EQ(roles, (std::set<std::string>{"persistor", "send", "supervisor", "worker"})) << seen << " samples";
  // And it said which storage it used, without the key.
  EXPECT_NE(slurp(log).find("storage: account devstoreaccount1"), std::string::npos) << slurp(log);
  EXPECT_EQ(slurp(log).find(key), std::string::npos);
}

TEST_F(Secrets, DaemonsWithoutAConnectionStringExitSayingWhy) {
  // Nothing anywhere: no flag, no config file, empty variables (shoal treats them as unset).
  const std::vector<std::pair<std::string, std::string>> none{{"AZURE_STORAGE_CONNECTION_STRING", ""},
                                                              {"SHOAL_STORAGE_CONNECTION_STRING", ""},
                                                              {"SHOAL_STORAGE_CONNECTION_STRING_FILE", ""},
                                                              {"SHOAL_CONFIG", ""}};
  const std::vector<std::vector<std::string>> daemons{
      {"supervisor", "--workers", "1"},
      {"worker", "--slot", "w0", "--supervisor", "ipc://" + (dir_ / "none.sock").string()},
      {"persistor", "--endpoint", "tcp://127.0.0.1:0"},
      {"etl", "--sqlite", (dir_ / "x.db").string(), "run", "--once"}};
  for (const auto& args : daemons) {
    const fs::path log = dir_ / (args[0] + ".log");
    auto p = spawn_shoal(args, none, log);
    EXPECT_EQ(wait_exit(p, 30s), 2) << args[0] << ": " << slurp(log);
    EXPECT_NE(slurp(log).find("shoal " + args[0] + ": no storage connection string"), std::string::npos)
        << slurp(log);
    EXPECT_NE(slurp(log).find("--dev-storage"), std::string::npos) << slurp(log);
  }
  // --dev-storage says it out loud: the persistor gets past the check (and then finds no
  // emulator on 127.0.0.1:10000 in this test, or uses one: either way it was asked for).
  const fs::path log = dir_ / "dev.log";
  auto p = spawn_shoal({"--dev-storage", "persistor", "--endpoint", "tcp://127.0.0.1:0"}, none, log);
  ASSERT_TRUE(wait_for_text(log, "storage account devstoreaccount1", 30s)) << slurp(log);
  EXPECT_NE(slurp(log).find("from --dev-storage"), std::string::npos) << slurp(log);
  EXPECT_EQ(slurp(log).find("no storage connection string"), std::string::npos);
  p.signal(SIGTERM);
  (void)wait_exit(p, 30s);
}

// What a process of `user` (an uid, run through util-linux's setpriv) reads of another
// process's /proc/PID/environ: the text, or nullopt when the kernel refuses it.
std::optional<std::string> read_environ_as(uid_t user, pid_t pid, const fs::path& out) {
  workers::child_options o;
  const std::string id = std::to_string(user);
  o.argv = {"/usr/bin/setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups", "--",
            "/bin/cat", "/proc/" + std::to_string(pid) + "/environ"};
  o.output = out;
  auto c = workers::child_process::spawn(o);
  if (!c)
    return std::nullopt;
  if (wait_exit(*c, 30s) != 0)
    return std::nullopt;
  return slurp(out);
}

TEST_F(Secrets, ACommandOfTheSameUserCannotReadAShoalProcesssEnvironment) {
  // The exec job's command runs as its worker's user and could read /proc/PPID/environ, the
  // connection string included; every shoal process makes itself non-dumpable at start, so
  // only a process with CAP_SYS_PTRACE can. Needs root to run both sides as another user.
  if (::geteuid() != 0)
    GTEST_SKIP() << "needs root to run the processes as an unprivileged user";
  const uid_t nobody = 65534;
  workers::child_options o;
  o.env = {{"AZURE_STORAGE_CONNECTION_STRING", cs_}}; // the fixture's, AccountKey included

  // The control: a plain program of the same user gives its environment away, so the reader
  // below is able to see a secret where the kernel lets it.
  o.argv = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/sleep", "60"};
  o.output = dir_ / "sleep.log";
  auto plain = workers::child_process::spawn(o);
  ASSERT_TRUE(plain) << plain.error().describe();
  std::optional<std::string> seen;
  for (int i = 0; i < 300 && !(seen && seen->find("AccountKey") != std::string::npos); ++i)
    seen = read_environ_as(nobody, plain->pid(), dir_ / "plain.environ"); // until setpriv has exec'd
  ASSERT_TRUE(seen);
  EXPECT_NE(seen->find("AccountKey"), std::string::npos);
  plain->signal(SIGKILL);

  // A shoal process of the same user: its persistor, running until told to stop.
  o.argv = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
            shoal_binary(), "persistor", "--endpoint", "tcp://127.0.0.1:0"};
  o.output = dir_ / "persistor.log";
  auto daemon = workers::child_process::spawn(o);
  ASSERT_TRUE(daemon) << daemon.error().describe();
  ASSERT_TRUE(wait_for_text(o.output, "persistor: listening on", 30s)) << slurp(o.output);
  EXPECT_FALSE(read_environ_as(nobody, daemon->pid(), dir_ / "shoal.environ"))
      << slurp(dir_ / "shoal.environ");
  EXPECT_EQ(slurp(dir_ / "shoal.environ").find("AccountKey"), std::string::npos);
  // Root (CAP_SYS_PTRACE) still can: the environment is there, only hidden from the user.
  EXPECT_NE(slurp("/proc/" + std::to_string(daemon->pid()) + "/environ").find("AccountKey"), std::string::npos);
  daemon->signal(SIGTERM);
  (void)wait_exit(*daemon, 30s);
}

TEST_F(Secrets, APostgresPasswordOnTheCommandLineIsRefused) {
  const fs::path log = dir_ / "pg.log";
  auto p = spawn_shoal({"etl", "--postgres", "postgresql://shoal:hunter2@127.0.0.1:1/etl", "run", "--once"},
                       storage_env(), log);
  EXPECT_EQ(wait_exit(p, 30s), 2) << slurp(log);
  EXPECT_NE(slurp(log).find("PGPASSFILE"), std::string::npos) << slurp(log);
  EXPECT_EQ(slurp(log).find("hunter2"), std::string::npos) << slurp(log);
}

TEST_F(Secrets, RecordsShowEscapesControlCharactersOfAPayload) {
  const std::string table = unique_name("secrec");
  const std::vector<std::pair<std::string, std::string>> env{{"AZURE_STORAGE_CONNECTION_STRING", cs_},
                                                             {"SHOAL_WORK_TABLE", table}};
  const std::string payload = "ok\x1b[2J\x1b]0;owned\x07\r\xc2\x9b" "31m end";
  const fs::path log = dir_ / "enqueue.log";
  auto e = spawn_shoal({"records", "enqueue", "r1", "--queue", "exec", "--payload", payload}, env, log);
  ASSERT_EQ(wait_exit(e, 60s), 0) << slurp(log);
  const fs::path show = dir_ / "show.log";
  auto s = spawn_shoal({"records", "show", "r1", "--queue", "exec"}, env, show);
  ASSERT_EQ(wait_exit(s, 60s), 0) << slurp(show);
  const std::string text = slurp(show);
  EXPECT_NE(text.find("ok\\x1b[2J\\x1b]0;owned\\x07\\r\\u009b31m end"), std::string::npos) << text;
  EXPECT_EQ(text.find('\x1b'), std::string::npos);
  EXPECT_EQ(text.find('\x07'), std::string::npos);
  EXPECT_EQ(text.find("\xc2\x9b"), std::string::npos);
  const fs::path json = dir_ / "show.json";
  auto j = spawn_shoal({"--json", "records", "show", "r1", "--queue", "exec"}, env, json);
  ASSERT_EQ(wait_exit(j, 60s), 0) << slurp(json);
  EXPECT_EQ(slurp(json).find('\x1b'), std::string::npos);
  EXPECT_NE(slurp(json).find("\\u001b[2J"), std::string::npos) << slurp(json);
}

std::string mode_of(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0)
    return "missing";
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return buf;
}

TEST_F(Secrets, InitWritesPrivateFilesOnPurposeEscapedAndNeverThroughASymlink) {
  const fs::path out = dir_ / "etc";
  fs::create_directories(out);
  // A planted symlink where the environment file goes: init must not write through it.
  const fs::path victim = dir_ / "victim";
  { std::ofstream(victim) << "precious\n"; }
  fs::create_symlink(victim, out / "shoal-persistor-edge.env");
  const std::string queue = "in\"q\\ue\nue\x7f";
  const fs::path log = dir_ / "init.log";
  auto i = spawn_shoal({"init", "--mode", "pull-queue", "--dir", out.string(), "--name", "edge", "--queue", queue,
                        "--bin", "/usr/local/bin/shoal"},
                       {}, log);
  ASSERT_EQ(wait_exit(i, 30s), 0) << slurp(log);
  EXPECT_EQ(mode_of(out / "shoal-persistor-edge.toml"), "0644");
  EXPECT_EQ(mode_of(out / "shoal-persistor-edge.service"), "0644");
  EXPECT_TRUE(fs::is_symlink(out / "shoal-persistor-edge.env")); // kept, reported as kept
  EXPECT_EQ(slurp(victim), "precious\n");
  EXPECT_NE(slurp(log).find("kept"), std::string::npos);
  // The queue name went through TOML escaping: the file loads and gives it back unchanged.
  auto c = workers::load_config(out / "shoal-persistor-edge.toml");
  ASSERT_TRUE(c) << c.error().describe() << "\n" << slurp(out / "shoal-persistor-edge.toml");
  EXPECT_EQ(c->persistor.queue, queue);
  // With the symlink gone, --force writes a real 0600 file.
  fs::remove(out / "shoal-persistor-edge.env");
  auto again = spawn_shoal({"init", "--mode", "pull-queue", "--dir", out.string(), "--name", "edge", "--force",
                            "--bin", "/usr/local/bin/shoal"},
                           {}, log);
  ASSERT_EQ(wait_exit(again, 30s), 0) << slurp(log);
  EXPECT_EQ(mode_of(out / "shoal-persistor-edge.env"), "0600");
  // The unit is the shipped template with the paths filled in.
  std::string unit = slurp(fs::path(source_dir()) / "deploy" / "systemd" / "shoal-persistor.service");
  auto fill = [&](const std::string& from, const std::string& to) {
    for (auto at = unit.find(from); at != std::string::npos; at = unit.find(from, at + to.size()))
      unit.replace(at, from.size(), to);
  };
  fill("@BIN@", "/usr/local/bin/shoal");
  fill("@CONFIG@", (out / "shoal-persistor-edge.toml").string());
  fill("@ENV@", (out / "shoal-persistor-edge.env").string());
  fill("@NAME@", "edge");
  fill("@MODE@", "pull-queue");
  EXPECT_EQ(slurp(out / "shoal-persistor-edge.service"), unit);
  // A path systemd would split or expand is refused.
  auto bad = spawn_shoal({"init", "--dir", out.string(), "--name", "odd", "--bin", "/opt/my shoal/bin/shoal"}, {}, log);
  EXPECT_EQ(wait_exit(bad, 30s), 2) << slurp(log);
}

TEST_F(Secrets, InitGivesANonLoopbackPushPersistorCurveKeysAndItsConfigRefusesPlainStarts) {
  const fs::path out = dir_ / "etc";
  const fs::path log = dir_ / "init.log";
  auto i = spawn_shoal({"init", "--mode", "push", "--dir", out.string(), "--name", "p9", "--bin", "/usr/local/bin/shoal"},
                       {}, log);
  ASSERT_EQ(wait_exit(i, 30s), 0) << slurp(log);
  EXPECT_EQ(mode_of(out / "keys" / "persistor-p9.key"), ::geteuid() == 0 && ::getgrnam("shoal") ? "0440" : "0600");
  EXPECT_EQ(mode_of(out / "keys" / "persistor-p9.pub"), "0644");
  auto c = workers::load_config(out / "shoal-persistor-p9.toml");
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->persistor.endpoint, "tcp://0.0.0.0:5590");
  EXPECT_EQ(c->persistor.curve_secret_key, (out / "keys" / "persistor-p9.key").string());
  EXPECT_EQ(c->persistor.curve_allow_dir, (out / "producers").string());
  EXPECT_TRUE(fs::is_directory(out / "producers"));
  // Re-running never replaces the key pair producers already hold.
  const std::string pub = slurp(out / "keys" / "persistor-p9.pub");
  auto again = spawn_shoal({"init", "--mode", "push", "--dir", out.string(), "--name", "p9", "--force",
                            "--bin", "/usr/local/bin/shoal"},
                           {}, log);
  ASSERT_EQ(wait_exit(again, 30s), 0) << slurp(log);
  EXPECT_EQ(slurp(out / "keys" / "persistor-p9.pub"), pub);
}

TEST(SystemdUnits, RequireTheirEnvironmentFileAndRunSandboxedAsShoal) {
  for (const char* name : {"shoal-persistor.service", "shoal-supervisor.service", "shoal-etl.service"}) {
    const std::string unit = slurp(fs::path(source_dir()) / "deploy" / "systemd" / name);
    ASSERT_FALSE(unit.empty()) << name;
    auto has_line = [&](const std::string& line) {
      return unit.find("\n" + line + "\n") != std::string::npos;
    };
    const auto env = unit.find("\nEnvironmentFile=");
    ASSERT_NE(env, std::string::npos) << name;
    EXPECT_NE(unit[env + 17], '-') << name << ": required, no '-'";
    EXPECT_EQ(unit.find("EnvironmentFile=-"), std::string::npos) << name;
    for (const char* line : {"User=shoal", "Group=shoal", "NoNewPrivileges=yes", "ProtectSystem=strict",
                             "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet="})
      EXPECT_TRUE(has_line(line)) << name << ": " << line;
    EXPECT_NE(unit.find("\nReadWritePaths=/var/lib/shoal"), std::string::npos) << name;
    EXPECT_EQ(unit.find("--connection-string"), std::string::npos) << name;
  }
}

} // namespace
} // namespace shoal::tests::security
