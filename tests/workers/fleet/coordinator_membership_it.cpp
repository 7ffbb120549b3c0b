// Fleet memberships in one process on loopback tcp with CURVE keys, over one fleet table in
// Azurite: they agree on a coordinator, split the shards, refuse an unknown key, forward
// work.available to the shard's owner, and hand the lease over when the coordinator stops.
#include "workers/fleet/fleet_membership.hpp"

#include "storage/table_client.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"
#include "transport/curve.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

namespace shoal::workers::fleet {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// What one membership's hooks saw.
struct observed {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<host_assignment> assignments;
  std::vector<std::pair<std::string, std::int32_t>> work;
  host_assignment last() {
    std::lock_guard lock(mu);
    return assignments.empty() ? host_assignment{} : assignments.back();
  }
};

membership_hooks hooks_for(observed& o) {
  membership_hooks h;
  h.on_assignment = [&o](const host_assignment& a) {
    std::lock_guard lock(o.mu);
    o.assignments.push_back(a);
    o.cv.notify_all();
  };
  h.on_work_available = [&o](const std::string& q, std::int32_t s, std::uint32_t) {
    std::lock_guard lock(o.mu);
    o.work.emplace_back(q, s);
    o.cv.notify_all();
  };
  return h;
}

using shoal::tests::eventually; // tests/support/eventually.hpp

class CoordinatorMembership : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / tests::unique_name("fleetkeys");
    fs::create_directories(dir_ / "allow");
    table_ = tests::unique_name("fleetmem");
    auto svc = storage::table_service_client::from_connection_string(tests::azurite_connection_string());
    ASSERT_TRUE(svc);
    auto t = svc->table(table_);
    ASSERT_TRUE(t);
    client_ = *t;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Writes NAME.key / NAME.pub; `allowed` also copies the .pub into the shared allow dir.
  void make_keys(const std::string& name, bool allowed) {
    auto k = transport::generate_curve_key_pair();
    ASSERT_TRUE(k);
    ASSERT_TRUE(transport::save_curve_key_pair(*k, dir_ / (name + ".pub"), dir_ / (name + ".key")));
    if (allowed) fs::copy_file(dir_ / (name + ".pub"), dir_ / "allow" / (name + ".pub"));
  }

  config cfg_for(const std::string& name, bool keys = true) {
    config c;
    c.work.shards = 16;
    c.fleet.table = table_;
    c.fleet.heartbeat_interval_ms = 100;
    c.fleet.heartbeat_liveness = 3;
    c.fleet.coordinator_lease_ms = 2000;
    c.fleet.coordinator_renew_ms = 300;
    c.fleet.host_endpoint = "tcp://127.0.0.1:0";
    if (keys) {
      c.fleet.curve_secret_key = (dir_ / (name + ".key")).string();
      c.fleet.curve_public_key = (dir_ / (name + ".pub")).string();
      c.fleet.curve_allow_dir = (dir_ / "allow").string();
    }
    return c;
  }

  result<std::unique_ptr<membership>> start(const std::string& name, std::uint32_t workers, observed& o,
                                            std::optional<config> c = {}) {
    fleet_membership_options opts;
    opts.table = client_;
    opts.first_assign_wait = 5s;
    return start_fleet_membership(c ? *c : cfg_for(name), name, workers, hooks_for(o), opts);
  }

  fs::path dir_;
  std::string table_;
  std::optional<storage::table_client> client_;
};

bool split_exactly(const std::vector<host_assignment>& parts, std::uint32_t shards) {
  std::multiset<std::uint32_t> all;
  for (const auto& p : parts) {
    if (p.shards.empty()) return false;
    all.insert(p.shards.begin(), p.shards.end());
  }
  if (all.size() != shards) return false;
  for (std::uint32_t s = 0; s < shards; ++s)
    if (all.count(s) != 1) return false;
  return true;
}

TEST_F(CoordinatorMembership, SingleHostIsItsOwnCoordinatorWithEveryShard) {
  observed o;
  config c = cfg_for("solo", false);
  c.fleet.host_endpoint.clear();
  auto m = start("solo", 2, o, c);
  ASSERT_TRUE(m) << m.error().describe();
  EXPECT_TRUE((*m)->is_coordinator());
  auto a = (*m)->assignment();
  EXPECT_EQ(a.shards.size(), 16u);
  EXPECT_EQ(a.coordinator, "solo");
  EXPECT_GT(a.epoch, 0u);
  ASSERT_EQ((*m)->hosts().size(), 1u);
  (*m)->announce_work("q", 3, 1);
  EXPECT_TRUE(eventually([&] { std::lock_guard l(o.mu); return o.work.size() == 1; }, 2s));
  (*m)->stop();
}

TEST_F(CoordinatorMembership, TcpEndpointWithoutKeysIsRefused) {
  observed o;
  auto m = start("nokeys", 2, o, cfg_for("nokeys", false));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, errc::invalid_argument);
  EXPECT_NE(m.error().message.find("CURVE"), std::string::npos) << m.error().message;
}

TEST_F(CoordinatorMembership, TwoHostsAgreeSplitForwardAndHandOver) {
  make_keys("a", true);
  make_keys("b", true);
  make_keys("c", false);
  observed oa, ob, oc;
  auto a = start("a", 2, oa);
  ASSERT_TRUE(a) << a.error().describe();
  ASSERT_TRUE((*a)->is_coordinator());
  EXPECT_EQ(oa.last().shards.size(), 16u);

  auto b = start("b", 2, ob);
  ASSERT_TRUE(b) << b.error().describe();
  EXPECT_FALSE((*b)->is_coordinator());
  ASSERT_TRUE(eventually([&] { return split_exactly({(*a)->assignment(), (*b)->assignment()}, 16); }, 5s))
      << "a has " << (*a)->assignment().shards.size() << ", b has " << (*b)->assignment().shards.size();
  EXPECT_EQ((*a)->assignment().shards.size(), 8u);
  EXPECT_EQ((*b)->assignment().coordinator, "a");
  ASSERT_TRUE(eventually([&] { return (*b)->hosts().size() == 2 && (*a)->hosts().size() == 2; }, 3s));

  // A host whose key is not in the allow dir is refused and never gets shards.
  auto c = start("c", 2, oc);
  ASSERT_FALSE(c) << "c was admitted";
  EXPECT_EQ(c.error().code, errc::conflict);
  EXPECT_NE(c.error().message.find("allow"), std::string::npos) << c.error().message;
  EXPECT_TRUE(oc.last().shards.empty());
  EXPECT_EQ((*a)->hosts().size(), 2u);

  // Work announced on b for a shard a owns reaches a (through the coordinator), not b.
  auto shard_of_a = static_cast<std::int32_t>((*a)->assignment().shards.front());
  (*b)->announce_work("q", shard_of_a, 5);
  EXPECT_TRUE(eventually([&] { std::lock_guard l(oa.mu); return !oa.work.empty(); }, 3s));
  {
    std::lock_guard l(oa.mu);
    ASSERT_FALSE(oa.work.empty());
    EXPECT_EQ(oa.work.front(), std::make_pair(std::string("q"), shard_of_a));
  }
  {
    std::lock_guard l(ob.mu);
    EXPECT_TRUE(ob.work.empty());
  }
  // And the other way: the coordinator forwards to b.
  auto shard_of_b = static_cast<std::int32_t>((*b)->assignment().shards.front());
  (*a)->announce_work("q", shard_of_b, 1);
  EXPECT_TRUE(eventually([&] { std::lock_guard l(ob.mu); return !ob.work.empty(); }, 3s));

  // Stopping the coordinator releases the lease: b takes it at once (well before the 2 s
  // lease would expire on its own) and gets every shard.
  auto t0 = std::chrono::steady_clock::now();
  (*a)->stop();
  ASSERT_TRUE(eventually([&] { return (*b)->is_coordinator() && (*b)->assignment().shards.size() == 16; }, 5s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_GT((*b)->assignment().epoch, oa.last().epoch);
  (*b)->stop();
}

TEST_F(CoordinatorMembership, ThreeHostsWeightedAndAMemberLeaving) {
  make_keys("a", true);
  make_keys("b", true);
  make_keys("c", true);
  observed oa, ob, oc;
  auto a = start("a", 1, oa);
  ASSERT_TRUE(a) << a.error().describe();
  auto b = start("b", 1, ob);
  ASSERT_TRUE(b) << b.error().describe();
  auto c = start("c", 2, oc);
  ASSERT_TRUE(c) << c.error().describe();
  ASSERT_TRUE(eventually([&] {
    return split_exactly({(*a)->assignment(), (*b)->assignment(), (*c)->assignment()}, 16) &&
           (*c)->assignment().shards.size() == 8;
  }, 5s));
  EXPECT_EQ((*a)->assignment().shards.size(), 4u);
  // A member leaves: its shards go to the others, the coordinator's own shards stay.
  auto a_before = (*a)->assignment().shards;
  (*c)->stop();
  ASSERT_TRUE(eventually([&] { return split_exactly({(*a)->assignment(), (*b)->assignment()}, 16); }, 3s));
  auto a_after = (*a)->assignment().shards;
  for (auto s : a_before) EXPECT_TRUE(std::binary_search(a_after.begin(), a_after.end(), s)) << s;
  // More workers on b: it gets more shards (set_local_workers after a SIGHUP).
  (*b)->set_local_workers(3);
  ASSERT_TRUE(eventually([&] { return (*b)->assignment().shards.size() == 12; }, 3s));
  (*b)->stop();
  (*a)->stop();
}

} // namespace
} // namespace shoal::workers::fleet
