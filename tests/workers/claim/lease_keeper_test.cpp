// Deterministic lease-keeper tests over the fake transport: a manual steady clock, a fake
// "server" whose clock advances with it, and an outage switched on at a chosen instant.

#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "tests/support/fake_transport.hpp"
#include "workers/claim/claimer.hpp"
#include "workers/claim/work_table.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <memory>
#include <mutex>

namespace shoal::workers {
namespace {

using namespace std::chrono;
using namespace std::chrono_literals;

// Server time = base + (manual steady time − t0), i.e. the fake server's clock runs with ours.
struct fake_world {
  std::mutex mu;
  steady_clock::time_point t0{seconds(1000)};
  steady_clock::time_point now = t0;
  system_clock::time_point base = sys_days{2026y / 11 / 21} + 12h;
  std::atomic<bool> down{false};

  steady_clock::time_point steady() {
    std::lock_guard lock(mu);
    return now;
  }
  void advance(milliseconds d) {
    std::lock_guard lock(mu);
    now += d;
  }
  system_clock::time_point server_time() { return base + duration_cast<system_clock::duration>(steady() - t0); }

  static std::string date_header(system_clock::time_point t) {
    std::time_t s = system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&s, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return buf;
  }
  static std::string etag(system_clock::time_point t) {
    std::time_t s = system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&s, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H%%3A%M%%3A%S", &tm);
    auto ticks = duration_cast<duration<std::int64_t, std::ratio<1, 10'000'000>>>(t.time_since_epoch()).count() % 10'000'000;
    char frac[16];
    std::snprintf(frac, sizeof frac, ".%07lld", static_cast<long long>(ticks));
    return std::string("W/\"datetime'") + buf + frac + "Z'\"";
  }

  // Answers table requests like a server that accepts every conditional write.
  storage::result<storage::http_response> answer(const storage::http_request& req) {
    if (down.load())
      return std::unexpected(storage::error{storage::errc::transport, 0, {}, {}, true, 1, "fake: network down"});
    auto t = server_time();
    storage::http_response r;
    r.headers = {{"date", date_header(t)}, {"x-ms-request-id", "fake"}};
    if (req.method == storage::http_method::get) {
      r.status = 200;
      r.headers.push_back({"content-type", "application/json;odata=minimalmetadata"});
      r.body = "{\"value\":[]}";
    } else if (req.url.find("$batch") != std::string::npos) {
      // An entity group transaction (completions are one: ticket delete + record merge): every
      // operation succeeds, each part with a 204 and an ETag.
      std::size_t ops = 0;
      for (auto at = req.body.find("application/http"); at != std::string::npos; at = req.body.find("application/http", at + 1))
        ++ops;
      r.status = 202;
      r.headers.push_back({"content-type", "multipart/mixed; boundary=batchresponse_fake"});
      r.body = "--batchresponse_fake\r\nContent-Type: multipart/mixed; boundary=changesetresponse_fake\r\n\r\n";
      for (std::size_t i = 0; i < ops; ++i)
        r.body += "--changesetresponse_fake\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                  "HTTP/1.1 204 No Content\r\nETag: " + etag(t) + "\r\n\r\n\r\n";
      r.body += "--changesetresponse_fake--\r\n--batchresponse_fake--\r\n";
    } else {
      r.status = 204;
      r.headers.push_back({"etag", etag(t)});
    }
    return r;
  }
};

struct keeper_fixture {
  std::shared_ptr<fake_world> world = std::make_shared<fake_world>();
  std::shared_ptr<tests::fake_transport> fake = std::make_shared<tests::fake_transport>();
  std::optional<work_table> table;

  keeper_fixture() {
    fake->otherwise([w = world](const storage::http_request& req) { return w->answer(req); });
    storage::storage_account account;
    account.name = "devstoreaccount1";
    account.key = "key";
    account.table_endpoint = "http://127.0.0.1:1/devstoreaccount1";
    storage::pipeline_options po;
    po.retry.max_attempts = 1;
    po.hooks.sleep = [](milliseconds) {};
    auto p = storage::pipeline::make(account, po, fake);
    EXPECT_TRUE(p) << p.error().describe();
    auto tc = storage::table_client::make(*p, "work");
    EXPECT_TRUE(tc) << tc.error().describe();
    work_table_options o;
    o.work.lease_ms = 3000;
    o.work.lease_renew_ms = 1000;
    o.steady_now = [w = world] { return w->steady(); };
    auto wt = work_table::make(*tc, std::nullopt, o);
    EXPECT_TRUE(wt) << wt.error().describe();
    table = *wt;
  }

  claimed_record claimed() {
    claimed_record r;
    r.queue = "q";
    r.id = "r1";
    r.partition_key = "q-00";
    r.row_key = "r1";
    r.ticket = "%|1970-01-01T00:00:00.0000000Z|r1";
    r.owner = "me";
    r.gen = 1;
    r.attempts = 1;
    r.etag = fake_world::etag(world->server_time());
    r.deadline = world->steady() + 2000ms;
    return r;
  }
};

TEST(LeaseKeeper, RenewsWhileStorageAnswersAndGivesUpBeforeTheServerLeaseExpires) {
  keeper_fixture f;
  std::atomic<int> lost{0};
  lease_keeper keeper(*f.table, {1000ms, 100ms}, [&](const claimed_record&, const error& e) {
    EXPECT_EQ(e.code, errc::lease_lost);
    ++lost;
  });
  auto h = keeper.hold(f.claimed());
  // Five renewal periods with storage up: the lease is extended each time.
  system_clock::time_point last_lease_until{};
  for (int i = 0; i < 50; ++i) {
    f.world->advance(100ms);
    keeper.renew_due();
    ASSERT_FALSE(h.lost()) << "at step " << i;
  }
  EXPECT_GE(f.table->counters().snapshot().renewals, 4u);
  last_lease_until = h.record().lease_until;

  // Outage: every renewal fails from now on.
  f.world->down = true;
  steady_clock::time_point lost_at{};
  for (int i = 0; i < 500 && !h.lost(); ++i) {
    f.world->advance(10ms);
    keeper.renew_due();
    if (h.lost()) lost_at = f.world->steady();
  }
  ASSERT_TRUE(h.lost()) << "the keeper never gave the record up";
  // The server's clock at that instant is still before the lease it last granted.
  const auto server_at_lost = f.world->base + duration_cast<system_clock::duration>(lost_at - f.world->t0);
  EXPECT_LT(server_at_lost, last_lease_until);
  EXPECT_GE(last_lease_until - server_at_lost, 200ms) << "the safety margin (max(200 ms, lease/10)) was kept";
  EXPECT_EQ(lost.load(), 1);
  EXPECT_GE(f.table->counters().snapshot().renew_failures, 1u);
  EXPECT_EQ(f.table->counters().snapshot().local_expiries, 1u);
  EXPECT_EQ(keeper.held(), 0u);
  // Completing a lost record is still attempted: the conditional write decides (here storage
  // is down, so it fails; a record nobody re-claimed would complete once storage is back).
  auto late = keeper.complete(h);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, errc::storage);
  f.world->down = false;
  auto later = keeper.complete(h);
  EXPECT_TRUE(later) << later.error().describe();
}

TEST(LeaseKeeper, LostIsAPureClockCheckEvenWithoutTheRenewingThread) {
  keeper_fixture f;
  lease_keeper keeper(*f.table, {1000ms, 100ms});
  auto rec = f.claimed();
  rec.deadline = f.world->steady() + 500ms;
  auto h = keeper.hold(rec);
  f.world->advance(499ms);
  EXPECT_FALSE(h.lost());
  f.world->advance(1ms);
  EXPECT_TRUE(h.lost()) << "no renewal ran, so the deadline alone decides";
}

} // namespace
} // namespace shoal::workers
