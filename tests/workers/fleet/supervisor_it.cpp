// `shoal supervisor` against a fake worker (fake_worker.cpp: the ctl.* protocol and nothing
// else): restarts, hung-worker detection, release of a dead worker's claims, drain on SIGTERM,
// SIGHUP resizing, the restart backoff, `shoal status` and /metrics.

#include "tests/support/fault_proxy.hpp"
#include "tests/workers/fleet/fleet_harness.hpp"

#include <fcntl.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <sstream>

#ifndef SHOAL_TEST_FAKE_WORKER
#error "SHOAL_TEST_FAKE_WORKER must name the fake worker executable"
#endif

namespace shoal::tests::fleet {
namespace {

using workers::fleet::fleet_status;

std::string toml(const std::string& table, int workers, const std::string& extra = "") {
  return "[work]\ntable = \"" + table + "\"\nlease_ms = 60000\nlease_renew_ms = 20000\n" +
         "[fleet]\ntable = \"" + table + "f\"\nworkers = " + std::to_string(workers) +
         "\nheartbeat_interval_ms = 100\nheartbeat_liveness = 3\ndrain_timeout_ms = 5000\n" + extra;
}

class SupervisorIt : public ::testing::Test {
protected:
  fs::path dir = fs::temp_directory_path() / unique_name("shoalsup");
  std::string table = unique_name("sup");
  void TearDown() override {
    if (!HasFailure())
      fs::remove_all(dir);
  }
  std::vector<std::string> fake() { return {"--worker-program", SHOAL_TEST_FAKE_WORKER}; }
};

std::string read_file(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST_F(SupervisorIt, StartsNWorkersAndRestartsOneThatCrashes) {
  supervisor_process sup(dir, toml(table, 3), fake(), {{"FAKE_HEARTBEAT_MS", "100"}});
  auto s = sup.status_when([](const fleet_status& s) { return live_workers(s) == 3; }, milliseconds(20'000));
  ASSERT_TRUE(s) << sup.log();
  ASSERT_EQ(live_workers(*s), 3u) << sup.log();
  EXPECT_EQ(s->workers_wanted, 3u);
  EXPECT_EQ(s->hosts.size(), 1u);
  EXPECT_FALSE(s->workers[0].shards.empty()); // 16 shards split 6/5/5
  const auto w1 = slot_of(*s, "w1");
  ASSERT_TRUE(w1);
  ASSERT_GT(w1->pid, 0);

  ::kill(static_cast<pid_t>(w1->pid), SIGKILL);
  auto after = sup.status_when(
      [&](const fleet_status& s) {
        auto w = slot_of(s, "w1");
        return w && w->pid != w1->pid && w->pid > 0 && w->state == "idle";
      },
      milliseconds(10'000));
  ASSERT_TRUE(after);
  auto w = slot_of(*after, "w1");
  ASSERT_TRUE(w);
  EXPECT_NE(w->pid, w1->pid) << sup.log();
  EXPECT_EQ(w->restarts, 1u);
  EXPECT_EQ(slot_of(*after, "w0")->restarts, 0u); // the others were not touched
}

TEST_F(SupervisorIt, ReleasesADeadWorkersClaimsAtOnce) {
  auto t = make_table(table);
  const std::string queue = "fq";
  std::vector<workers::new_record> recs;
  for (int i = 0; i < 5; ++i)
    recs.push_back({"r" + std::to_string(i), "x", {}});
  ASSERT_TRUE(t.enqueue(queue, recs));
  const auto once = dir / "claimed-once";
  supervisor_process sup(dir, toml(table, 1), fake(),
                         {{"FAKE_CLAIM_TABLE", table}, {"FAKE_CLAIM_QUEUE", queue}, {"FAKE_CLAIM_ONCE", once.string()}});
  ASSERT_TRUE(eventually([&] { return count_of(t, queue, workers::record_status::claimed) == 5; },
                         milliseconds(20'000)))
      << sup.log();
  auto s = sup.status_when([](const fleet_status& s) { return live_workers(s) == 1; }, milliseconds(5000));
  ASSERT_TRUE(s);
  const auto pid = slot_of(*s, "w0")->pid;
  ::kill(static_cast<pid_t>(pid), SIGKILL);
  const auto killed = std::chrono::steady_clock::now();
  // The lease is 120 s: only the supervisor's release brings them back this soon.
  ASSERT_TRUE(eventually([&] { return count_of(t, queue, workers::record_status::pending) == 5; },
                         milliseconds(5000)))
      << sup.log();
  EXPECT_LT(std::chrono::steady_clock::now() - killed, milliseconds(2000));
  auto r = t.get(queue, "r0", false);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->attempts, 1); // the dead worker's attempt counts
}

// The records a dead worker held go back to pending and the supervisor says so to its other
// workers (work.available for every shard) instead of leaving them to the next fallback poll.
TEST_F(SupervisorIt, WakesItsWorkersAfterReleasingADeadWorkersClaims) {
  auto t = make_table(table);
  const std::string queue = "fq";
  std::vector<workers::new_record> recs;
  for (int i = 0; i < 4; ++i)
    recs.push_back({"r" + std::to_string(i), "x", {}});
  ASSERT_TRUE(t.enqueue(queue, recs));
  fs::create_directories(dir);
  const auto once = dir / "claimed-once";
  const auto events = dir / "events";
  supervisor_process sup(dir, toml(table, 2), fake(),
                         {{"FAKE_CLAIM_TABLE", table}, {"FAKE_CLAIM_QUEUE", queue},
                          {"FAKE_CLAIM_ONCE", once.string()}, {"FAKE_EVENTS", events.string()}});
  ASSERT_TRUE(eventually([&] { return count_of(t, queue, workers::record_status::claimed) == 4; },
                         milliseconds(20'000)))
      << sup.log();
  auto s = sup.status_when([](const fleet_status& s) { return live_workers(s) == 2; }, milliseconds(5000));
  ASSERT_TRUE(s) << sup.log();
  // Which slot claimed ("claimed {slot} {pid}"): kill that one; the other must be woken.
  std::string claimer;
  ASSERT_TRUE(eventually(
      [&] {
        std::istringstream in(read_file(events));
        for (std::string ev, slot, pid; in >> ev;) {
          if (ev == "claimed" && in >> slot)
            claimer = slot;
          std::getline(in, pid);
        }
        return !claimer.empty();
      },
      milliseconds(5000)));
  const std::string other = claimer == "w0" ? "w1" : "w0";
  ::kill(static_cast<pid_t>(slot_of(*s, claimer)->pid), SIGKILL);
  ASSERT_TRUE(eventually([&] { return count_of(t, queue, workers::record_status::pending) == 4; },
                         milliseconds(10'000)))
      << sup.log();
  const std::string wake = "wake " + queue + " -1 4 " + other + " ";
  EXPECT_TRUE(eventually([&] { return read_file(events).find(wake) != std::string::npos; }, milliseconds(5000)))
      << read_file(events) << sup.log();
}

TEST_F(SupervisorIt, KillsAndReplacesAWorkerThatStopsHeartbeating) {
  supervisor_process sup(dir, toml(table, 2), fake());
  auto s = sup.status_when([](const fleet_status& s) { return live_workers(s) == 2; }, milliseconds(20'000));
  ASSERT_TRUE(s && live_workers(*s) == 2) << sup.log();
  const auto old = slot_of(*s, "w0")->pid;
  ::kill(static_cast<pid_t>(old), SIGSTOP);
  auto after = sup.status_when(
      [&](const fleet_status& s) {
        auto w = slot_of(s, "w0");
        return w && w->pid > 0 && w->pid != old && w->state == "idle";
      },
      milliseconds(10'000));
  ASSERT_TRUE(after);
  EXPECT_NE(slot_of(*after, "w0")->pid, old) << sup.log();
  EXPECT_NE(sup.log().find("heartbeats missed"), std::string::npos) << sup.log();
  EXPECT_NE(::kill(static_cast<pid_t>(old), 0), 0); // the stopped one is gone
}

TEST_F(SupervisorIt, SigtermDrainsEveryWorkerAndExitsZero) {
  const auto events = dir / "events";
  supervisor_process sup(dir, toml(table, 3), fake(), {{"FAKE_EVENTS", events.string()}});
  auto s = sup.status_when([](const fleet_status& s) { return live_workers(s) == 3; }, milliseconds(20'000));
  ASSERT_TRUE(s && live_workers(*s) == 3) << sup.log();
  sup.proc().signal(SIGTERM);
  auto rc = sup.proc().wait(milliseconds(10'000));
  ASSERT_TRUE(rc) << sup.log();
  EXPECT_EQ(*rc, 0) << sup.log();
  const auto ev = read_file(events);
  for (const char* slot : {"w0", "w1", "w2"})
    EXPECT_NE(ev.find(std::string("bye ") + slot), std::string::npos) << ev;
  for (const auto& w : s->workers)
    EXPECT_NE(::kill(static_cast<pid_t>(w.pid), 0), 0) << w.slot;
}

// Issue 19, a joining host's first claim: the workers start while the supervisor joins the
// fleet, not after. Joining is slowed down here (every PUT and MERGE of the table service, the
// fleet table's host row and lease writes, waits 3 s at a proxy; the work table's create is a
// POST, not slowed): the workers say hello before the supervisor has joined (it prints its
// "listening" line and answers ctl.status only once joined), and get their ctl.assign after.
TEST_F(SupervisorIt, StartsItsWorkersWhileItJoinsTheFleet) {
  auto proxy = tests::fault_proxy::listen({azurite_connection_string()});
  ASSERT_TRUE(proxy) << proxy.error().describe();
  proxy->start();
  tests::fault_plan slow;
  tests::fault_rule lag;
  lag.kind = tests::fault_kind::latency;
  lag.services = {"table"};
  lag.methods = {"PUT", "MERGE"};
  lag.delay = milliseconds(3'000);
  slow.rules.push_back(lag);
  proxy->set_plan(slow);
  const auto events = dir / "events";
  supervisor_process sup(dir, toml(table, 2), fake(), {{"FAKE_EVENTS", events.string()}},
                         proxy->connection_string());
  ASSERT_TRUE(eventually([&] { return read_file(events).find("hello w1") != std::string::npos; }, milliseconds(30'000)))
      << read_file(events) << sup.log();
  EXPECT_EQ(sup.log().find("listening on"), std::string::npos) << "joined before its workers said hello\n" << sup.log();
  EXPECT_EQ(read_file(events).find("assign"), std::string::npos) << "a ctl.assign before joining\n" << read_file(events);
  proxy->set_plan({});
  auto s = sup.status_when(
      [](const fleet_status& s) {
        return live_workers(s) == 2 && !s.workers[0].shards.empty() && !s.workers[1].shards.empty();
      },
      milliseconds(30'000));
  ASSERT_TRUE(s && live_workers(*s) == 2) << sup.log();
  const auto ev = read_file(events);
  EXPECT_NE(ev.find("assign "), std::string::npos) << ev;
  EXPECT_EQ(ev.find("[]"), std::string::npos) << "a ctl.assign of every shard (an empty list) before the fleet's\n" << ev;
}

TEST_F(SupervisorIt, SighupGrowsAndShrinksTheFleetWithoutTouchingHealthyWorkers) {
  supervisor_process sup(dir, toml(table, 2), fake());
  auto s = sup.status_when([](const fleet_status& s) { return live_workers(s) == 2; }, milliseconds(20'000));
  ASSERT_TRUE(s && live_workers(*s) == 2) << sup.log();
  const auto w0 = slot_of(*s, "w0")->pid;
  const auto w1 = slot_of(*s, "w1")->pid;

  sup.rewrite_config(toml(table, 4));
  sup.proc().signal(SIGHUP);
  s = sup.status_when([](const fleet_status& s) { return live_workers(s) == 4; }, milliseconds(10'000));
  ASSERT_TRUE(s && live_workers(*s) == 4) << sup.log();
  EXPECT_EQ(slot_of(*s, "w0")->pid, w0);
  EXPECT_EQ(slot_of(*s, "w1")->pid, w1);
  EXPECT_EQ(s->workers_wanted, 4u);

  sup.rewrite_config(toml(table, 1));
  sup.proc().signal(SIGHUP);
  s = sup.status_when([](const fleet_status& s) { return s.workers.size() == 1; }, milliseconds(10'000));
  ASSERT_TRUE(s && s->workers.size() == 1) << sup.log();
  EXPECT_EQ(slot_of(*s, "w0")->pid, w0);
  EXPECT_EQ(slot_of(*s, "w0")->shards.size(), 16u); // the one left claims every shard
}

TEST_F(SupervisorIt, ACrashLoopingSlotBacksOff) {
  supervisor_process sup(dir,
                         toml(table, 1, "restart_intensity = 2\nrestart_period_ms = 60000\nrestart_backoff_ms = 60000\n"),
                         fake(), {{"FAKE_EXIT_AFTER_MS", "50"}});
  auto s = sup.status_when(
      [](const fleet_status& s) { return !s.workers.empty() && s.workers[0].state == "backoff"; },
      milliseconds(15'000));
  ASSERT_TRUE(s) << sup.log();
  EXPECT_EQ(s->workers[0].state, "backoff") << sup.log();
  EXPECT_EQ(s->workers[0].restarts, 2u);
}

TEST_F(SupervisorIt, StatusCommandPrintsJsonAndSaysWhenNoSupervisorAnswers) {
  const int port = free_port();
  auto t = make_table(table); // the queue counts need the table
  supervisor_process sup(dir, toml(table, 2, "metrics_port = " + std::to_string(port) + "\n"), fake());
  ASSERT_TRUE(sup.status_when([](const fleet_status& s) { return live_workers(s) == 2; }, milliseconds(20'000)))
      << sup.log();
  auto run = [&](const std::string& args, int& status) {
    const std::string cmd = "'" + shoal_binary() + "' --config '" + (sup.dir() / "shoal.toml").string() +
                            "' --connection-string '" + azurite_connection_string() + "' status " + args + " 2>&1";
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    std::array<char, 4096> buf{};
    std::size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0)
      out.append(buf.data(), n);
    int st = ::pclose(p);
    status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    return out;
  };
  int rc = -1;
  auto json = run("--json --supervisor '" + sup.endpoint() + "'", rc);
  EXPECT_EQ(rc, 0) << json;
  auto st = workers::fleet::parse_status(json);
  ASSERT_TRUE(st) << json;
  EXPECT_EQ(st->workers.size(), 2u);
  EXPECT_TRUE(st->queues.contains("exec")) << json;

  auto table_text = run("--supervisor '" + sup.endpoint() + "'", rc);
  EXPECT_EQ(rc, 0);
  EXPECT_NE(table_text.find("w1"), std::string::npos) << table_text;

  auto none = run("--timeout-ms 300 --supervisor ipc://" + (dir / "nobody.sock").string(), rc);
  EXPECT_EQ(rc, 1) << none;
  EXPECT_NE(none.find("no supervisor answered"), std::string::npos) << none;
  EXPECT_NE(none.find("exec"), std::string::npos) << none; // the queue counts from the table

  auto metrics = http_get(port, "/metrics");
  for (const char* name : {"shoal_claims_total", "shoal_completions_total", "shoal_contention_total",
                           "shoal_lease_lost_total", "shoal_worker_restarts_total", "shoal_missed_heartbeats_total",
                           "shoal_hwm_drops_total", "shoal_workers{state=\"idle\"} 2"})
    EXPECT_NE(metrics.find(name), std::string::npos) << name << "\n" << metrics;
  EXPECT_TRUE(eventually([&] { return http_get(port, "/metrics").find("shoal_records{") != std::string::npos; },
                         milliseconds(10'000)));
}

} // namespace
} // namespace shoal::tests::fleet
