// Unit tests of the per-process stats files `shoal run` adds up (workers/process_stats.hpp).

#include "workers/process_stats.hpp"

#include "storage/connection_string.hpp"
#include "tests/support/fake_transport.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace shoal::workers {
namespace {

namespace fs = std::filesystem;

TEST(ProcessStatsTest, WrittenAtExitAndReadBackWithCpuAndRequests) {
  const fs::path dir = fs::temp_directory_path() / ("shoal-stats-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto transport = std::make_shared<tests::fake_transport>();
  transport->respond(201);
  auto p = storage::pipeline::make(*storage::parse_connection_string("UseDevelopmentStorage=true"), {}, transport);
  ASSERT_TRUE(p);
  storage::storage_request put;
  put.method = storage::http_method::put;
  put.path = "/statscont/b";
  ASSERT_TRUE(p->send(storage::service::blob, put));
  std::uint64_t spin = 0; // some CPU time to report
  for (std::uint64_t i = 0; i < 20'000'000; ++i)
    spin = spin * 31 + i;
  EXPECT_NE(spin, 1u);
  ::unsetenv(stats_dir_env);
  write_process_stats("unit"); // no folder named: nothing written
  EXPECT_TRUE(read_process_stats(dir).empty());
  ::setenv(stats_dir_env, dir.c_str(), 1);
  write_process_stats("unit");
  ::unsetenv(stats_dir_env);
  std::ofstream(dir / "broken.json") << "{not json";
  const auto all = read_process_stats(dir);
  ASSERT_EQ(all.size(), 1u) << "the broken file is skipped";
  EXPECT_EQ(all[0].command, "unit");
  EXPECT_EQ(all[0].pid, ::getpid());
  EXPECT_GT(all[0].cpu_s, 0.0);
  std::uint64_t puts = 0;
  for (const auto& r : all[0].requests)
    if (r.svc == storage::service::blob && r.op == "put" && r.resource == "statscont")
      puts += r.count;
  EXPECT_EQ(puts, 1u);
  EXPECT_TRUE(fs::exists(dir / ("unit-" + std::to_string(::getpid()) + ".json")));
  fs::remove_all(dir);
}

TEST(ProcessStatsTest, CpuSecondsOfAProcessByPid) {
  auto self = process_cpu_seconds(::getpid());
  ASSERT_TRUE(self);
  EXPECT_GE(*self, 0.0);
  EXPECT_FALSE(process_cpu_seconds(-7));
}

} // namespace
} // namespace shoal::workers
