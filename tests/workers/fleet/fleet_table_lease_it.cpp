// fleet_table against Azurite: the coordinator lease (acquire, renew, takeover after expiry,
// release, two contenders → one holder) and host rows.
#include "workers/fleet/fleet_table.hpp"

#include "storage/table_client.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace shoal::workers::fleet {
namespace {

using namespace std::chrono_literals;

fleet_table open_table(const std::string& name) {
  auto svc = storage::table_service_client::from_connection_string(tests::azurite_connection_string());
  EXPECT_TRUE(svc) << svc.error().message;
  auto t = svc->table(name);
  EXPECT_TRUE(t) << t.error().message;
  auto ft = fleet_table::open(*t);
  EXPECT_TRUE(ft) << ft.error().describe();
  return *ft;
}

lease_candidate candidate(const std::string& host) {
  return {host, host + "-instance", "tcp://127.0.0.1:1/" + host, "key-of-" + host};
}

TEST(FleetTableLease, FirstCandidateTakesTheLeaseOthersSeeIt) {
  auto t = open_table(tests::unique_name("fleetlease"));
  auto none = t.coordinator();
  ASSERT_TRUE(none) << none.error().describe();
  EXPECT_FALSE(none->has_value());

  auto a = t.acquire(candidate("a"), 10s);
  ASSERT_TRUE(a) << a.error().describe();
  ASSERT_TRUE(a->held);
  EXPECT_EQ(a->row->host, "a");
  EXPECT_EQ(a->row->epoch, 1);
  EXPECT_GT(a->valid_until, std::chrono::steady_clock::now());

  auto b = t.acquire(candidate("b"), 10s);
  ASSERT_TRUE(b) << b.error().describe();
  EXPECT_FALSE(b->held);
  ASSERT_TRUE(b->row);
  EXPECT_EQ(b->row->host, "a");
  EXPECT_EQ(b->row->endpoint, "tcp://127.0.0.1:1/a");
  EXPECT_EQ(b->row->public_key, "key-of-a");
}

TEST(FleetTableLease, HolderRenewsAndAcquireRenewsToo) {
  auto t = open_table(tests::unique_name("fleetlease"));
  auto a = t.acquire(candidate("a"), 5s);
  ASSERT_TRUE(a && a->held);
  auto r = t.renew(*a->row, 5s);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_NE(r->row->etag, a->row->etag);
  // Written from the upper bound of the server clock: at least the lease from the server's now.
  EXPECT_GE(r->row->lease_until, t.server_now() + 4900ms);
  EXPECT_FALSE(t.expired(*r->row));
  EXPECT_EQ(r->row->epoch, 1);
  // The same instance asking again renews (same epoch).
  auto again = t.acquire(candidate("a"), 5s);
  ASSERT_TRUE(again && again->held);
  EXPECT_EQ(again->row->epoch, 1);
  // The old ETag no longer renews: someone (here: ourselves) wrote since.
  auto stale = t.renew(*a->row, 5s);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::lease_lost);
}

TEST(FleetTableLease, TakeoverAfterExpiryBumpsTheEpoch) {
  auto t = open_table(tests::unique_name("fleetlease"));
  const auto t0 = std::chrono::steady_clock::now();
  auto a = t.acquire(candidate("a"), 1500ms);
  ASSERT_TRUE(a && a->held);
  auto b = t.acquire(candidate("b"), 1500ms);
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->held) << "the lease has not expired yet";
  EXPECT_TRUE(tests::eventually(
      [&] {
        b = t.acquire(candidate("b"), 1500ms);
        return !b || b->held; // an error ends the wait, and fails below
      },
      10s, 200ms));
  ASSERT_TRUE(b) << b.error().describe();
  ASSERT_TRUE(b->held) << "b never took the expired lease";
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 1500ms) << "taken over before the lease could have expired";
  EXPECT_EQ(b->row->host, "b");
  EXPECT_EQ(b->row->epoch, 2);
  // a's renewal with its old ETag fails: it must stop acting as coordinator.
  auto lost = t.renew(*a->row, 1500ms);
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().code, errc::lease_lost);
}

TEST(FleetTableLease, ReleaseLetsAnotherTakeOverAtOnce) {
  auto t = open_table(tests::unique_name("fleetlease"));
  auto a = t.acquire(candidate("a"), 60s);
  ASSERT_TRUE(a && a->held);
  ASSERT_TRUE(t.release(*a->row));
  auto row = t.coordinator();
  ASSERT_TRUE(row && row->has_value());
  EXPECT_TRUE(t.expired(**row));
  auto b = t.acquire(candidate("b"), 60s);
  ASSERT_TRUE(b) << b.error().describe();
  EXPECT_TRUE(b->held);
  EXPECT_EQ(b->row->epoch, 2);
  // Releasing with a stale ETag is refused.
  auto stale = t.release(*a->row);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::lease_lost);
}

TEST(FleetTableLease, TwoContendersOneHolder) {
  const auto name = tests::unique_name("fleetlease");
  for (int round = 0; round < 5; ++round) {
    auto t1 = open_table(name + "r" + std::to_string(round));
    auto t2 = t1; // shares the client, separate calls
    std::atomic<int> held{0};
    std::atomic<int> errors{0};
    std::string winner;
    std::mutex mu;
    auto contend = [&](fleet_table& t, const std::string& host) {
      auto r = t.acquire(candidate(host), 30s);
      if (!r) {
        ++errors;
        return;
      }
      if (r->held) {
        ++held;
        std::lock_guard lock(mu);
        winner = host;
      }
    };
    std::thread x([&] { contend(t1, "x"); });
    std::thread y([&] { contend(t2, "y"); });
    x.join();
    y.join();
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(held.load(), 1) << "round " << round;
    auto row = t1.coordinator();
    ASSERT_TRUE(row && row->has_value());
    EXPECT_EQ((*row)->host, winner);
  }
}

TEST(FleetTableLease, HostRowsRoundTrip) {
  auto t = open_table(tests::unique_name("fleethosts"));
  ASSERT_TRUE(t.put_host({"h1", "i1", "tcp://10.0.0.1:7000", "pk1", 4, {}}));
  ASSERT_TRUE(t.put_host({"h2", "i2", "", "", 2, {}}));
  auto hosts = t.hosts();
  ASSERT_TRUE(hosts) << hosts.error().describe();
  ASSERT_EQ(hosts->size(), 2u);
  EXPECT_EQ((*hosts)[0].host, "h1");
  EXPECT_EQ((*hosts)[0].workers, 4u);
  EXPECT_EQ((*hosts)[0].endpoint, "tcp://10.0.0.1:7000");
  EXPECT_EQ((*hosts)[0].public_key, "pk1");
  EXPECT_LT(std::chrono::abs(t.server_now() - (*hosts)[0].heartbeat), 5s);
  ASSERT_TRUE(t.remove_host("h1"));
  ASSERT_TRUE(t.remove_host("h1")); // absent is fine
  hosts = t.hosts();
  ASSERT_TRUE(hosts);
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].host, "h2");
}

} // namespace
} // namespace shoal::workers::fleet
