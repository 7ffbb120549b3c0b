// assign_shards: every shard exactly once, exact weighted balance, minimal movement, determinism.
#include "workers/fleet/assignment.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace shoal::workers::fleet {
namespace {

void expect_partition(const shard_map& m, std::uint32_t shards) {
  std::vector<int> seen(shards, 0);
  for (const auto& [h, list] : m) {
    EXPECT_TRUE(std::is_sorted(list.begin(), list.end())) << h;
    for (auto s : list) {
      ASSERT_LT(s, shards) << h;
      ++seen[s];
    }
  }
  for (std::uint32_t s = 0; s < shards; ++s) EXPECT_EQ(seen[s], 1) << "shard " << s;
}

std::vector<assignment_host> hosts_named(std::initializer_list<const char*> names, std::uint32_t w = 1) {
  std::vector<assignment_host> out;
  for (auto* n : names) out.push_back({n, w});
  return out;
}

TEST(CoordinatorAssignment, OneHostGetsEveryShard) {
  auto m = assign_shards(16, {{"a", 4}});
  ASSERT_EQ(m.size(), 1u);
  std::vector<std::uint32_t> all(16);
  for (std::uint32_t i = 0; i < 16; ++i) all[i] = i;
  EXPECT_EQ(m["a"], all);
}

TEST(CoordinatorAssignment, NoHostsNoAssignment) { EXPECT_TRUE(assign_shards(16, {}).empty()); }

TEST(CoordinatorAssignment, EveryShardExactlyOnceForManySizes) {
  for (std::uint32_t shards : {1u, 2u, 3u, 7u, 16u, 64u, 257u})
    for (std::size_t n = 1; n <= 9; ++n) {
      std::vector<assignment_host> hosts;
      for (std::size_t i = 0; i < n; ++i) hosts.push_back({"host" + std::to_string(i), static_cast<std::uint32_t>(1 + i % 3)});
      auto m = assign_shards(shards, hosts);
      EXPECT_EQ(m.size(), n);
      expect_partition(m, shards);
    }
}

TEST(CoordinatorAssignment, EqualWeightsBalanceWithinOne) {
  auto m = assign_shards(64, hosts_named({"a", "b", "c"}));
  std::set<std::size_t> sizes;
  for (const auto& [h, l] : m) sizes.insert(l.size());
  EXPECT_LE(*sizes.rbegin() - *sizes.begin(), 1u);
}

TEST(CoordinatorAssignment, WeightsByWorkerCount) {
  auto m = assign_shards(60, {{"small", 1}, {"big", 2}, {"huge", 3}});
  EXPECT_EQ(m["small"].size(), 10u);
  EXPECT_EQ(m["big"].size(), 20u);
  EXPECT_EQ(m["huge"].size(), 30u);
  auto q = shard_quotas(7, {{"a", 1}, {"b", 1}, {"c", 1}});
  EXPECT_EQ(q["a"] + q["b"] + q["c"], 7u);
  EXPECT_EQ(q["a"], 3u); // the leftover goes to the first name on equal remainders
}

TEST(CoordinatorAssignment, ZeroWeightGetsNothingUnlessAllZero) {
  auto m = assign_shards(16, {{"a", 0}, {"b", 2}});
  EXPECT_TRUE(m["a"].empty());
  EXPECT_EQ(m["b"].size(), 16u);
  auto z = assign_shards(16, {{"a", 0}, {"b", 0}});
  EXPECT_EQ(z["a"].size(), 8u);
  EXPECT_EQ(z["b"].size(), 8u);
}

TEST(CoordinatorAssignment, MoreHostsThanShards) {
  auto m = assign_shards(2, hosts_named({"a", "b", "c", "d"}));
  expect_partition(m, 2);
  std::size_t with = 0;
  for (const auto& [h, l] : m) with += l.empty() ? 0 : 1;
  EXPECT_EQ(with, 2u);
}

TEST(CoordinatorAssignment, DeterministicWhateverTheHostOrder) {
  auto a = assign_shards(32, hosts_named({"x", "y", "z"}));
  auto b = assign_shards(32, hosts_named({"z", "x", "y"}));
  EXPECT_EQ(a, b);
  EXPECT_EQ(assign_shards(32, hosts_named({"x", "y", "z"}), a), a); // a fixed point
}

TEST(CoordinatorAssignment, DuplicateHostCountsOnce) {
  auto m = assign_shards(8, {{"a", 1}, {"a", 5}, {"b", 1}});
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m["a"].size(), 4u);
}

TEST(CoordinatorAssignment, JoinMovesOnlyTheNewHostsQuota) {
  for (std::uint32_t shards : {16u, 64u, 100u}) {
    auto before = assign_shards(shards, hosts_named({"a", "b", "c"}));
    auto hosts = hosts_named({"a", "b", "c", "d"});
    auto after = assign_shards(shards, hosts, before);
    expect_partition(after, shards);
    auto quota = shard_quotas(shards, hosts);
    EXPECT_EQ(moved_shards(before, after), quota["d"]) << shards;
    // every moved shard went to the newcomer, and nothing moved between old hosts
    for (const char* h : {"a", "b", "c"})
      for (auto s : after[h]) EXPECT_TRUE(std::binary_search(before[h].begin(), before[h].end(), s)) << h << s;
  }
}

TEST(CoordinatorAssignment, LeaveMovesOnlyTheLeaversShards) {
  auto before = assign_shards(64, hosts_named({"a", "b", "c", "d"}));
  auto after = assign_shards(64, hosts_named({"a", "b", "d"}), before);
  expect_partition(after, 64);
  EXPECT_EQ(moved_shards(before, after), before["c"].size());
  for (const char* h : {"a", "b", "d"})
    for (auto s : before[h]) EXPECT_TRUE(std::binary_search(after[h].begin(), after[h].end(), s)) << h << s;
}

TEST(CoordinatorAssignment, WeightChangeMovesOnlyTheDifference) {
  auto before = assign_shards(60, {{"a", 1}, {"b", 1}});
  auto after = assign_shards(60, {{"a", 2}, {"b", 1}}, before);
  expect_partition(after, 60);
  EXPECT_EQ(after["a"].size(), 40u);
  EXPECT_EQ(moved_shards(before, after), 10u);
}

TEST(CoordinatorAssignment, WithoutHistoryRendezvousKeepsMostShardsOnJoin) {
  // A new coordinator that never saw the old assignment still moves little: rendezvous order.
  auto before = assign_shards(64, hosts_named({"a", "b", "c"}));
  auto after = assign_shards(64, hosts_named({"a", "b", "c", "d"}));
  expect_partition(after, 64);
  EXPECT_LT(moved_shards(before, after), 32u);
}

TEST(CoordinatorAssignment, StaleHistoryIsIgnored) {
  shard_map prev{{"a", {0, 1, 2, 99}}, {"gone", {3, 4}}, {"b", {0}}};
  auto m = assign_shards(8, hosts_named({"a", "b"}), prev);
  expect_partition(m, 8);
  EXPECT_EQ(m["a"].size(), 4u);
  for (auto s : {0u, 1u, 2u}) EXPECT_TRUE(std::binary_search(m["a"].begin(), m["a"].end(), s));
}

TEST(CoordinatorAssignment, MovedShardsCountsBothSides) {
  EXPECT_EQ(moved_shards({{"a", {0, 1}}}, {{"a", {0}}, {"b", {1, 2}}}), 2u);
  EXPECT_EQ(moved_shards({}, {}), 0u);
}

} // namespace
} // namespace shoal::workers::fleet
