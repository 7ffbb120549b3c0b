// Integration tests of the work table against Azurite (label `claim`): enqueue, claims,
// leases under server time, fencing, dead letters, renew outages, many claimer processes.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/request_counts.hpp"
#include "tests/support/record_table.hpp"
#include "workers/child_process.hpp"
#include "workers/claim/claimer.hpp"
#include "workers/claim/key_escape.hpp"
#include "workers/claim/work_table.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <thread>

#include <signal.h>

extern char** environ;

namespace shoal::workers {
namespace {

using namespace std::chrono;
using namespace std::chrono_literals;

// -- harness --------------------------------------------------------------------------------------

/// Wraps the curl transport; while `down` every request fails like a dead network.
class switchable_transport final : public storage::http_transport {
public:
  explicit switchable_transport(std::shared_ptr<storage::http_transport> inner) : inner_(std::move(inner)) {}
  storage::result<storage::http_response> send(const storage::http_request& req) override {
    if (down.load())
      return std::unexpected(storage::error{storage::errc::transport, 0, {}, {}, true, 1, "switchable_transport: network down"});
    return inner_->send(req);
  }
  std::atomic<bool> down{false};

private:
  std::shared_ptr<storage::http_transport> inner_;
};

struct env {
  std::string table_name;
  storage::pipeline pipe;
  storage::table_client table;
  work_table work;
};

struct env_options {
  work_table_options wt;
  nanoseconds skew{0};                               // added to the client's wall clock (x-ms-date)
  std::shared_ptr<storage::http_transport> transport; // default curl
  int http_attempts = 4;
};

storage::pipeline make_pipeline(const env_options& o) {
  auto account = storage::parse_connection_string(tests::azurite_connection_string());
  EXPECT_TRUE(account) << account.error().describe();
  storage::pipeline_options po;
  po.retry.max_attempts = o.http_attempts;
  po.retry.base_delay = 20ms;
  po.http.request_timeout = 5000ms;
  if (o.skew.count() != 0) {
    auto skew = o.skew;
    po.hooks.now = [skew] { return system_clock::now() + duration_cast<system_clock::duration>(skew); };
  }
  auto p = storage::pipeline::make(*account, po, o.transport);
  EXPECT_TRUE(p) << p.error().describe();
  return *p;
}

/// A work table over table `name` (created when `create`).
env open_env(const std::string& name, env_options o = {}, bool create = true) {
  auto pipe = make_pipeline(o);
  auto tc = storage::table_client::make(pipe, name);
  EXPECT_TRUE(tc) << tc.error().describe();
  auto wt = work_table::make(*tc, storage::blob_client(pipe), o.wt);
  EXPECT_TRUE(wt) << wt.error().describe();
  if (create) {
    auto ok = wt->create_if_missing();
    EXPECT_TRUE(ok) << ok.error().describe();
  }
  return env{name, pipe, *tc, *wt};
}

work_table_options short_leases() {
  work_table_options o;
  o.work.lease_ms = 2000;
  o.work.lease_renew_ms = 700;
  o.work.retry_base_ms = 50;
  o.work.retry_max_ms = 200;
  return o;
}

std::vector<std::uint32_t> all_shards(const work_table& w) {
  std::vector<std::uint32_t> s(w.options().work.shards);
  std::iota(s.begin(), s.end(), 0u);
  return s;
}

std::vector<new_record> make_records(std::size_t n, std::string_view prefix) {
  std::vector<new_record> out;
  for (std::size_t i = 0; i < n; ++i)
    out.push_back({std::string(prefix) + std::to_string(i), "{\"n\":" + std::to_string(i) + "}", 0ms});
  return out;
}

using shoal::tests::eventually; // tests/support/eventually.hpp

system_clock::time_point as_sys(storage::table_time t) {
  return system_clock::time_point(duration_cast<system_clock::duration>(t.time_since_epoch()));
}

// -- tests ----------------------------------------------------------------------------------------

TEST(WorkTableIt, EnqueueClaimCompleteRoundTrip) {
  auto e = open_env(tests::unique_name("wtround"));
  auto recs = make_records(5, "r");
  auto enq = e.work.enqueue("jobs", recs);
  ASSERT_TRUE(enq) << enq.error().describe();
  EXPECT_EQ(enq->inserted, 5u);

  auto shards = all_shards(e.work);
  auto got = e.work.claim("jobs", shards, "w1@test", 10);
  ASSERT_TRUE(got) << got.error().describe();
  ASSERT_EQ(got->size(), 5u);
  for (auto& r : *got) {
    EXPECT_EQ(r.gen, 1);
    EXPECT_EQ(r.attempts, 1);
    EXPECT_EQ(r.payload, "{\"n\":" + r.id.substr(1) + "}");
    EXPECT_EQ(r.shard, shard_of(r.id, 16));
  }
  auto again = e.work.claim("jobs", shards, "w2@test", 10);
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_TRUE(again->empty()) << "held records must not be claimable while the lease lives";

  std::vector<claimed_record*> ptrs;
  for (auto& r : *got) ptrs.push_back(&r);
  auto done = e.work.complete_many(ptrs);
  for (auto& d : done) ASSERT_TRUE(d) << d.error().describe();
  auto v = e.work.get("jobs", "r3");
  ASSERT_TRUE(v) << v.error().describe();
  EXPECT_EQ(v->status, record_status::done);
  EXPECT_EQ(v->owner, "w1@test");
  EXPECT_EQ(e.work.counters().snapshot().completions, 5u);
  auto open = e.work.has_open("jobs");
  ASSERT_TRUE(open) << open.error().describe();
  EXPECT_FALSE(*open);
}

TEST(WorkTableIt, BatchedCompleteFallsBackOnA412AndCompletesTheRestTogether) {
  // Five records of one shard completed in one call: one holds a stale ETag but is still ours
  // (renewed through a copy), one was released through a copy and claimed by another worker. The
  // entity group transaction fails on each in turn (412); the others still go in one
  // transaction, the stale one is re-read and completed alone, the lost one is refused.
  env_options o;
  o.wt.work.shards = 1;
  o.wt.complete_singles_after_412 = 3; // two 412s here: the rest still resubmitted together
  auto a = open_env(tests::unique_name("wtcmany"), o);
  auto b = open_env(a.table_name, o, false);
  ASSERT_TRUE(a.work.enqueue("q", make_records(5, "c")));
  auto held = a.work.claim("q", std::vector<std::uint32_t>{0}, "worker-a", 5);
  ASSERT_TRUE(held) << held.error().describe();
  ASSERT_EQ(held->size(), 5u);
  std::sort(held->begin(), held->end(), [](const auto& x, const auto& y) { return x.id < y.id; });

  auto renewed = (*held)[1];
  ASSERT_TRUE(a.work.renew(renewed));
  ASSERT_NE(renewed.etag, (*held)[1].etag);
  auto released = (*held)[3];
  ASSERT_TRUE(a.work.release(released));
  auto taken = b.work.claim("q", std::vector<std::uint32_t>{0}, "worker-b", 5);
  ASSERT_TRUE(taken) << taken.error().describe();
  ASSERT_EQ(taken->size(), 1u);
  ASSERT_EQ(taken->front().id, (*held)[3].id);

  const auto before = storage::process_request_counts();
  const auto done_before = a.work.counters().snapshot().completions;
  std::vector<claimed_record*> ptrs;
  for (auto& r : *held) ptrs.push_back(&r);
  auto res = a.work.complete_many(ptrs);
  // One transaction per 412 plus the one that lands (3), and the stale-but-ours record alone
  // (1: in layout 2 a completion is itself a transaction, ticket delete + record merge); the two
  // refused ones are re-read once each.
  auto sent = tests::requests_to(a.table_name, before);
  EXPECT_EQ(sent["batch"], 4u);
  EXPECT_EQ(sent["merge"], 0u);
  EXPECT_EQ(sent["get"], 2u);
  ASSERT_EQ(res.size(), 5u);
  for (std::size_t i : {0u, 1u, 2u, 4u}) EXPECT_TRUE(res[i]) << i << ": " << res[i].error().describe();
  ASSERT_FALSE(res[3]);
  EXPECT_EQ(res[3].error().code, errc::lease_lost);
  EXPECT_NE(res[3].error().message.find("worker-b"), std::string::npos) << res[3].error().message;
  EXPECT_EQ(a.work.counters().snapshot().completions - done_before, 4u);

  for (std::size_t i : {0u, 1u, 2u, 4u}) {
    auto v = a.work.get("q", (*held)[i].id);
    ASSERT_TRUE(v) << v.error().describe();
    EXPECT_EQ(v->status, record_status::done) << (*held)[i].id;
  }
  auto lost = a.work.get("q", (*held)[3].id);
  ASSERT_TRUE(lost) << lost.error().describe();
  EXPECT_EQ(lost->status, record_status::claimed);
  EXPECT_EQ(lost->owner, "worker-b");

  ASSERT_TRUE(b.work.complete(taken->front()));
}

// The dashboard's "oldest pending" age (workers/web): read from the tickets of pending records
// that are due, never from done records; a requeued record waits from its requeue, not 1970.
TEST(WorkTableIt, OldestWaitingCountsOnlyDuePendingTickets) {
  env_options o;
  o.wt = short_leases();
  o.wt.work.retry_base_ms = 600'000; // a failed attempt backs off far past this test
  o.wt.work.retry_max_ms = 600'000;
  auto e = open_env(tests::unique_name("wtoldest"), o);
  const auto before = system_clock::now() - 30s; // generous: the server clock is a lower bound
  ASSERT_TRUE(e.work.enqueue("q", make_records(2, "o")));
  auto w = e.work.oldest_waiting("q", 1000);
  ASSERT_TRUE(w) << w.error().describe();
  ASSERT_TRUE(w->has_value());
  EXPECT_GT((*w)->first, before);
  EXPECT_LT((*w)->first, system_clock::now() + 30s);
  EXPECT_FALSE((*w)->second);
  auto partial = e.work.oldest_waiting("q", 1);
  ASSERT_TRUE(partial && partial->has_value());
  EXPECT_TRUE((*partial)->second) << "a scan stopped at its cap says so";

  auto shards = all_shards(e.work);
  auto got = e.work.claim("q", shards, "w1", 10);
  ASSERT_TRUE(got && got->size() == 2u);
  auto none = e.work.oldest_waiting("q", 1000);
  ASSERT_TRUE(none) << none.error().describe();
  EXPECT_FALSE(none->has_value()) << "claimed records are not waiting";

  ASSERT_TRUE(e.work.complete((*got)[0]));
  auto st = e.work.fail((*got)[1], "later");
  ASSERT_TRUE(st) << st.error().describe();
  ASSERT_EQ(*st, record_status::pending);
  none = e.work.oldest_waiting("q", 1000);
  ASSERT_TRUE(none) << none.error().describe();
  EXPECT_FALSE(none->has_value()) << "a record backing off is not due yet; a done one never counts";

  record_selector which;
  which.ids = {(*got)[1].id};
  auto n = e.work.requeue("q", which);
  ASSERT_TRUE(n) << n.error().describe();
  auto back = e.work.oldest_waiting("q", 1000);
  ASSERT_TRUE(back && back->has_value());
  EXPECT_GT((*back)->first, before) << "a requeued record waits from its requeue (its ticket is due 1970)";
}

TEST(WorkTableIt, EnqueueIsIdempotentAndNeverResetsFinishedRecords) {
  auto o = env_options{};
  o.wt.work.shards = 1; // one partition: > 100 records exercise several transactions
  auto e = open_env(tests::unique_name("wtidem"), o);
  auto recs = make_records(250, "id");
  auto first = e.work.enqueue("q", recs);
  ASSERT_TRUE(first) << first.error().describe();
  EXPECT_EQ(first->inserted, 250u);

  auto got = e.work.claim("q", std::vector<std::uint32_t>{0}, "w@t", 1);
  ASSERT_TRUE(got && got->size() == 1);
  ASSERT_TRUE(e.work.complete(got->front()));

  // Same ids again plus new ones, in one call: the 409s are resolved by reading.
  auto more = make_records(260, "id");
  auto second = e.work.enqueue("q", more);
  ASSERT_TRUE(second) << second.error().describe();
  EXPECT_EQ(second->inserted, 10u);
  EXPECT_EQ(second->already_present, 250u);
  auto v = e.work.get("q", got->front().id);
  ASSERT_TRUE(v) << v.error().describe();
  EXPECT_EQ(v->status, record_status::done) << "enqueue must not reset a finished record";
  auto c = e.work.counts("q");
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->total, 260u);
  EXPECT_EQ(c->by_status[record_status::done], 1u);
  EXPECT_EQ(c->by_status[record_status::pending], 259u);
  ASSERT_EQ(c->by_shard.size(), 1u);
  EXPECT_EQ(c->by_shard.begin()->second[record_status::pending], 259u);
}

TEST(WorkTableIt, AwkwardIdsAndLargePayloadsRoundTrip) {
  auto e = open_env(tests::unique_name("wtodd"));
  std::string big(40 * 1024, 'x');
  std::string binary("\x00\xff\xfe payload", 11);
  std::vector<new_record> recs = {
      {"a/b\\c#d?e%f", "slashes", 0ms},
      {"tab\there\nnewline\x7f", "controls", 0ms},
      {"unicode-\xc3\xa9\xe2\x82\xac", "utf8", 0ms},
      {"big", big, 0ms},
      {"bin", binary, 0ms},
  };
  auto enq = e.work.enqueue("odd", recs);
  ASSERT_TRUE(enq) << enq.error().describe();
  for (const auto& r : recs) {
    auto v = e.work.get("odd", r.id);
    ASSERT_TRUE(v) << v.error().describe();
    EXPECT_EQ(v->id, r.id);
    EXPECT_EQ(v->payload, r.payload);
  }
  auto bigv = e.work.get("odd", "big");
  ASSERT_TRUE(bigv);
  EXPECT_FALSE(bigv->payload_blob.empty()) << "a 40 KiB payload must live in a blob";
  auto got = e.work.claim("odd", all_shards(e.work), "w@t", 10);
  ASSERT_TRUE(got) << got.error().describe();
  ASSERT_EQ(got->size(), recs.size());
  std::map<std::string, std::string> payloads;
  for (auto& r : *got) payloads[r.id] = r.payload;
  for (const auto& r : recs) EXPECT_EQ(payloads[r.id], r.payload) << r.id;

  std::vector<new_record> too_long = {{std::string(600, 'k'), "x", 0ms}};
  auto bad = e.work.enqueue("odd", too_long);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::limit_exceeded) << bad.error().describe();
}

TEST(WorkTableIt, ExpiredLeaseIsReclaimedAndStaleCompletionIsRefused) {
  env_options o;
  o.wt = short_leases();
  auto a = open_env(tests::unique_name("wtlease"), o);
  auto b = open_env(a.table_name, o, false);
  std::vector<new_record> one = {{"job-1", "p", 0ms}};
  ASSERT_TRUE(a.work.enqueue("q", one));
  auto shards = all_shards(a.work);
  auto held = a.work.claim("q", shards, "worker-a", 1);
  ASSERT_TRUE(held && held->size() == 1);

  std::vector<claimed_record> taken;
  ASSERT_TRUE(eventually([&] {
    auto r = b.work.claim("q", shards, "worker-b", 1);
    if (r && !r->empty()) taken = *r;
    return !taken.empty();
  }, 8s)) << "the expired lease was never reclaimed";
  EXPECT_EQ(taken[0].gen, 2);
  EXPECT_EQ(taken[0].attempts, 2);

  auto stale = a.work.complete(held->front());
  ASSERT_FALSE(stale) << "a stale owner's completion must be refused";
  EXPECT_EQ(stale.error().code, errc::lease_lost);
  EXPECT_NE(stale.error().message.find("worker-b"), std::string::npos) << stale.error().message;
  EXPECT_NE(stale.error().message.find("gen 2"), std::string::npos) << stale.error().message;
  EXPECT_EQ(a.work.counters().snapshot().lease_lost, 1u);
  auto renew = a.work.renew(held->front());
  ASSERT_FALSE(renew);
  EXPECT_EQ(renew.error().code, errc::lease_lost);

  ASSERT_TRUE(b.work.complete(taken[0]));
  auto v = b.work.get("q", "job-1");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->status, record_status::done);
  EXPECT_EQ(v->owner, "worker-b");
}

TEST(WorkTableIt, MaxAttemptsMakesTheRecordDeadKeepingTheError) {
  env_options o;
  o.wt = short_leases();
  o.wt.work.max_attempts = 3;
  auto e = open_env(tests::unique_name("wtdead"), o);
  std::vector<new_record> one = {{"poison", "p", 0ms}};
  ASSERT_TRUE(e.work.enqueue("q", one));
  auto shards = all_shards(e.work);
  for (int attempt = 1; attempt <= 3; ++attempt) {
    std::vector<claimed_record> got;
    ASSERT_TRUE(eventually([&] {
      auto r = e.work.claim("q", shards, "w", 1);
      if (r && !r->empty()) got = *r;
      return !got.empty();
    }, 5s)) << "attempt " << attempt << " never became claimable";
    EXPECT_EQ(got[0].attempts, attempt);
    auto st = e.work.fail(got[0], "boom " + std::to_string(attempt));
    ASSERT_TRUE(st) << st.error().describe();
    EXPECT_EQ(*st, attempt < 3 ? record_status::pending : record_status::dead);
    if (attempt == 2) {
      EXPECT_EQ(got[0].last_error, "boom 1");
    }
  }
  auto v = e.work.get("q", "poison");
  ASSERT_TRUE(v) << v.error().describe();
  EXPECT_EQ(v->status, record_status::dead);
  EXPECT_EQ(v->last_error, "boom 3");
  EXPECT_EQ(v->attempts, 3);
  EXPECT_EQ(e.work.counters().snapshot().dead_letters, 1u);
  EXPECT_EQ(e.work.counters().snapshot().failures, 2u);
  auto none = e.work.claim("q", shards, "w", 1);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty()) << "a dead record is never claimed";

  // Operators bring it back.
  record_selector dead;
  dead.statuses = {record_status::dead};
  auto n = e.work.requeue("q", dead);
  ASSERT_TRUE(n) << n.error().describe();
  EXPECT_EQ(*n, 1u);
  auto back = e.work.get("q", "poison");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->status, record_status::pending);
  EXPECT_EQ(back->attempts, 0);
  EXPECT_EQ(back->last_error, "boom 3");
}

TEST(WorkTableIt, ServerClockLeasesHoldWhenClientClocksAreSkewedTenMinutes) {
  env_options ahead;
  ahead.wt = short_leases();
  ahead.skew = 10min;
  env_options behind = ahead;
  behind.skew = -10min;
  auto a = open_env(tests::unique_name("wtskew"), ahead);
  auto b = open_env(a.table_name, behind, false);
  auto plain = open_env(a.table_name, env_options{}, false);
  std::vector<new_record> one = {{"skewed", "p", 0ms}};
  ASSERT_TRUE(a.work.enqueue("q", one));
  auto shards = all_shards(a.work);

  auto held = a.work.claim("q", shards, "ahead", 1);
  ASSERT_TRUE(held && held->size() == 1);
  // The lease was computed from the server's clock: lease_until ≈ server Timestamp + lease_ms.
  auto stored = plain.table.get(held->front().partition_key, held->front().ticket);
  ASSERT_TRUE(stored) << stored.error().describe();
  auto lease_until = as_sys(*stored->get<storage::table_time>("lease_until"));
  auto written = as_sys(*stored->timestamp);
  EXPECT_LT(std::chrono::abs(lease_until - (written + 2000ms)), 1500ms)
      << "lease_until must come from the server clock, not the +10 min client clock";

  // A client 10 minutes behind cannot take it early...
  auto early = b.work.claim("q", shards, "behind", 1);
  ASSERT_TRUE(early);
  EXPECT_TRUE(early->empty()) << "a client whose clock is behind must not see the lease as expired";
  // ...and the client ahead cannot have made it look expired: it is taken only after expiry.
  std::vector<claimed_record> taken;
  auto start = steady_clock::now();
  ASSERT_TRUE(eventually([&] {
    auto r = b.work.claim("q", shards, "behind", 1);
    if (r && !r->empty()) taken = *r;
    return !taken.empty();
  }, 8s));
  EXPECT_GT(steady_clock::now() - start, 500ms);
  auto stored2 = plain.table.get(taken[0].partition_key, taken[0].ticket);
  ASSERT_TRUE(stored2);
  auto lease2 = as_sys(*stored2->get<storage::table_time>("lease_until"));
  EXPECT_LT(std::chrono::abs(lease2 - (as_sys(*stored2->timestamp) + 2000ms)), 1500ms)
      << "lease_until must come from the server clock, not the -10 min client clock";
  EXPECT_EQ(a.work.complete(held->front()).error().code, errc::lease_lost);
  ASSERT_TRUE(b.work.complete(taken[0]));
}

TEST(WorkTableIt, RenewOutageMakesTheKeeperGiveUpBeforeTheLeaseExpires) {
  auto curl = storage::make_curl_transport();
  ASSERT_TRUE(curl) << curl.error().describe();
  auto sw = std::make_shared<switchable_transport>(*curl);
  env_options o;
  o.wt.work.lease_ms = 3000;
  o.wt.work.lease_renew_ms = 500;
  o.transport = sw;
  o.http_attempts = 2;
  auto e = open_env(tests::unique_name("wtout"), o);
  auto probe = open_env(e.table_name, env_options{}, false);
  std::vector<new_record> one = {{"renewed", "p", 0ms}};
  ASSERT_TRUE(e.work.enqueue("q", one));
  auto got = e.work.claim("q", all_shards(e.work), "keeper", 1);
  ASSERT_TRUE(got && got->size() == 1);

  std::atomic<int> lost_calls{0};
  lease_keeper keeper(e.work, {o.wt.work.lease_renew_ms * 1ms, 100ms},
                      [&](const claimed_record&, const error&) { ++lost_calls; });
  auto h = keeper.hold(got->front());
  keeper.start();
  // Renewals keep it alive well past one lease...
  ASSERT_TRUE(eventually([&] { return e.work.counters().snapshot().renewals >= 3; }, 6s));
  EXPECT_FALSE(h.lost());
  // ...then storage goes away.
  sw->down = true;
  auto outage = steady_clock::now();
  ASSERT_TRUE(eventually([&] { return h.lost(); }, 5s, 10ms));
  auto noticed = steady_clock::now() - outage;
  // The record must still be leased on the server at this moment: a write now gets a server
  // timestamp (its ETag) earlier than the lease_until the last renewal wrote.
  storage::table_entity p;
  p.partition_key = "probe";
  p.row_key = "now";
  auto w = probe.table.insert_or_replace(p);
  ASSERT_TRUE(w) << w.error().describe();
  auto server_now = storage::etag_time(w->etag);
  ASSERT_TRUE(server_now);
  auto stored = probe.table.get(got->front().partition_key, got->front().ticket);
  ASSERT_TRUE(stored);
  auto lease_until = as_sys(*stored->get<storage::table_time>("lease_until"));
  EXPECT_LT(*server_now, lease_until) << "the keeper gave up only after the server lease expired (noticed after "
                                      << duration_cast<milliseconds>(noticed).count() << " ms)";
  EXPECT_TRUE(eventually([&] { return lost_calls.load() == 1; }, 2s));
  EXPECT_GE(e.work.counters().snapshot().renew_failures, 1u);
  EXPECT_EQ(keeper.held(), 0u);
  keeper.stop();
  sw->down = false;
}

TEST(WorkTableIt, ThreadsRacingOnOnePartitionCompleteEachRecordOnce) {
  env_options o;
  o.wt.work.shards = 1;
  auto first = open_env(tests::unique_name("wtrace"), o);
  auto recs = make_records(400, "race");
  ASSERT_TRUE(first.work.enqueue("q", recs));
  std::mutex mu;
  std::map<std::string, int> completions;
  std::vector<std::thread> threads;
  std::atomic<std::uint64_t> contention{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto e = open_env(first.table_name, o, false);
      drain_options d;
      d.batch = 50;
      auto st = drain(e.work, "q", std::vector<std::uint32_t>{0}, "t" + std::to_string(t), d, [&](const claimed_record& r) {
        std::lock_guard lock(mu);
        ++completions[r.id];
      });
      EXPECT_TRUE(st) << st.error().describe();
      contention += e.work.counters().snapshot().contention;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(completions.size(), 400u);
  for (auto& [id, n] : completions) EXPECT_EQ(n, 1) << id;
  std::cout << "[ info ] 4 threads, 1 partition: " << contention.load() << " claims lost to contention\n";
}

std::string claim_process_binary() {
  if (const char* p = std::getenv("SHOAL_CLAIM_PROCESS"); p && *p) return p;
  return SHOAL_TEST_CLAIM_PROCESS;
}

/// Starts shoal_claim_process with `args` (after the binary).
pid_t spawn_claim_process(std::vector<std::string> args) {
  args.insert(args.begin(), claim_process_binary());
  child_options co;
  co.argv = std::move(args);
  auto c = child_process::spawn(co);
  EXPECT_TRUE(c) << c.error().message;
  return c ? c->release() : -1; // expect_all_exit_zero reaps it
}

/// Waits for every process; each must exit 0.
void expect_all_exit_zero(const std::vector<pid_t>& pids) {
  for (auto pid : pids) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "claimer process failed, status " << status;
  }
}

TEST(WorkTableIt, EightClaimerProcessesCompleteTwoThousandRecordsExactlyOnce) {
  auto e = open_env(tests::unique_name("wtprocs"));
  auto recs = make_records(2000, "rec-");
  auto enq = e.work.enqueue("load", recs);
  ASSERT_TRUE(enq) << enq.error().describe();
  ASSERT_EQ(enq->inserted, 2000u);

  auto dir = std::filesystem::temp_directory_path() / tests::unique_name("claimprocs");
  std::filesystem::create_directories(dir);
  const std::string cs = tests::azurite_connection_string();
  std::vector<pid_t> pids;
  for (int i = 0; i < 8; ++i)
    pids.push_back(spawn_claim_process({cs, e.table_name, "load", "proc" + std::to_string(i), (dir / ("out" + std::to_string(i))).string(), "16", "25"}));
  expect_all_exit_zero(pids);
  std::map<std::string, int> completions;
  int processes_with_work = 0;
  for (int i = 0; i < 8; ++i) {
    std::ifstream in(dir / ("out" + std::to_string(i)));
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      if (line.starts_with("# ")) {
        std::cout << "[ info ] proc" << i << ": " << line.substr(2) << "\n";
        continue;
      }
      ++completions[line];
      ++n;
    }
    processes_with_work += n > 0;
  }
  std::filesystem::remove_all(dir);
  EXPECT_EQ(completions.size(), 2000u);
  int duplicates = 0;
  for (auto& [id, n] : completions) duplicates += n - 1;
  EXPECT_EQ(duplicates, 0);
  EXPECT_GE(processes_with_work, 2) << "the work should have been shared";
  auto c = e.work.counts("load");
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->by_status[record_status::done], 2000u);
  EXPECT_EQ(c->by_shard.size(), 16u) << "counts per shard";
}

TEST(WorkTableIt, ReleaseGivesTheClaimBackAndPurgeDeletes) {
  auto e = open_env(tests::unique_name("wtrel"));
  auto recs = make_records(3, "x");
  ASSERT_TRUE(e.work.enqueue("q", recs));
  auto shards = all_shards(e.work);
  auto got = e.work.claim("q", shards, "drainer", 3);
  ASSERT_TRUE(got && got->size() == 3);
  ASSERT_TRUE(e.work.release((*got)[0]));
  auto again = e.work.claim("q", shards, "other", 3);
  ASSERT_TRUE(again && again->size() == 1) << "a released record is claimable at once";
  EXPECT_EQ((*again)[0].attempts, 1) << "release on drain refunds the attempt";
  auto n = e.work.release_owner("q", "drainer");
  ASSERT_TRUE(n) << n.error().describe();
  EXPECT_EQ(*n, 2u);
  ASSERT_TRUE(e.work.complete((*again)[0]));
  record_selector done;
  done.statuses = {record_status::done};
  auto purged = e.work.purge("q", done);
  ASSERT_TRUE(purged) << purged.error().describe();
  EXPECT_EQ(*purged, 1u);
  auto c = e.work.counts("q");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->total, 2u);
  EXPECT_EQ(c->by_status[record_status::pending], 2u);
}

// -- layout 2: tickets, sweeps, migration, consistency under races and kills ---------------------------

/// check() of `queue` must find nothing wrong.
void expect_consistent(const work_table& w, std::string_view queue) {
  auto c = w.check(queue);
  ASSERT_TRUE(c) << c.error().describe();
  for (const auto& p : c->problems) ADD_FAILURE() << p;
}

TEST(WorkTableIt, EveryChangeKeepsRecordRowsAndTicketsConsistent) {
  env_options o;
  o.wt = short_leases();
  o.wt.work.shards = 2;
  o.wt.work.max_attempts = 2;
  auto e = open_env(tests::unique_name("wtidx"), o);
  auto recs = make_records(12, "c");
  ASSERT_TRUE(e.work.enqueue("q", recs));
  expect_consistent(e.work, "q");
  auto check = e.work.check("q");
  ASSERT_TRUE(check);
  EXPECT_EQ(check->records, 12u);
  EXPECT_EQ(check->tickets, 12u);
  EXPECT_EQ(check->open, 12u);

  std::vector<std::uint32_t> shards = {0, 1};
  auto got = e.work.claim("q", shards, "w@t", 12);
  ASSERT_TRUE(got && got->size() == 12);
  expect_consistent(e.work, "q");
  auto& g = *got;
  ASSERT_TRUE(e.work.renew(g[0]));
  ASSERT_TRUE(e.work.release(g[1]));
  auto f1 = e.work.fail(g[2], "first failure");
  ASSERT_TRUE(f1 && *f1 == record_status::pending);
  ASSERT_TRUE(e.work.complete(g[3]));
  ASSERT_TRUE(e.work.complete(g[3])) << "completing twice is not an error";
  std::vector<claimed_record*> many;
  for (std::size_t i = 4; i < 12; ++i) many.push_back(&g[i]);
  for (auto& r : e.work.complete_many(many)) EXPECT_TRUE(r) << r.error().describe();
  expect_consistent(e.work, "q");
  auto c = e.work.counts("q");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->by_status[record_status::done], 9u);
  EXPECT_EQ(c->by_status[record_status::pending], 2u);
  EXPECT_EQ(c->by_status[record_status::claimed], 1u);
  EXPECT_EQ(c->total, 12u);
  auto failed = e.work.get("q", g[2].id);
  ASSERT_TRUE(failed) << failed.error().describe();
  EXPECT_EQ(failed->status, record_status::pending);
  EXPECT_EQ(failed->last_error, "first failure");
  EXPECT_GT(failed->not_before, system_clock::time_point{}) << "a failed record waits for its backoff";

  // The failed record comes back after its backoff and goes dead at max_attempts (2).
  std::vector<claimed_record> again;
  ASSERT_TRUE(eventually([&] {
    auto r = e.work.claim("q", shards, "w@t", 5);
    if (r)
      for (auto& x : *r) again.push_back(x);
    return std::any_of(again.begin(), again.end(), [&](const auto& x) { return x.id == g[2].id; });
  }, 5s));
  for (auto& r : again) {
    if (r.id != g[2].id) continue;
    auto dead = e.work.fail(r, "second failure");
    ASSERT_TRUE(dead && *dead == record_status::dead);
  }
  expect_consistent(e.work, "q");
  auto dv = e.work.get("q", g[2].id);
  ASSERT_TRUE(dv);
  EXPECT_EQ(dv->status, record_status::dead);
  EXPECT_EQ(dv->last_error, "second failure");
  // Requeue brings the dead one back with a new ticket; purge removes both rows.
  record_selector dead_sel;
  dead_sel.statuses = {record_status::dead};
  auto n = e.work.requeue("q", dead_sel);
  ASSERT_TRUE(n && *n == 1u);
  expect_consistent(e.work, "q");
  record_selector one;
  one.ids = {g[2].id};
  auto p = e.work.purge("q", one);
  ASSERT_TRUE(p && *p == 1u);
  expect_consistent(e.work, "q");
  auto gone = e.work.get("q", g[2].id);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
}

TEST(WorkTableIt, ClaimQueryReadsOnlyDueTicketsWhateverTheHistory) {
  env_options o;
  o.wt.work.shards = 1;
  auto e = open_env(tests::unique_name("wtscan"), o);
  std::vector<std::uint32_t> shard0 = {0};
  // 300 records through the queue: done, still in the table.
  ASSERT_TRUE(e.work.enqueue("q", make_records(300, "old")));
  drain_options d;
  auto st = drain(e.work, "q", shard0, "history", d, {});
  ASSERT_TRUE(st) << st.error().describe();
  ASSERT_EQ(st->completed, 300u);
  // 20 new ones, 5 of them delayed by a minute: a claim query reads the 15 due tickets only.
  auto fresh = make_records(20, "new");
  for (std::size_t i = 0; i < 5; ++i) fresh[i].delay = 60s;
  ASSERT_TRUE(e.work.enqueue("q", fresh));
  const auto before = e.work.counters().snapshot();
  auto got = e.work.claim("q", shard0, "w", 100);
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(got->size(), 15u);
  const auto after = e.work.counters().snapshot();
  EXPECT_EQ(after.claim_queries - before.claim_queries, 1u);
  EXPECT_EQ(after.claim_query_entities - before.claim_query_entities, 15u)
      << "the claim query must not read the 300 done records nor the 5 delayed ones";
  // While they are held, a second claim query reads nothing (their leases are live).
  auto none = e.work.claim("q", shard0, "w2", 100);
  ASSERT_TRUE(none && none->empty());
  EXPECT_EQ(e.work.counters().snapshot().claim_query_entities, after.claim_query_entities);
}

TEST(WorkTableIt, CompleteManyFallsBackToSingleWritesAfter412s) {
  env_options o;
  o.wt.work.shards = 1;
  auto e = open_env(tests::unique_name("wt412"), o);
  ASSERT_TRUE(e.work.enqueue("q", make_records(10, "f")));
  auto got = e.work.claim("q", std::vector<std::uint32_t>{0}, "w@t", 10);
  ASSERT_TRUE(got && got->size() == 10);
  // Three of them move on behind our back (as if re-claimed after an expiry): their tickets
  // change, so our conditional writes meet 412.
  std::set<std::string> stolen;
  for (std::size_t i : {1u, 4u, 7u}) {
    storage::table_entity t;
    t.partition_key = (*got)[i].partition_key;
    t.row_key = (*got)[i].ticket;
    t.set("owner", std::string("thief"));
    t.set("gen", (*got)[i].gen + 1);
    ASSERT_TRUE(e.table.merge(t, "*"));
    stolen.insert((*got)[i].id);
  }
  std::vector<claimed_record*> ptrs;
  for (auto& r : *got) ptrs.push_back(&r);
  const auto before = e.work.counters().snapshot();
  auto res = e.work.complete_many(ptrs);
  const auto after = e.work.counters().snapshot();
  for (std::size_t i = 0; i < res.size(); ++i) {
    if (stolen.contains((*got)[i].id)) {
      ASSERT_FALSE(res[i]) << (*got)[i].id;
      EXPECT_EQ(res[i].error().code, errc::lease_lost);
      EXPECT_NE(res[i].error().message.find("thief"), std::string::npos) << res[i].error().message;
    } else {
      EXPECT_TRUE(res[i]) << res[i].error().describe();
    }
  }
  EXPECT_EQ(after.completions - before.completions, 7u);
  EXPECT_EQ(after.lease_lost - before.lease_lost, 3u);
  // One transaction, one resubmission after the first 412, then (complete_singles_after_412 =
  // 2) single transactions for what was left after the second: more requests than one, fewer
  // than one per record plus the first.
  const auto requests = after.complete_requests - before.complete_requests;
  EXPECT_GE(requests, 3u);
  EXPECT_LE(requests, 10u);
  auto c = e.work.counts("q");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->by_status[record_status::done], 7u);
  EXPECT_EQ(c->by_status[record_status::claimed], 3u);
  expect_consistent(e.work, "q");
}

TEST(WorkTableIt, SweepRemovesOldDoneRecordsKeepsCountsAndCopiesToHistory) {
  env_options o;
  o.wt.work.shards = 2;
  o.wt.work.history_table = tests::unique_name("wthist");
  auto e = open_env(tests::unique_name("wtsweep"), o);
  ASSERT_TRUE(e.work.enqueue("q", make_records(30, "s")));
  drain_options d;
  std::vector<std::uint32_t> shards = {0, 1};
  ASSERT_TRUE(drain(e.work, "q", shards, "w", d, {}));
  ASSERT_TRUE(e.work.enqueue("q", make_records(5, "live")));
  // A day of retention keeps them; none removed.
  auto kept = e.work.sweep("q");
  ASSERT_TRUE(kept) << kept.error().describe();
  EXPECT_EQ(kept->removed, 0u);
  auto swept = e.work.sweep("q", {}, 0ms);
  ASSERT_TRUE(swept) << swept.error().describe();
  EXPECT_EQ(swept->removed, 30u);
  EXPECT_EQ(swept->archived, 30u);
  auto c = e.work.counts("q");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->by_status[record_status::done], 30u) << "swept records are still counted";
  EXPECT_EQ(c->swept, 30u);
  EXPECT_EQ(c->by_status[record_status::pending], 5u);
  EXPECT_EQ(c->total, 35u);
  auto gone = e.work.get("q", "s7");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
  auto hist = storage::table_client::make(e.pipe, o.wt.work.history_table);
  ASSERT_TRUE(hist);
  auto copy = hist->get(partition_key("q", shard_of("s7", 2)), "s7");
  ASSERT_TRUE(copy) << copy.error().describe();
  EXPECT_EQ(*copy->get<std::string>("status"), "done");
  EXPECT_EQ(*copy->get<std::string>("payload"), "{\"n\":7}");
  expect_consistent(e.work, "q");
  // Past the retention an id is new again.
  std::vector<new_record> again = {{"s7", "again", 0ms}};
  auto enq = e.work.enqueue("q", again);
  ASSERT_TRUE(enq);
  EXPECT_EQ(enq->inserted, 1u);
  // A second sweep adds to the count kept in the meta rows.
  ASSERT_TRUE(drain(e.work, "q", shards, "w", d, {}));
  auto second = e.work.sweep("q", {}, 0ms);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->removed, 6u);
  auto c2 = e.work.counts("q");
  ASSERT_TRUE(c2);
  EXPECT_EQ(c2->by_status[record_status::done], 36u);
  EXPECT_EQ(c2->total, 36u);
  (void)hist->delete_table();
}

// Writes a partition the way layout 1 did: one row per record, state in its properties.
void write_layout1(const storage::table_client& t, const std::string& queue, std::uint32_t shards, const std::string& id,
                   const std::string& status, const std::string& owner, std::int64_t gen, std::int32_t attempts,
                   system_clock::time_point lease_until) {
  storage::table_entity e;
  e.partition_key = partition_key(queue, shard_of(id, shards));
  e.row_key = *escape_key(id);
  e.set("status", status);
  e.set("owner", owner);
  e.set("gen", gen);
  e.set("attempts", attempts);
  e.set("lease_until", storage::to_table_time(lease_until));
  e.set("not_before", storage::table_time{});
  e.set("payload", "payload of " + id);
  e.set("payload_bytes", static_cast<std::int64_t>(11 + id.size()));
  e.set("created", storage::to_table_time(system_clock::now()));
  e.set("updated", storage::to_table_time(system_clock::now()));
  if (status == "dead") e.set("last_error", std::string("it broke"));
  ASSERT_TRUE(t.insert(e));
}

TEST(WorkTableIt, MigratesATableWrittenByLayoutOne) {
  env_options o;
  o.wt.work.shards = 4;
  auto e = open_env(tests::unique_name("wtmig"), o);
  const auto past = system_clock::now() - 1h;
  for (int i = 0; i < 20; ++i) write_layout1(e.table, "q", 4, "p" + std::to_string(i), "pending", "", 0, 0, {});
  write_layout1(e.table, "q", 4, "held", "claimed", "old-worker", 3, 3, system_clock::now() + 1h);
  write_layout1(e.table, "q", 4, "expired", "claimed", "old-worker", 2, 2, past);
  write_layout1(e.table, "q", 4, "finished", "done", "old-worker", 1, 1, past);
  write_layout1(e.table, "q", 4, "poison", "dead", "old-worker", 5, 5, past);
  auto before = e.work.check("q");
  ASSERT_TRUE(before);
  EXPECT_EQ(before->problems.size(), 22u) << "every pending/claimed layout-1 row is reported";
  auto c0 = e.work.counts("q");
  ASSERT_TRUE(c0);
  EXPECT_EQ(c0->by_status[record_status::pending], 20u) << "counts read layout 1 as it is";

  auto m = e.work.migrate("q");
  ASSERT_TRUE(m) << m.error().describe();
  EXPECT_EQ(m->migrated, 22u);
  EXPECT_EQ(m->partitions, 4u);
  EXPECT_TRUE(m->skipped.empty());
  expect_consistent(e.work, "q");
  auto again = e.work.migrate("q");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->migrated, 0u) << "idempotent";
  auto c = e.work.counts("q");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->by_status[record_status::pending], 20u);
  EXPECT_EQ(c->by_status[record_status::claimed], 2u);
  EXPECT_EQ(c->by_status[record_status::done], 1u);
  EXPECT_EQ(c->by_status[record_status::dead], 1u);
  auto held = e.work.get("q", "held");
  ASSERT_TRUE(held);
  EXPECT_EQ(held->status, record_status::claimed);
  EXPECT_EQ(held->owner, "old-worker");
  EXPECT_EQ(held->gen, 3);

  // Claims see the 20 pending and the expired claim, not the live one; gens continue.
  std::vector<std::uint32_t> all = {0, 1, 2, 3};
  auto got = e.work.claim("q", all, "new-worker", 100);
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(got->size(), 21u);
  for (auto& r : *got) {
    if (r.id == "expired") {
      EXPECT_EQ(r.gen, 3);
      EXPECT_EQ(r.attempts, 3);
    }
    EXPECT_EQ(r.payload, "payload of " + r.id);
  }
  std::vector<claimed_record*> ptrs;
  for (auto& r : *got) ptrs.push_back(&r);
  for (auto& r : e.work.complete_many(ptrs)) EXPECT_TRUE(r) << r.error().describe();
  expect_consistent(e.work, "q");
  record_selector dead;
  dead.statuses = {record_status::dead};
  auto n = e.work.requeue("q", dead);
  ASSERT_TRUE(n && *n == 1u);
  auto p = e.work.get("q", "poison");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, record_status::pending);
  EXPECT_EQ(p->payload, "payload of poison");
}

TEST(WorkTableIt, ClaimMigratesALayoutOnePartitionByItself) {
  env_options o;
  o.wt.work.shards = 1;
  auto e = open_env(tests::unique_name("wtauto"), o);
  for (int i = 0; i < 5; ++i) write_layout1(e.table, "q", 1, "a" + std::to_string(i), "pending", "", 0, 0, {});
  auto got = e.work.claim("q", std::vector<std::uint32_t>{0}, "w", 10);
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(got->size(), 5u);
  EXPECT_EQ(e.work.counters().snapshot().migrated, 5u);
  expect_consistent(e.work, "q");
}

/// The event logs of chaos claimer processes: per id, who claimed which gen and how often it
/// was completed.
struct chaos_logs {
  std::map<std::string, int> completions;                    // id → C lines
  std::map<std::pair<std::string, std::string>, int> claims; // (id, gen) → K lines
  std::size_t lines = 0;
};

chaos_logs read_chaos_logs(const std::filesystem::path& dir) {
  chaos_logs out;
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(f.path());
    std::string what, id, gen;
    while (in >> what >> id >> gen) {
      ++out.lines;
      if (what == "C") ++out.completions[id];
      if (what == "K") ++out.claims[{id, gen}];
    }
  }
  return out;
}

pid_t spawn_chaos(const std::string& table, const std::string& name, const std::filesystem::path& out, const std::string& lease_ms) {
  return spawn_claim_process({tests::azurite_connection_string(), table, "chaos", name, out.string(), "4", "8", "chaos", lease_ms});
}

void expect_chaos_outcome(const work_table& w, const std::filesystem::path& dir, std::size_t records) {
  auto logs = read_chaos_logs(dir);
  for (const auto& [id, n] : logs.completions) EXPECT_EQ(n, 1) << "record " << id << " completed " << n << " times";
  for (const auto& [k, n] : logs.claims) EXPECT_EQ(n, 1) << "record " << k.first << " gen " << k.second << " claimed " << n << " times";
  auto c = w.counts("chaos");
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->by_status[record_status::done] + c->by_status[record_status::dead], records);
  EXPECT_EQ(c->total, records);
  EXPECT_LE(logs.completions.size(), c->by_status[record_status::done]);
  auto open = w.has_open("chaos");
  ASSERT_TRUE(open);
  EXPECT_FALSE(*open);
  expect_consistent(w, "chaos");
  std::cout << "[ info ] " << logs.lines << " events, " << logs.completions.size() << " completions logged, "
            << c->by_status[record_status::done] << " done, " << c->by_status[record_status::dead] << " dead\n";
}

/// A queue "chaos" of 400 records over 4 shards, and a folder for the processes' event logs.
struct chaos_env {
  static constexpr std::size_t records = 400;
  env e;
  std::filesystem::path dir;
  explicit chaos_env(const char* name) : e(open_env(tests::unique_name(name), four_shards())) {
    EXPECT_TRUE(e.work.enqueue("chaos", make_records(records, name)));
    dir = std::filesystem::temp_directory_path() / tests::unique_name(name);
    std::filesystem::create_directories(dir);
  }
  ~chaos_env() { std::filesystem::remove_all(dir); }
  static env_options four_shards() {
    env_options o;
    o.wt.work.shards = 4;
    return o;
  }
};

TEST(WorkTableIt, EightProcessesRacingEveryChangeKeepTheIndexConsistent) {
  chaos_env c("wtchaos");
  std::vector<pid_t> pids;
  for (int i = 0; i < 8; ++i) pids.push_back(spawn_chaos(c.e.table_name, "p" + std::to_string(i), c.dir / ("log" + std::to_string(i)), "2000"));
  expect_all_exit_zero(pids);
  expect_chaos_outcome(c.e.work, c.dir, c.records);
}

TEST(WorkTableIt, KillNineAtAnyMomentNeverBreaksTheIndex) {
  chaos_env c("wtkill");
  auto& e = c.e;
  const auto& dir = c.dir;
  // Eight processes; every 150 ms one of them (round robin) is killed with SIGKILL — in the
  // middle of a claim, a transaction, a completion, wherever it is — and replaced, 40 times.
  // Then the survivors finish the queue (the killed ones' claims expire after 2 s).
  std::vector<pid_t> pids;
  int spawned = 0;
  for (int i = 0; i < 8; ++i, ++spawned) pids.push_back(spawn_chaos(e.table_name, "k" + std::to_string(spawned), dir / ("log" + std::to_string(spawned)), "2000"));
  int kills = 0;
  for (int round = 0; round < 40; ++round) {
    std::this_thread::sleep_for(150ms);
    auto& victim = pids[static_cast<std::size_t>(round) % pids.size()];
    if (::kill(victim, SIGKILL) == 0) ++kills;
    int status = 0;
    ::waitpid(victim, &status, 0);
    victim = spawn_chaos(e.table_name, "k" + std::to_string(spawned), dir / ("log" + std::to_string(spawned)), "2000");
    ++spawned;
    // Midway, check the invariants while everything is in motion.
    if (round == 20) expect_consistent(e.work, "chaos");
  }
  expect_all_exit_zero(pids);
  std::cout << "[ info ] " << kills << " processes killed with SIGKILL\n";
  expect_chaos_outcome(e.work, dir, c.records);
}

// `shoal records check|migrate|sweep` as an operator runs them: exit status and --json output
// (1 while problems are found), then a wrong connection string: a clear error, no crash.
std::pair<int, nlohmann::json> run_records(const std::string& connection, const std::string& table, const std::string& args,
                                           std::string* text = nullptr) {
  const std::string cmd = "'" + tests::shoal_binary() + "' --json --log-level warn --connection-string '" + connection +
                          "' records " + args + " --table " + table + " --queue q 2>&1";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {-1, {}};
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = ::pclose(p);
  if (text) *text = out;
  // The --json result is the line that starts with '{' (warnings may share the stream).
  nlohmann::json result;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with('{')) result = nlohmann::json::parse(line, nullptr, false);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), result};
}

TEST(WorkTableIt, RecordsCheckMigrateAndSweepCommands) {
  auto e = open_env(tests::unique_name("wtcli")); // [work] shards as the command reads it: 16
  const auto shards = all_shards(e.work);
  ASSERT_EQ(shards.size(), 16u);
  for (int i = 0; i < 5; ++i)
    write_layout1(e.table, "q", 16, "c" + std::to_string(i), "pending", "", 0, 0, {});
  const auto cs = tests::azurite_connection_string();

  auto [chk1, j1] = run_records(cs, e.table_name, "check");
  EXPECT_EQ(chk1, 1) << "layout-1 rows without tickets are problems";
  ASSERT_TRUE(j1.is_object()) << j1;
  EXPECT_EQ(j1["problems"].size(), 5u);

  auto [mig, jm] = run_records(cs, e.table_name, "migrate");
  EXPECT_EQ(mig, 0);
  ASSERT_TRUE(jm.is_object()) << jm;
  EXPECT_EQ(jm["migrated"], 5);
  EXPECT_TRUE(jm["skipped"].empty());

  auto [chk2, j2] = run_records(cs, e.table_name, "check");
  EXPECT_EQ(chk2, 0);
  ASSERT_TRUE(j2.is_object()) << j2;
  EXPECT_EQ(j2["records"], 5);
  EXPECT_EQ(j2["tickets"], 5);
  EXPECT_TRUE(j2["problems"].empty());

  drain_options d;
  ASSERT_TRUE(drain(e.work, "q", shards, "w", d, {}));
  auto [kept, jk] = run_records(cs, e.table_name, "sweep");
  EXPECT_EQ(kept, 0);
  ASSERT_TRUE(jk.is_object()) << jk;
  EXPECT_EQ(jk["removed"], 0) << "within done_retention_ms (a day by default)";
  // Retention 0: a done record goes once the server clock's lower bound has passed its last
  // change, which can be a few ms after the drain; sweep until it has (removals add up).
  std::int64_t removed = 0;
  nlohmann::json js;
  ASSERT_TRUE(eventually([&] {
    auto [swept, j] = run_records(cs, e.table_name, "sweep --retention-ms 0");
    EXPECT_EQ(swept, 0) << j;
    js = j;
    if (j.is_object() && j["removed"].is_number()) removed += j["removed"].get<std::int64_t>();
    return removed >= 5;
  }, 10s, 200ms)) << js;
  EXPECT_EQ(removed, 5);
  auto c = e.work.counts("q");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->by_status[record_status::done], 5u) << "swept records stay counted";
  expect_consistent(e.work, "q");

  std::string text;
  auto [bad, jb] = run_records("AccountName=nobody;no-equals-sign", e.table_name, "check", &text);
  EXPECT_GT(bad, 0);
  EXPECT_LT(bad, 128) << "an error exit, not a signal: " << text;
  EXPECT_NE(text.find("onnection"), std::string::npos) << text;
}

// -- typed records ---------------------------------------------------------------------------------

struct tracked_file {
  std::string path;
  std::int64_t size = 0;
  std::string checksum;
  bool processed = false;
  std::optional<double> score;
  system_clock::time_point seen{};
};

} // namespace

template <> struct record_schema<tracked_file> {
  static constexpr std::string_view table = "trackedfiles";
  static constexpr std::string_view partition = "files";
  static constexpr auto key = &tracked_file::path;
  static constexpr std::string_view processed_field = "processed";
  static constexpr auto fields = std::make_tuple(field("size", &tracked_file::size), field("checksum", &tracked_file::checksum),
                                                 field("processed", &tracked_file::processed), field("score", &tracked_file::score),
                                                 field("seen", &tracked_file::seen));
};

namespace {

TEST(RecordTableIt, TypedRecordsCrudAndUnprocessedQuery) {
  auto pipe = make_pipeline({});
  auto tc = storage::table_client::make(pipe, tests::unique_name("trk"));
  ASSERT_TRUE(tc);
  record_table<tracked_file> files(*tc);
  ASSERT_TRUE(files.create_table_if_missing());
  auto now = storage::to_table_time(system_clock::now());
  tracked_file a{"in/a.json", 10, "x1", false, 0.5, system_clock::time_point(duration_cast<system_clock::duration>(now.time_since_epoch()))};
  tracked_file b{"in/b.json", 20, "x2", true, std::nullopt, {}};
  ASSERT_TRUE(files.create(a));
  ASSERT_TRUE(files.create(b));
  auto dup = files.create(a);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, errc::conflict);

  auto ra = files.read("in/a.json");
  ASSERT_TRUE(ra) << ra.error().describe();
  EXPECT_EQ(ra->value.path, "in/a.json");
  EXPECT_EQ(ra->value.size, 10);
  EXPECT_EQ(ra->value.score, 0.5);
  EXPECT_EQ(ra->value.seen, a.seen);
  auto todo = files.unprocessed();
  ASSERT_TRUE(todo) << todo.error().describe();
  ASSERT_EQ(todo->size(), 1u);
  EXPECT_EQ(todo->front().value.path, "in/a.json");

  auto upd = ra->value;
  upd.processed = true;
  auto etag = files.update(upd, ra->etag);
  ASSERT_TRUE(etag) << etag.error().describe();
  auto stale = files.update(upd, ra->etag);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::conflict);
  todo = files.unprocessed();
  ASSERT_TRUE(todo);
  EXPECT_TRUE(todo->empty());
  ASSERT_TRUE(files.remove("in/b.json"));
  auto gone = files.read("in/b.json");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
}

} // namespace
} // namespace shoal::workers
