// Issue 5, single host ("What this issue must show", label system): a supervisor with real
// `shoal worker` processes running the exec job on records of the fixture's Azurite.
//  (a) 4 workers process 2,000 records exactly once while `shoal status --json` shows them;
//  (b) kill -9 of a worker mid-run: restarted, its claims pending again within 2 s (the lease is
//      60 s, so only the supervisor's release explains it), every record done once;
//  (c) SIGSTOP of a worker: detected by missed heartbeats, killed and replaced;
//  (d) SIGTERM to the supervisor mid-run: every process exits 0, no record left claimed;
//  (e) SIGKILL of the supervisor alone (issue 16): its workers drain and exit instead of running
//      on unsupervised, leaving nothing claimed.
// The exec command appends $SHOAL_RECORD_ID to a file (one small O_APPEND write: atomic).

#include "tests/support/processes.hpp"
#include "tests/workers/fleet/fleet_harness.hpp"

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <map>
#include <set>

namespace shoal::tests::fleet {
namespace {

using workers::fleet::fleet_status;
using workers::record_status;

class FleetSystemIt : public ::testing::Test {
protected:
  fs::path dir = fs::temp_directory_path() / unique_name("shoalfleet");
  std::string table = unique_name("fleet");
  std::string queue = "sys";
  fs::path out = dir / "out.txt";
  std::optional<workers::work_table> t;

  void SetUp() override {
    fs::create_directories(dir);
    t.emplace(make_table(table, 60'000));
  }
  void TearDown() override {
    if (!HasFailure())
      fs::remove_all(dir);
  }

  void enqueue(int n) {
    std::vector<workers::new_record> recs;
    for (int i = 0; i < n; ++i) {
      char id[16];
      std::snprintf(id, sizeof id, "r%05d", i);
      recs.push_back({id, "payload", {}});
    }
    auto r = t->enqueue(queue, recs);
    ASSERT_TRUE(r) << r.error().describe();
    ASSERT_EQ(r->inserted, static_cast<std::size_t>(n));
  }

  std::string toml(int workers, const std::string& command_prefix = "") {
    return "[work]\ntable = \"" + table + "\"\nlease_ms = 60000\nlease_renew_ms = 20000\n" +
           "[worker]\njob = \"exec\"\nqueue = \"" + queue + "\"\nexec_command = '" + command_prefix +
           "echo \"$SHOAL_RECORD_ID\" >> " + out.string() + "'\npoll_min_ms = 100\npoll_max_ms = 500\n" +
           "drain_timeout_ms = 5000\n" + "[fleet]\ntable = \"" + table + "f\"\nworkers = " +
           std::to_string(workers) + "\nheartbeat_interval_ms = 200\nheartbeat_liveness = 3\ndrain_timeout_ms = 10000\n";
  }

  // Lines of the output file: id → how many times it was run.
  std::map<std::string, int> runs() {
    std::map<std::string, int> m;
    std::ifstream f(out);
    std::string line;
    while (std::getline(f, line))
      if (!line.empty())
        ++m[line];
    return m;
  }

  // Every record done, each id run exactly once, except ids a fault gave back (attempts ≥ 2:
  // the killed worker may have run it before it could complete it). Returns the duplicates.
  int expect_all_done_once(int n) {
    EXPECT_EQ(count_of(*t, queue, record_status::done), static_cast<std::size_t>(n));
    auto m = runs();
    EXPECT_EQ(m.size(), static_cast<std::size_t>(n));
    int dups = 0;
    for (const auto& [id, k] : m) {
      if (k == 1)
        continue;
      ++dups;
      auto r = t->get(queue, id, false);
      EXPECT_TRUE(r && r->attempts >= 2) << id << " ran " << k << " times without a fault";
    }
    return dups;
  }

  std::string run_status_json(const std::string& endpoint) {
    const std::string cmd = "'" + shoal_binary() + "' --connection-string '" + azurite_connection_string() +
                            "' status --json --supervisor '" + endpoint + "' 2>/dev/null";
    std::string text;
    FILE* p = ::popen(cmd.c_str(), "r");
    std::array<char, 4096> buf{};
    std::size_t k;
    while ((k = std::fread(buf.data(), 1, buf.size(), p)) > 0)
      text.append(buf.data(), k);
    ::pclose(p);
    return text;
  }
};

TEST_F(FleetSystemIt, FourWorkersProcess2000RecordsExactlyOnceWhileStatusShowsThem) {
  const int n = 2000;
  enqueue(n);
  supervisor_process sup(dir / "sup", toml(4), {});
  bool seen_four = false;
  std::string last_json;
  ASSERT_TRUE(eventually(
      [&] {
        if (!seen_four) {
          last_json = run_status_json(sup.endpoint());
          auto s = workers::fleet::parse_status(last_json);
          seen_four = s && s->workers.size() == 4 && live_workers(*s) == 4 && s->queues.contains(queue);
        }
        return count_of(*t, queue, record_status::done) == static_cast<std::size_t>(n);
      },
      milliseconds(90'000)))
      << sup.log();
  EXPECT_TRUE(seen_four) << last_json;
  EXPECT_EQ(expect_all_done_once(n), 0);
  sup.proc().signal(SIGTERM);
  EXPECT_EQ(sup.proc().wait(milliseconds(20'000)), std::optional<int>(0)) << sup.log();
}

TEST_F(FleetSystemIt, KilledWorkerIsRestartedAndItsClaimsReleasedWithinTwoSeconds) {
  const int n = 600;
  enqueue(n);
  supervisor_process sup(dir / "sup", toml(3, "sleep 0.05; "), {});
  // Mid-run: some done, and a worker holding records in the table (its owner string is
  // "{host}/{slot}/{pid}", workers/fleet/ctl_protocol.hpp).
  std::string owner;
  std::optional<workers::fleet::worker_status> victim;
  ASSERT_TRUE(eventually(
      [&] {
        if (count_of(*t, queue, record_status::done) < 60)
          return false;
        auto s = ask_status(sup.endpoint());
        auto claimed = t->list(queue, record_status::claimed, 10'000);
        if (!s || !claimed)
          return false;
        for (const auto& r : *claimed)
          for (const auto& w : s->workers)
            if (w.pid > 0 && r.owner == workers::fleet::worker_owner(s->host, w.slot, w.pid)) {
              victim = w;
              owner = r.owner;
              return true;
            }
        return false;
      },
      milliseconds(60'000)))
      << sup.log();
  ::kill(static_cast<pid_t>(victim->pid), SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  auto held_by_victim = [&] {
    auto claimed = t->list(queue, record_status::claimed, 10'000);
    if (!claimed)
      return std::size_t{1};
    std::size_t k = 0;
    for (const auto& r : *claimed)
      k += r.owner == owner;
    return k;
  };
  ASSERT_TRUE(eventually([&] { return held_by_victim() == 0; }, milliseconds(10'000))) << sup.log();
  EXPECT_LT(std::chrono::steady_clock::now() - killed, milliseconds(2000)) << "claims released late";

  auto s = sup.status_when(
      [&](const fleet_status& s) {
        auto w = slot_of(s, victim->slot);
        return w && w->pid > 0 && w->pid != victim->pid && w->restarts >= 1;
      },
      milliseconds(10'000));
  ASSERT_TRUE(s);
  EXPECT_NE(slot_of(*s, victim->slot)->pid, victim->pid) << sup.log();

  ASSERT_TRUE(eventually([&] { return count_of(*t, queue, record_status::done) == static_cast<std::size_t>(n); },
                         milliseconds(90'000)))
      << sup.log();
  expect_all_done_once(n);
}

TEST_F(FleetSystemIt, StoppedWorkerIsDetectedByHeartbeatKilledAndReplaced) {
  const int n = 300;
  enqueue(n);
  supervisor_process sup(dir / "sup", toml(2, "sleep 0.02; "), {});
  auto s = sup.status_when([](const fleet_status& s) { return live_workers(s) == 2; }, milliseconds(30'000));
  ASSERT_TRUE(s && live_workers(*s) == 2) << sup.log();
  const auto old = slot_of(*s, "w0")->pid;
  ::kill(static_cast<pid_t>(old), SIGSTOP);
  const auto stopped = std::chrono::steady_clock::now();
  s = sup.status_when(
      [&](const fleet_status& s) {
        auto w = slot_of(s, "w0");
        return w && w->pid > 0 && w->pid != old;
      },
      milliseconds(10'000));
  ASSERT_TRUE(s);
  EXPECT_NE(slot_of(*s, "w0")->pid, old) << sup.log();
  // 3 × 200 ms of silence, plus a restart delay: well under 5 s.
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, milliseconds(5000));
  EXPECT_NE(sup.log().find("heartbeats missed"), std::string::npos) << sup.log();
  ASSERT_TRUE(eventually([&] { return count_of(*t, queue, record_status::done) == static_cast<std::size_t>(n); },
                         milliseconds(90'000)))
      << sup.log();
  expect_all_done_once(n);
}

TEST_F(FleetSystemIt, SigtermToTheSupervisorDrainsEveryProcessWithExitZeroAndNothingClaimed) {
  const int n = 2000;
  enqueue(n);
  supervisor_process sup(dir / "sup", toml(4, "sleep 0.02; "), {});
  ASSERT_TRUE(eventually([&] { return count_of(*t, queue, record_status::done) >= 100; }, milliseconds(60'000)))
      << sup.log();
  auto s = ask_status(sup.endpoint());
  ASSERT_TRUE(s);
  sup.proc().signal(SIGTERM);
  auto rc = sup.proc().wait(milliseconds(30'000));
  ASSERT_TRUE(rc) << sup.log();
  EXPECT_EQ(*rc, 0) << sup.log();
  const auto log = sup.log();
  EXPECT_EQ(log.find("exited with status"), std::string::npos) << log;
  EXPECT_EQ(log.find("killed by signal"), std::string::npos) << log;
  for (const auto& w : s->workers) {
    EXPECT_NE(log.find("worker " + w.slot + " (pid " + std::to_string(w.pid) + ") exited cleanly"), std::string::npos)
        << w.slot << "\n" << log;
    EXPECT_NE(::kill(static_cast<pid_t>(w.pid), 0), 0) << w.slot;
  }
  EXPECT_EQ(count_of(*t, queue, record_status::claimed), 0u);
  EXPECT_LT(count_of(*t, queue, record_status::done), static_cast<std::size_t>(n)); // it was mid-run
  // Nothing ran twice: a drain finishes or releases, it never loses a completion.
  for (const auto& [id, k] : runs())
    EXPECT_EQ(k, 1) << id;
}

TEST_F(FleetSystemIt, KilledSupervisorsWorkersDrainAndExitInsteadOfRunningUnsupervised) {
  const int n = 2000;
  enqueue(n);
  supervisor_process sup(dir / "sup", toml(2, "sleep 0.05; "), {});
  ASSERT_TRUE(eventually([&] { return count_of(*t, queue, record_status::done) >= 20; }, milliseconds(60'000)))
      << sup.log();
  auto s = sup.status_when([](const fleet_status& s) { return live_workers(s) == 2; }, milliseconds(10'000));
  ASSERT_TRUE(s && live_workers(*s) == 2) << sup.log();
  std::vector<pid_t> workers;
  for (const auto& w : s->workers) workers.push_back(static_cast<pid_t>(w.pid));
  sup.proc().signal(SIGKILL);
  ASSERT_TRUE(sup.proc().wait(milliseconds(5000)));
  // Without their supervisor the workers finish what they run (a record takes 50 ms) or release
  // it within drain_timeout_ms (5 s), and exit; before, they reconnected and ran on forever.
  const bool gone = eventually(
      [&] { return std::none_of(workers.begin(), workers.end(), [](pid_t p) { return process_alive(p); }); },
      milliseconds(15'000));
  for (pid_t p : workers)
    if (process_alive(p))
      ::kill(p, SIGKILL);
  ASSERT_TRUE(gone) << "the workers of a dead supervisor still run\n" << sup.log();
  EXPECT_NE(sup.log().find("is gone; draining and exiting"), std::string::npos) << sup.log();
  EXPECT_EQ(count_of(*t, queue, record_status::claimed), 0u) << "a drained worker left a claim";
  EXPECT_LT(count_of(*t, queue, record_status::done), static_cast<std::size_t>(n));
  for (const auto& [id, k] : runs())
    EXPECT_EQ(k, 1) << id;
}

} // namespace
} // namespace shoal::tests::fleet
