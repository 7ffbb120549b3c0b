// The chaos suite, short version (issue 16; ctest -L chaos): every scenario of chaos.hpp at
// run_size::short_run() against the fixtures' Azurite through the fault proxy. Each must end
// with every good record in SQL exactly once, the bad ones quarantined, nothing lost, nothing
// duplicated, nothing dead, pending or claimed. `bench/run.sh chaos` runs the same scenarios
// longer (run_size::full_run()) and prints the table of figures.

#include "tests/support/azurite.hpp"
#include "tests/system/chaos/chaos.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <iostream>

namespace shoal::tests::chaos {
namespace {

namespace fs = std::filesystem;

environment fixture_environment_logged() {
  environment env = fixture_environment();
  env.log = [](const std::string& line) { std::cout << line << std::endl; };
  return env;
}

class ChaosIt : public ::testing::TestWithParam<std::string> {};

TEST_P(ChaosIt, EveryGoodRecordLandsInSqlExactlyOnce) {
  auto env = fixture_environment_logged();
  fs::create_directories(env.work_dir);
  const auto r = run_scenario(GetParam(), env, run_size::short_run());
  std::cout << format_table({r});
  if (r.skipped) GTEST_SKIP() << r.skip_reason;
  for (const auto& n : r.notes) std::cout << n << "\n";
  EXPECT_EQ(r.lost, 0u);
  EXPECT_EQ(r.duplicates, 0u);
  EXPECT_EQ(r.quarantined, r.bad);
  EXPECT_EQ(r.dead, 0u);
  EXPECT_EQ(r.pending + r.claimed, 0u);
  EXPECT_GT(r.records, 0u);
  std::string problems;
  for (const auto& p : r.problems) problems += "  - " + p + "\n";
  EXPECT_TRUE(r.problems.empty()) << problems;
  std::error_code ec;
  if (!HasFailure() && !env.keep) fs::remove_all(env.work_dir, ec);
  else std::cout << "scenario folder kept: " << env.work_dir << "\n";
}

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string out;
  bool up = true;
  for (char c : info.param) {
    if (c == '-') {
      up = true;
      continue;
    }
    out += up ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    up = false;
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Scenarios, ChaosIt, ::testing::ValuesIn(scenario_names()), test_name);

TEST(ChaosSoakIt, TheFirstSampleFindsEveryProcessUp) {
  // The soak's table starts with this sample; it used to be taken before the processes had
  // started (the persistor and supervisor at 0.0 MiB, the workers "-"). 20 s of the soak's
  // pipeline (`bench/run.sh soak` runs 30 minutes).
  auto env = fixture_environment_logged();
  fs::create_directories(env.work_dir);
  const auto r = run_soak(env, std::chrono::seconds(20), 80, std::chrono::seconds(5));
  std::cout << format_soak(r);
  std::string problems;
  for (const auto& p : r.problems) problems += "  - " + p + "\n";
  EXPECT_TRUE(r.problems.empty()) << problems;
  ASSERT_GE(r.samples.size(), 2u);
  const auto& first = r.samples.front().processes;
  for (const std::string role : {"persistor", "supervisor", "send", "worker 1", "worker 2", "worker 3"}) {
    auto it = first.find(role);
    ASSERT_NE(it, first.end()) << role << " is missing from the first sample";
    EXPECT_GT(it->second.first, 8 * 1024) << role << ": RSS " << it->second.first << " KiB in the first sample";
    EXPECT_GT(it->second.second, 8) << role << ": " << it->second.second << " descriptors in the first sample";
  }
  EXPECT_GT(r.records, 0u);
  std::error_code ec;
  if (!HasFailure() && !env.keep) fs::remove_all(env.work_dir, ec);
  else std::cout << "soak folder kept: " << env.work_dir << "\n";
}

} // namespace
} // namespace shoal::tests::chaos
