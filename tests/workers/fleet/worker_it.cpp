// `shoal worker` against Azurite (workers/fleet/worker.hpp): the engine in-process against a
// fake supervisor ROUTER (hello, heartbeats, assign, work.available, drain → bye, malformed
// frames, reconnect), drain and lease loss with a fake job, and the real `shoal worker` process
// running the exec job on 200 records exactly once, then SIGTERM mid-run.

#include "actors/message.hpp"
#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/request_counts.hpp"
#include "transport/socket.hpp"
#include "workers/child_process.hpp"
#include "workers/fleet/ctl_protocol.hpp"
#include "workers/cmd/jobs.hpp"
#include "workers/fleet/worker.hpp"
#include "workers/claim/key_escape.hpp"
#include "workers/claim/work_table.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace shoal::workers::fleet {
namespace {

using namespace std::chrono;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

// -- harness --------------------------------------------------------------------------------------

/// What the fake job saw; shared by every lane's instance.
struct fake_state {
  std::atomic<int> runs{0};
  std::atomic<bool> block{false};  // run until stopped, then return release
  std::atomic<bool> broken{false}; // return a result<> error
  std::mutex mu;
  std::multiset<std::string> ids;  // guarded by mu
};

class fake_job final : public job {
public:
  explicit fake_job(std::shared_ptr<fake_state> s) : s_(std::move(s)) {}
  std::string_view name() const noexcept override { return "fake"; }
  result<job_result> run(claimed_record& r, const job_context& ctx) override {
    {
      std::lock_guard lock(s_->mu);
      s_->ids.insert(r.id);
    }
    s_->runs.fetch_add(1);
    if (s_->broken.load())
      return fail(errc::io, "fake job: the SQL connection is gone");
    if (s_->block.load()) {
      while (!ctx.stop.stop_requested())
        std::this_thread::sleep_for(5ms);
      return job_result{job_verdict::release, {}, "stopped"};
    }
    return job_result{job_verdict::done, {}, "fake ok"};
  }

private:
  std::shared_ptr<fake_state> s_;
};

struct storage_env {
  std::string table_name = tests::unique_name("fleetw");
  std::optional<storage::pipeline> pipe;
  std::optional<work_table> work;

  storage_env() {
    auto account = storage::parse_connection_string(tests::azurite_connection_string());
    EXPECT_TRUE(account);
    if (!account)
      return;
    storage::pipeline_options po;
    po.http.request_timeout = 10'000ms;
    auto p = storage::pipeline::make(*account, po);
    EXPECT_TRUE(p) << p.error().describe();
    pipe = *p;
    auto t = storage::table_client::make(*pipe, table_name);
    EXPECT_TRUE(t) << t.error().describe();
    work_table_options wo;
    wo.work = cfg().work;
    auto w = work_table::make(*t, storage::blob_client(*pipe), wo);
    EXPECT_TRUE(w) << w.error().describe();
    work = *w;
    auto c = work->create_if_missing();
    EXPECT_TRUE(c) << c.error().describe();
  }

  /// A configuration for this test's table: fast heartbeats, a tolerant liveness (the fake
  /// supervisor does not heartbeat), short leases.
  config cfg() const {
    config c;
    c.work.table = table_name;
    c.work.lease_ms = 5'000;
    c.work.lease_renew_ms = 500;
    c.worker.job = "exec";
    c.worker.queue = "fq";
    c.worker.exec_command = "true";
    c.worker.poll_min_ms = 50;
    c.worker.poll_max_ms = 200;
    c.fleet.heartbeat_interval_ms = 50;
    c.fleet.heartbeat_liveness = 1000;
    return c;
  }

  void enqueue(std::string_view queue, int n, std::string_view prefix = "r") {
    std::vector<new_record> recs;
    for (int i = 0; i < n; ++i)
      recs.push_back({std::string(prefix) + std::to_string(i), "payload " + std::to_string(i), {}});
    auto r = work->enqueue(queue, recs);
    ASSERT_TRUE(r) << r.error().describe();
  }

  std::size_t count(std::string_view queue, record_status s) {
    auto c = work->counts(queue);
    EXPECT_TRUE(c) << c.error().describe();
    if (!c)
      return 0;
    auto it = c->by_status.find(s);
    return it == c->by_status.end() ? 0 : it->second;
  }
};

/// A fresh work_table on the same storage table: its own counters, like a separate process.
work_table own_table(const storage_env& e) {
  auto t = storage::table_client::make(*e.pipe, e.table_name);
  work_table_options wo;
  wo.work = e.cfg().work;
  return *work_table::make(*t, storage::blob_client(*e.pipe), wo);
}

/// The fake supervisor: a ROUTER on a free loopback port.
struct fake_router {
  zmq::context_t ctx{1};
  std::optional<transport::envelope_socket> sock;
  std::string endpoint;
  std::vector<std::uint8_t> peer; // routing id of the last message
  msgpack::zone zone;

  fake_router() {
    transport::socket_options so;
    so.linger = 0ms;
    auto s = transport::envelope_socket::make(ctx, zmq::socket_type::router, so);
    EXPECT_TRUE(s);
    sock = std::move(*s);
    // A worker that reconnects comes back with the same routing id (its slot): take it over.
    sock->raw().set(zmq::sockopt::router_handover, 1);
    auto b = sock->bind("tcp://127.0.0.1:*");
    EXPECT_TRUE(b) << b.error().describe();
    endpoint = sock->last_endpoint();
  }

  /// Waits up to `timeout` for a message of `M`'s kind (others are skipped), decoded.
  template <class M> std::optional<M> expect(milliseconds timeout = 10'000ms,
                                             const std::function<bool(const M&)>& want = {}) {
    const auto until = steady_clock::now() + timeout;
    while (steady_clock::now() < until) {
      auto in = sock->receive(100ms);
      if (!in)
        continue;
      peer = in->routing_id;
      if (in->env.kind != M::kind)
        continue;
      auto m = actors::decode_body<M>(in->env.body, zone);
      EXPECT_TRUE(m) << m.error().message;
      if (m && (!want || want(*m)))
        return *m;
    }
    return std::nullopt;
  }

  template <class M> void send(const M& m) {
    transport::envelope e;
    e.id = transport::new_message_id();
    e.kind = std::string(M::kind);
    e.from = "supervisor@test@localhost";
    e.ts_ns = 1;
    actors::encode_body(m, e.body);
    auto r = sock->send(peer, e);
    EXPECT_TRUE(r) << r.error().describe();
  }

  void send_raw_kind(std::string_view kind, std::vector<std::uint8_t> body) {
    transport::envelope e;
    e.id = transport::new_message_id();
    e.kind = std::string(kind);
    e.from = "supervisor@test@localhost";
    e.ts_ns = 1;
    e.body = std::move(body);
    auto r = sock->send(peer, e);
    EXPECT_TRUE(r) << r.error().describe();
  }

  void send_garbage() {
    const std::vector<std::uint8_t> junk = {0xc1, 0xff, 0x00, 0x13, 0x37};
    auto r = sock->send_encoded(junk, peer);
    EXPECT_TRUE(r) << r.error().describe();
  }
};

/// Runs a worker on its own thread; joins it on destruction (draining it first if needed).
struct running_worker {
  std::unique_ptr<worker> w;
  std::thread t;
  std::optional<result<worker_stats>> outcome;

  explicit running_worker(std::unique_ptr<worker> wk) : w(std::move(wk)) {
    t = std::thread([this] { outcome = w->run(); });
  }
  void join() {
    if (t.joinable())
      t.join();
  }
  ~running_worker() {
    if (t.joinable()) {
      w->drain(1ms, "test teardown");
      t.join();
    }
  }
};

using shoal::tests::eventually; // tests/support/eventually.hpp

/// `n` records whose ids ("{prefix}{i}") fall in `shard` of `shards`.
std::vector<new_record> records_in_shard(const std::string& prefix, std::uint32_t shard, std::size_t n,
                                         std::uint32_t shards) {
  std::vector<new_record> recs;
  for (int i = 0; recs.size() < n; ++i) {
    auto id = prefix + std::to_string(i);
    if (shard_of(id, shards) == shard)
      recs.push_back({id, "payload", {}});
  }
  return recs;
}

job_factory fake_factory(std::shared_ptr<fake_state> s) {
  return [s](const config&) -> result<std::unique_ptr<job>> { return std::make_unique<fake_job>(s); };
}

// -- the engine against a fake supervisor ---------------------------------------------------------

TEST(WorkerIt, HelloHeartbeatsAssignWakeUpAndDrainWithBye) {
  storage_env env;
  fake_router router;
  auto state = std::make_shared<fake_state>();
  worker_options o;
  o.cfg = env.cfg();
  o.cfg.worker.poll_min_ms = 60'000; // the fallback poll is far away: only a wake-up can be fast
  o.cfg.worker.poll_max_ms = 60'000;
  o.slot = "w7";
  o.host = "hostx";
  o.supervisor = router.endpoint;
  o.factory = fake_factory(state);
  auto w = worker::make(own_table(env), o);
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ((*w)->queue(), "fq");
  EXPECT_EQ((*w)->owner(), worker_owner("hostx", "w7", ::getpid()));
  running_worker rw(std::move(*w));

  auto h = router.expect<hello>();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->slot, "w7");
  EXPECT_EQ(h->host, "hostx");
  EXPECT_EQ(h->owner, rw.w->owner());
  EXPECT_EQ(h->pid, ::getpid());
  EXPECT_EQ(h->job, "exec");
  EXPECT_EQ(h->queue, "fq");
  EXPECT_EQ(std::string(router.peer.begin(), router.peer.end()), "w7");
  auto hb = router.expect<heartbeat>();
  ASSERT_TRUE(hb);
  EXPECT_NE(hb->state, static_cast<std::uint8_t>(worker_state::draining));

  // ctl.assign: a newer epoch is applied and reported in heartbeats; an older one is ignored.
  assign a;
  a.epoch = 5;
  a.queue = "fq";
  for (std::uint32_t s = 0; s < o.cfg.work.shards; ++s)
    a.shards.push_back(s);
  router.send(a);
  ASSERT_TRUE(router.expect<heartbeat>(10'000ms, [](const heartbeat& x) { return x.assign_epoch == 5; }));
  a.epoch = 3;
  router.send(a);
  ASSERT_TRUE(eventually([&] { return rw.w->stats().ignored >= 1; }));
  EXPECT_EQ(rw.w->stats().assign_epoch, 5u);

  // Every poll so far found nothing; the next fallback poll is a minute away. A work.available
  // makes the worker claim at once.
  ASSERT_TRUE(eventually([&] { return rw.w->stats().claim_calls >= 1; })) << "the poll after ctl.assign";
  env.enqueue("fq", 3);
  work_available wa;
  wa.queue = "fq";
  router.send(wa);
  ASSERT_TRUE(eventually([&] { return rw.w->stats().done == 3; })) << "done " << rw.w->stats().done;
  EXPECT_EQ(state->runs.load(), 3);
  EXPECT_GE(rw.w->stats().wakeups, 1u);
  ASSERT_TRUE(router.expect<heartbeat>(10'000ms, [](const heartbeat& x) { return x.done == 3 && x.claimed == 3; }));

  // Malformed input is dropped and counted: a frame that is no envelope, a body that does not
  // decode, a body of the wrong shape. The worker stays up and says so in its heartbeats.
  router.send_garbage();
  router.send_raw_kind(assign::kind, {0xc1});
  router.send_raw_kind(work_available::kind, {0x93, 0xc0, 0xc0, 0xc0}); // [nil, nil, nil]
  ASSERT_TRUE(router.expect<heartbeat>(10'000ms, [](const heartbeat& x) { return x.malformed >= 3; }));

  // ctl.drain → ctl.bye, run() returns, nothing is left claimed.
  drain d;
  d.deadline_ms = 5'000;
  d.reason = "test";
  router.send(d);
  auto b = router.expect<bye>();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->done, 3u);
  EXPECT_NE(b->reason.find("test"), std::string::npos) << b->reason;
  rw.join();
  ASSERT_TRUE(rw.outcome && *rw.outcome) << (rw.outcome ? rw.outcome->error().describe() : "no outcome");
  EXPECT_EQ((**rw.outcome).done, 3u);
  EXPECT_EQ(env.count("fq", record_status::claimed), 0u);
  EXPECT_EQ(env.count("fq", record_status::done), 3u);
}

// Issue 20: a work.available naming one shard makes an idle worker claim from that shard alone
// (one ticket query), not poll every shard it is assigned; the fallback poll stays backed off.
TEST(WorkerIt, WakeUpForOneShardQueriesThatShardAlone) {
  storage_env env;
  fake_router router;
  auto state = std::make_shared<fake_state>();
  worker_options o;
  o.cfg = env.cfg();
  o.cfg.worker.poll_min_ms = 60'000; // no fallback poll during the test: only wake-ups claim
  o.cfg.worker.poll_max_ms = 60'000;
  o.slot = "w3";
  o.host = "hostx";
  o.supervisor = router.endpoint;
  o.factory = fake_factory(state);
  ASSERT_GE(o.cfg.work.shards, 4u);
  auto table = own_table(env);
  auto w = worker::make(table, o);
  ASSERT_TRUE(w) << w.error().describe();
  running_worker rw(std::move(*w));
  ASSERT_TRUE(router.expect<hello>());
  // The first (full) poll visits every shard and finds nothing.
  ASSERT_TRUE(eventually([&] { return rw.w->stats().claim_calls >= 1 && table.counters().snapshot().claim_queries >= o.cfg.work.shards; }));
  const auto before = table.counters().snapshot().claim_queries;

  // A wake-up for an empty shard: one query of that shard.
  work_available wa;
  wa.queue = "fq";
  wa.shard = 2;
  router.send(wa);
  ASSERT_TRUE(eventually([&] { return rw.w->stats().wakeups >= 1 && rw.w->stats().claim_calls >= 2; }));
  ASSERT_TRUE(eventually([&] { return table.counters().snapshot().claim_queries >= before + 1; }));
  EXPECT_EQ(table.counters().snapshot().claim_queries, before + 1) << "a wake-up for shard 2 queried other shards too";

  // Records in one shard and a wake-up naming it: claimed and done, with one query per claim.
  ASSERT_TRUE(env.work->enqueue("fq", records_in_shard("s", 5, 3, o.cfg.work.shards)));
  const auto calls = rw.w->stats().claim_calls;
  const auto queries = table.counters().snapshot().claim_queries;
  wa.shard = 5;
  router.send(wa);
  ASSERT_TRUE(eventually([&] { return rw.w->stats().done == 3; })) << "done " << rw.w->stats().done;
  EXPECT_EQ(table.counters().snapshot().claim_queries - queries, rw.w->stats().claim_calls - calls)
      << "every claim after the wake-up visited shard 5 alone";
}

// Issue 19, a joining host's first claim: `shoal supervisor` starts its workers before it joins
// the fleet (--await-assign). Such a worker claims nothing until its first ctl.assign, however
// late, and meanwhile reads the server clock and the meta row of every shard of its queue, so
// that once the assignment comes its first claim is the ticket query and the claim transaction
// alone: no clock read, no meta row.
TEST(WorkerIt, AwaitingItsAssignmentClaimsNothingAndThenOnlyQueriesAndClaims) {
  storage_env env;
  fake_router router;
  auto state = std::make_shared<fake_state>();
  worker_options o;
  o.cfg = env.cfg();
  o.slot = "w5";
  o.host = "hostx";
  o.supervisor = router.endpoint;
  o.await_assign = true;
  o.cfg.worker.poll_min_ms = 60'000; // after the claim the assignment triggers, no poll for a minute
  o.cfg.worker.poll_max_ms = 60'000;
  o.factory = fake_factory(state);
  constexpr std::uint32_t shard = 5;
  ASSERT_TRUE(env.work->enqueue("fq", records_in_shard("a", shard, 3, o.cfg.work.shards)));
  auto table = own_table(env);
  const auto before = storage::process_request_counts();
  auto w = worker::make(table, o);
  ASSERT_TRUE(w) << w.error().describe();
  running_worker rw(std::move(*w));
  ASSERT_TRUE(router.expect<hello>());
  // Without await_assign, a worker that hears no ctl.assign claims from every shard after one
  // second and one heartbeat interval (50 ms). What is tested is that nothing happens during
  // that time, so it waits for 40 heartbeats (2 s) to have been sent.
  ASSERT_TRUE(eventually([&] {
    const auto st = rw.w->stats();
    return st.heartbeats_sent >= 40 && st.storage_prepared;
  })) << "heartbeats " << rw.w->stats().heartbeats_sent;
  EXPECT_EQ(rw.w->stats().claim_calls, 0u);
  EXPECT_EQ(table.counters().snapshot().claim_queries, 0u);
  EXPECT_EQ(state->runs.load(), 0);
  auto prepared = tests::requests_to(env.table_name, before);
  EXPECT_GE(prepared["get"], o.cfg.work.shards) << "a meta row read per shard";
  EXPECT_GE(prepared["query"], 1u) << "the server clock";
  EXPECT_EQ(env.count("fq", record_status::pending), 3u);

  // The assignment: one claim (one ticket query, one transaction), and nothing read again.
  const auto at_assign = storage::process_request_counts();
  const auto queries = table.counters().snapshot().claim_queries;
  assign a;
  a.epoch = 1;
  a.queue = "fq";
  a.shards = {shard};
  router.send(a);
  ASSERT_TRUE(eventually([&] { return rw.w->stats().done == 3; })) << "done " << rw.w->stats().done;
  auto sent = tests::requests_to(env.table_name, at_assign);
  std::string listed;
  for (const auto& [op, n] : sent)
    listed += " " + op + "=" + std::to_string(n);
  SCOPED_TRACE("requests after ctl.assign:" + listed);
  EXPECT_EQ(sent["get"], 0u) << "a meta row read after ctl.assign";
  // Claims of shard 5 alone (one record, then the rest once a run is timed: one ticket query
  // each), and no other query (the server clock).
  const auto claim_queries = table.counters().snapshot().claim_queries - queries;
  EXPECT_GE(claim_queries, 1u);
  EXPECT_EQ(sent["query"], claim_queries) << "a query besides the ticket queries (the server clock) after ctl.assign";
  // A claim of one record is a single merge, of several an entity group transaction; so is a
  // completion. Which of them happens depends on how the runs interleave with the claims.
  EXPECT_GE(sent["batch"] + sent["merge"], 2u) << "the claim and the completion";
  EXPECT_EQ(rw.w->stats().claimed, 3u);
}

TEST(WorkerIt, ReconnectsAndSaysHelloAgainWhenTheSupervisorGoesSilent) {
  storage_env env;
  fake_router router;
  auto state = std::make_shared<fake_state>();
  worker_options o;
  o.cfg = env.cfg();
  o.cfg.fleet.heartbeat_interval_ms = 50;
  o.cfg.fleet.heartbeat_liveness = 3; // 150 ms of silence = dead
  o.slot = "w1";
  o.supervisor = router.endpoint;
  o.factory = fake_factory(state);
  auto w = worker::make(own_table(env), o);
  ASSERT_TRUE(w) << w.error().describe();
  running_worker rw(std::move(*w));
  ASSERT_TRUE(router.expect<hello>());
  // The router never answers: the worker presumes it dead, reconnects, and says hello again,
  // while it keeps working from the table.
  ASSERT_TRUE(router.expect<hello>());
  EXPECT_GE(rw.w->stats().reconnects, 1u);
  env.enqueue("fq", 2);
  ASSERT_TRUE(eventually([&] { return rw.w->stats().done == 2; }));
}

TEST(WorkerIt, DrainStopsBlockedJobsAtTheDeadlineAndReleasesThemUncounted) {
  storage_env env;
  auto state = std::make_shared<fake_state>();
  state->block = true;
  worker_options o;
  o.cfg = env.cfg();
  o.cfg.worker.concurrency = 2;
  o.slot = "w2";
  o.factory = fake_factory(state); // standalone: no supervisor
  env.enqueue("fq", 2);
  auto w = worker::make(own_table(env), o);
  ASSERT_TRUE(w) << w.error().describe();
  running_worker rw(std::move(*w));
  ASSERT_TRUE(eventually([&] { return state->runs.load() == 2; }));
  EXPECT_EQ(rw.w->stats().in_flight, 2u);
  rw.w->drain(300ms, "test");
  rw.join();
  ASSERT_TRUE(rw.outcome && *rw.outcome) << rw.outcome->error().describe();
  EXPECT_EQ((**rw.outcome).released, 2u);
  EXPECT_EQ((**rw.outcome).done, 0u);
  EXPECT_EQ(env.count("fq", record_status::claimed), 0u);
  EXPECT_EQ(env.count("fq", record_status::pending), 2u);
  auto rec = env.work->get("fq", "r0");
  ASSERT_TRUE(rec) << rec.error().describe();
  EXPECT_EQ(rec->attempts, 0); // a drain refunds the attempt
}

TEST(WorkerIt, LostLeaseStopsTheJobAndNothingIsCompleted) {
  storage_env env;
  auto state = std::make_shared<fake_state>();
  state->block = true;
  worker_options o;
  o.cfg = env.cfg();
  o.cfg.work.lease_renew_ms = 100;
  o.slot = "w3";
  o.factory = fake_factory(state);
  env.enqueue("fq", 1);
  auto w = worker::make(own_table(env), o);
  ASSERT_TRUE(w) << w.error().describe();
  running_worker rw(std::move(*w));
  ASSERT_TRUE(eventually([&] { return state->runs.load() == 1; }));
  state->block = false; // the next run (if any) completes at once
  // An operator requeues the claimed record by id: its holder's next renewal gets lease_lost.
  record_selector sel;
  sel.ids = {"r0"};
  auto n = env.work->requeue("fq", sel);
  ASSERT_TRUE(n) << n.error().describe();
  ASSERT_EQ(*n, 1u);
  ASSERT_TRUE(eventually([&] { return rw.w->stats().lease_lost >= 1; }));
  // The worker (or anyone) may claim it again and complete it then; the lost run never did.
  ASSERT_TRUE(eventually([&] { return env.count("fq", record_status::done) == 1; }));
  EXPECT_EQ(rw.w->stats().done, 1u);
  EXPECT_EQ(state->runs.load(), 2);
}

TEST(WorkerIt, BrokenJobReleasesItsRecordAndFailsTheRun) {
  storage_env env;
  auto state = std::make_shared<fake_state>();
  state->broken = true;
  worker_options o;
  o.cfg = env.cfg();
  o.slot = "w4";
  o.factory = fake_factory(state);
  env.enqueue("fq", 1);
  auto w = worker::make(own_table(env), o);
  ASSERT_TRUE(w) << w.error().describe();
  running_worker rw(std::move(*w));
  rw.join();
  ASSERT_TRUE(rw.outcome);
  ASSERT_FALSE(*rw.outcome);
  EXPECT_EQ(rw.outcome->error().code, errc::io);
  EXPECT_EQ(env.count("fq", record_status::claimed), 0u);
  EXPECT_EQ(env.count("fq", record_status::pending), 1u);
}

TEST(WorkerIt, MakeRefusesBadOptions) {
  storage_env env;
  worker_options o;
  o.cfg = env.cfg();
  o.slot = "";
  EXPECT_FALSE(worker::make(own_table(env), o));
  o.slot = "w/1";
  EXPECT_FALSE(worker::make(own_table(env), o));
  o.slot = "w1";
  o.supervisor = "nonsense://x";
  EXPECT_FALSE(worker::make(own_table(env), o));
  o.supervisor.clear();
  o.cfg.worker.exec_command.clear();
  o.factory = cmd::find_job_factory(o.cfg.worker.job);
  auto w = worker::make(own_table(env), o);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, errc::invalid_argument);
}

TEST(WorkerIt, EtlJobFromTheRegistryFailsARecordWhoseBlobIsMissing) {
  storage_env env;
  worker_options o;
  o.cfg = env.cfg();
  o.cfg.storage.connection_string = tests::azurite_connection_string();
  o.cfg.worker.job = "etl";
  o.cfg.worker.queue.clear(); // the etl job's queue: etl.queue
  o.cfg.etl.queue = "feq";
  o.cfg.etl.runs_table = env.table_name + "r";
  o.cfg.etl.container = "nocontainer" + std::to_string(::getpid());
  const fs::path db = fs::temp_directory_path() / (env.table_name + ".db");
  o.cfg.etl.sqlite_path = db.string();
  o.slot = "w5";
  o.factory = cmd::find_job_factory(o.cfg.worker.job);
  env.enqueue("feq", 1, "missing-blob-");
  auto w = worker::make(own_table(env), o);
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ((*w)->queue(), "feq");
  running_worker rw(std::move(*w));
  ASSERT_TRUE(eventually([&] { return rw.w->stats().failed >= 1; }));
  rw.w->drain(2'000ms, "test");
  rw.join();
  ASSERT_TRUE(rw.outcome && *rw.outcome) << rw.outcome->error().describe();
  auto rec = env.work->get("feq", "missing-blob-0");
  ASSERT_TRUE(rec) << rec.error().describe();
  EXPECT_EQ(rec->status, record_status::pending);
  EXPECT_FALSE(rec->last_error.empty());
  std::error_code ec;
  fs::remove(db, ec);
}

// -- batches, batched completions, sweeps ----------------------------------------------------------

/// A job taking up to 5 records per run: every third record fails, the rest are done.
struct batch_state {
  std::mutex mu;
  std::vector<std::size_t> sizes; // records per run_batch call
  std::atomic<int> singles{0};    // run() calls (must stay 0: the worker uses run_batch)
  std::atomic<bool> saw_record_lost{false};
};

class batch_job final : public job {
public:
  explicit batch_job(std::shared_ptr<batch_state> s) : s_(std::move(s)) {}
  std::string_view name() const noexcept override { return "batch"; }
  std::size_t max_batch() const noexcept override { return 5; }
  result<job_result> run(claimed_record&, const job_context&) override {
    s_->singles.fetch_add(1);
    return job_result{job_verdict::done, {}, "single"};
  }
  result<std::vector<job_result>> run_batch(std::span<claimed_record* const> recs, const job_context& ctx) override {
    {
      std::lock_guard lock(s_->mu);
      s_->sizes.push_back(recs.size());
    }
    if (ctx.record_lost && ctx.lease_lost && ctx.lease_deadline) s_->saw_record_lost = true;
    std::vector<job_result> out;
    for (auto* r : recs) {
      const int n = std::stoi(r->id.substr(1));
      if (n % 3 == 0) out.push_back({job_verdict::failed, "multiple of three", {}});
      else out.push_back({job_verdict::done, {}, "batched"});
    }
    return out;
  }

private:
  std::shared_ptr<batch_state> s_;
};

TEST(WorkerIt, BatchJobGetsSeveralRecordsPerRunWithAVerdictEach) {
  storage_env env;
  auto state = std::make_shared<batch_state>();
  worker_options o;
  o.cfg = env.cfg();
  o.cfg.work.max_attempts = 1; // a failure makes the record dead at once
  o.slot = "wb";
  o.factory = [state](const config&) -> result<std::unique_ptr<job>> { return std::make_unique<batch_job>(state); };
  env.enqueue("fq", 30);
  work_table_options wo;
  wo.work = o.cfg.work;
  auto tc = storage::table_client::make(*env.pipe, env.table_name);
  ASSERT_TRUE(tc);
  auto table = *work_table::make(*tc, storage::blob_client(*env.pipe), wo);
  auto w = worker::make(table, o);
  ASSERT_TRUE(w) << w.error().describe();
  running_worker rw(std::move(*w));
  ASSERT_TRUE(eventually([&] {
    return env.count("fq", record_status::done) == 20 && env.count("fq", record_status::dead) == 10;
  }));
  rw.w->drain(2'000ms, "test");
  rw.join();
  ASSERT_TRUE(rw.outcome && *rw.outcome) << rw.outcome->error().describe();
  EXPECT_EQ(state->singles.load(), 0) << "a job with max_batch() > 1 is run through run_batch";
  EXPECT_TRUE(state->saw_record_lost.load()) << "run_batch gets record_lost, lease_lost and lease_deadline";
  std::lock_guard lock(state->mu);
  std::size_t total = 0, biggest = 0;
  for (auto n : state->sizes) {
    EXPECT_LE(n, 5u);
    total += n;
    biggest = std::max(biggest, n);
  }
  EXPECT_EQ(total, 30u);
  EXPECT_GT(biggest, 1u) << "records claimed together are run together";
  EXPECT_EQ((**rw.outcome).done, 20u);
  EXPECT_EQ((**rw.outcome).dead, 10u);
}

TEST(WorkerIt, NoopJobCompletesInBatchesOfOneTransactionPerPartition) {
  storage_env env;
  worker_options o;
  o.cfg = env.cfg();
  o.cfg.worker.job = "noop";
  o.cfg.worker.concurrency = 4;
  o.slot = "wn";
  o.factory = cmd::find_job_factory(o.cfg.worker.job);
  env.enqueue("fq", 300);
  auto table = own_table(env);
  auto w = worker::make(table, o);
  ASSERT_TRUE(w) << w.error().describe();
  running_worker rw(std::move(*w));
  ASSERT_TRUE(eventually([&] { return env.count("fq", record_status::done) == 300; }));
  rw.w->drain(2'000ms, "test");
  rw.join();
  ASSERT_TRUE(rw.outcome && *rw.outcome) << rw.outcome->error().describe();
  const auto& st = **rw.outcome;
  EXPECT_EQ(st.done, 300u);
  const auto c = table.counters().snapshot();
  EXPECT_EQ(c.completions, 300u);
  // Done records are completed together: far fewer completion requests than records, and a
  // claim call takes many records at once.
  EXPECT_LT(c.complete_requests, 150u) << c.complete_requests << " completion requests for 300 records";
  EXPECT_LT(st.complete_calls, 300u);
  EXPECT_LT(st.claim_calls, 150u);
  auto check = env.work->check("fq");
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->problems.empty());
}

// A fast job with completions slower than claims (every entity group transaction, a POST,
// delayed by the fault proxy: a claim writes up to 100 records per transaction, a completion
// 50): the worker must not claim ahead of its completer without bound. Before the high-water
// mark counted done records waiting to be written, the claimer kept claiming while `ready` was
// empty, the backlog outgrew what could be written within a lease, and (bench "scale", 8 hosts)
// workers ended up renewing thousands of records and completing none.
TEST(WorkerIt, AFastJobDoesNotClaimAheadOfItsSlowCompletions) {
  storage_env env;
  tests::fault_proxy_options po;
  po.upstream_connection_string = tests::azurite_connection_string();
  auto proxy = tests::fault_proxy::listen(po);
  ASSERT_TRUE(proxy) << proxy.error().describe();
  proxy->start();
  tests::fault_plan plan;
  tests::fault_rule slow_writes;
  slow_writes.kind = tests::fault_kind::latency;
  slow_writes.services = {"table"};
  slow_writes.methods = {"POST"};
  slow_writes.delay = 150ms;
  plan.rules.push_back(slow_writes);
  proxy->set_plan(plan);
  auto account = storage::parse_connection_string(proxy->connection_string());
  ASSERT_TRUE(account) << account.error().describe();
  storage::pipeline_options pio;
  pio.http.request_timeout = 10'000ms;
  auto pipe = storage::pipeline::make(*account, pio);
  ASSERT_TRUE(pipe) << pipe.error().describe();
  auto tc = storage::table_client::make(*pipe, env.table_name);
  ASSERT_TRUE(tc) << tc.error().describe();
  work_table_options wo;
  wo.work = env.cfg().work;
  auto table = work_table::make(*tc, storage::blob_client(*pipe), wo);
  ASSERT_TRUE(table) << table.error().describe();

  constexpr int n = 1'500;
  env.enqueue("fq", n);
  worker_options o;
  o.cfg = env.cfg();
  o.cfg.worker.job = "noop";
  o.cfg.worker.concurrency = 4;
  o.cfg.work.lease_ms = 30'000; // the bound under test, not lease expiry, keeps the backlog small
  o.cfg.work.lease_renew_ms = 10'000;
  o.slot = "wslow";
  o.factory = cmd::find_job_factory(o.cfg.worker.job);
  auto w = worker::make(*table, o);
  ASSERT_TRUE(w) << w.error().describe();
  running_worker rw(std::move(*w));
  // The high-water mark: the ready target (≤ 2 × claim_batch) + one run per lane + one
  // completion transaction's worth (50).
  const std::size_t bound = 2 * o.cfg.work.claim_batch + 4 + 50;
  std::uint32_t most_held = 0;
  ASSERT_TRUE(eventually(
      [&] {
        most_held = std::max(most_held, rw.w->stats().in_flight);
        return env.count("fq", record_status::done) == n;
      },
      120'000ms));
  rw.w->drain(2'000ms, "test");
  rw.join();
  ASSERT_TRUE(rw.outcome && *rw.outcome) << rw.outcome->error().describe();
  EXPECT_EQ((*rw.outcome)->done, static_cast<std::uint64_t>(n));
  EXPECT_EQ((*rw.outcome)->lease_lost, 0u);
  EXPECT_GT(most_held, 0u);
  EXPECT_LE(most_held, bound) << "the worker held " << most_held << " records at once";
  EXPECT_GT(proxy->stats()["injected"]["latency"].get<int>(), 0);
  auto check = env.work->check("fq");
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->problems.empty());
}

TEST(WorkerIt, SweepsItsShardsDoneRecordsPastTheRetention) {
  storage_env env;
  worker_options o;
  o.cfg = env.cfg();
  o.cfg.work.done_retention_ms = 0; // sweep every 2 s, anything done
  o.cfg.worker.job = "noop";
  o.slot = "ws";
  o.factory = cmd::find_job_factory(o.cfg.worker.job);
  env.enqueue("fq", 20);
  auto w = worker::make(own_table(env), o);
  ASSERT_TRUE(w) << w.error().describe();
  running_worker rw(std::move(*w));
  ASSERT_TRUE(eventually([&] {
    auto c = env.work->counts("fq");
    return c && c->swept == 20;
  }));
  auto c = env.work->counts("fq");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->by_status[record_status::done], 20u) << "swept records are still counted as done";
  auto gone = env.work->get("fq", "r3");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
  EXPECT_GE(rw.w->stats().swept, 20u);
}

// -- the real `shoal worker` process --------------------------------------------------------------

struct process_env {
  storage_env storage;
  fs::path dir = fs::temp_directory_path() / tests::unique_name("shoalworker");
  fs::path out = dir / "ids.txt";

  process_env() {
    fs::create_directories(dir);
    std::ofstream(dir / "shoal.toml") << "[work]\ntable = \"" << storage.table_name
                                      << "\"\nlease_ms = 10000\nlease_renew_ms = 2000\n"
                                      << "[worker]\npoll_min_ms = 50\npoll_max_ms = 500\n"
                                      << "drain_timeout_ms = 10000\n";
  }
  ~process_env() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  result<child_process> start(const std::string& exec, int concurrency) {
    child_options co;
    co.argv = {tests::shoal_binary(), "--config", (dir / "shoal.toml").string(),
               "--connection-string", tests::azurite_connection_string(), "--log-level", "info",
               "worker", "--standalone", "--slot", "p1", "--queue", "pq", "--concurrency",
               std::to_string(concurrency), "--exec", exec};
    co.output = dir / "worker.log";
    return child_process::spawn(co);
  }

  std::vector<std::string> lines() {
    std::ifstream in(out);
    std::vector<std::string> v;
    for (std::string l; std::getline(in, l);)
      v.push_back(l);
    return v;
  }

  std::string log() {
    std::ifstream in(dir / "worker.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
};

TEST(WorkerIt, ShoalWorkerRunsTheExecJobOnEveryRecordExactlyOnce) {
  process_env e;
  e.storage.enqueue("pq", 200, "id-");
  auto c = e.start("cat >/dev/null; echo \"$SHOAL_RECORD_ID\" >> '" + e.out.string() + "'", 4);
  ASSERT_TRUE(c) << c.error().describe();
  ASSERT_TRUE(eventually([&] { return e.storage.count("pq", record_status::done) == 200; }, 60'000ms))
      << e.log();
  c->signal(SIGTERM);
  auto st = c->wait(20'000ms);
  ASSERT_TRUE(st) << e.log();
  EXPECT_EQ(*st, 0) << e.log();
  auto ids = e.lines();
  EXPECT_EQ(ids.size(), 200u);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 200u);
  EXPECT_EQ(e.storage.count("pq", record_status::claimed), 0u);
  EXPECT_NE(e.log().find("200 done"), std::string::npos) << e.log();
}

TEST(WorkerIt, ShoalWorkerDrainsOnSigtermMidRunAndLeavesNothingClaimed) {
  process_env e;
  e.storage.enqueue("pq", 60, "slow-");
  auto c = e.start("sleep 0.3; echo \"$SHOAL_RECORD_ID\" >> '" + e.out.string() + "'", 2);
  ASSERT_TRUE(c) << c.error().describe();
  ASSERT_TRUE(eventually([&] { return e.storage.count("pq", record_status::done) >= 4; }, 60'000ms))
      << e.log();
  c->signal(SIGTERM);
  auto st = c->wait(30'000ms);
  ASSERT_TRUE(st) << e.log();
  EXPECT_EQ(*st, 0) << e.log();
  EXPECT_EQ(e.storage.count("pq", record_status::claimed), 0u) << e.log();
  const auto done = e.storage.count("pq", record_status::done);
  EXPECT_LT(done, 60u);
  auto ids = e.lines();
  // In-flight records finished within the drain timeout and were completed: every side effect
  // belongs to a done record, each once.
  EXPECT_EQ(ids.size(), done);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size());
}

// Issue 19 (a joining host's first claim within two heartbeats): a supervised `shoal worker`
// says hello, applies its ctl.assign and heartbeats before any storage round trip; its storage
// set-up goes on beside. Here every storage connection is reset (the fault proxy's outage) and
// the work table does not exist: the worker still joins and answers its supervisor, keeps
// trying to create the table, creates it once storage is back, and does the records. (It used
// to create the table first and exit 1 without a word to its supervisor.)
TEST(WorkerIt, SupervisedShoalWorkerJoinsBeforeStorageAnswersAndMakesTheTableOnceItDoes) {
  auto proxy = tests::fault_proxy::listen({tests::azurite_connection_string()});
  ASSERT_TRUE(proxy) << proxy.error().describe();
  proxy->start();
  tests::fault_plan cut;
  tests::fault_rule outage;
  outage.kind = tests::fault_kind::outage;
  cut.rules.push_back(outage);
  proxy->set_plan(cut);

  // The table as the test sees it, straight on Azurite: not created.
  const std::string table_name = tests::unique_name("fleetj");
  auto account = storage::parse_connection_string(tests::azurite_connection_string());
  ASSERT_TRUE(account);
  auto pipe = storage::pipeline::make(*account);
  ASSERT_TRUE(pipe);
  auto t = storage::table_client::make(*pipe, table_name);
  ASSERT_TRUE(t);
  work_table_options wo;
  auto work = work_table::make(*t, storage::blob_client(*pipe), wo);
  ASSERT_TRUE(work);

  const fs::path dir = fs::temp_directory_path() / tests::unique_name("shoalworkerj");
  fs::create_directories(dir);
  // The fake supervisor sends no heartbeats: a liveness of a minute keeps the worker from
  // reconnecting meanwhile.
  std::ofstream(dir / "shoal.toml") << "[work]\ntable = \"" << table_name << "\"\n"
                                    << "[worker]\npoll_min_ms = 50\npoll_max_ms = 200\n"
                                    << "[fleet]\nheartbeat_interval_ms = 100\nheartbeat_liveness = 600\n";
  fake_router router;
  child_options co;
  co.argv = {tests::shoal_binary(), "--config", (dir / "shoal.toml").string(), "--connection-string",
             proxy->connection_string(), "--log-level", "info", "worker", "--slot", "j1", "--supervisor",
             router.endpoint, "--job", "noop", "--queue", "jq"};
  co.output = dir / "worker.log";
  auto c = child_process::spawn(co);
  ASSERT_TRUE(c) << c.error().describe();
  auto log = [&] {
    std::ifstream in(dir / "worker.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  };

  auto h = router.expect<hello>(30'000ms);
  ASSERT_TRUE(h) << "no hello while storage is unreachable\n" << log();
  EXPECT_EQ(h->slot, "j1");
  assign a;
  a.epoch = 1;
  a.queue = "jq";
  for (std::uint32_t s = 0; s < config{}.work.shards; ++s)
    a.shards.push_back(s);
  router.send(a);
  ASSERT_TRUE(router.expect<heartbeat>(30'000ms, [](const heartbeat& x) { return x.assign_epoch == 1; }))
      << "ctl.assign not applied while storage is unreachable\n" << log();
  EXPECT_FALSE(c->wait(0ms)) << log();
  // Everything so far happened without storage: the worker's storage requests were reset (the
  // pipeline's four attempts of one call at least), and the table is still not there.
  ASSERT_TRUE(eventually([&] { return proxy->stats()["injected"].value("outage", 0) >= 4; }, 30'000ms))
      << proxy->stats().dump() << "\n" << log();
  auto missing = work->counts("jq");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found) << missing.error().describe();

  // Storage is back: the worker makes the table and does the records.
  proxy->set_plan({});
  ASSERT_TRUE(eventually([&] { return work->counts("jq").has_value(); }, 60'000ms)) << log();
  std::vector<new_record> recs;
  for (int i = 0; i < 20; ++i)
    recs.push_back({"j" + std::to_string(i), "x", {}});
  ASSERT_TRUE(work->enqueue("jq", recs));
  work_available wa;
  wa.queue = "jq";
  router.send(wa);
  ASSERT_TRUE(eventually([&] {
    auto n = work->counts("jq");
    return n && n->by_status.contains(record_status::done) && n->by_status.at(record_status::done) == 20;
  }, 60'000ms)) << log();

  drain d;
  d.deadline_ms = 5'000;
  router.send(d);
  ASSERT_TRUE(router.expect<bye>(30'000ms)) << log();
  auto st = c->wait(30'000ms);
  ASSERT_TRUE(st) << log();
  EXPECT_EQ(*st, 0) << log();
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST(WorkerIt, ShoalWorkerHelpNamesItsFlags) {
  const std::string cmd = "'" + tests::shoal_binary() + "' worker --help 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string text;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;)
    text.append(buf, n);
  EXPECT_EQ(::pclose(p), 0);
  for (const char* flag : {"--slot", "--supervisor", "--job", "--exec", "--queue", "--concurrency", "--await-assign"})
    EXPECT_NE(text.find(flag), std::string::npos) << flag;
}

} // namespace
} // namespace shoal::workers::fleet
