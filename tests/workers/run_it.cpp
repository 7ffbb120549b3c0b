// `shoal run` end to end as a user starts it: real processes (persistor, send, ETL), the
// fixture's Azurite, real data from vega-datasets, a verified summary.

#include "tests/support/azurite.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace shoal::workers {
namespace {

namespace fs = std::filesystem;

struct run_output {
  int status = -1;
  std::string text;
};

// Runs `shoal --config <dir>/shoal.toml --connection-string <fixture> run <args>` in `dir`,
// capturing stdout+stderr. The config gives this test its own work table, queue, container and
// catalog: other suites share the fixture's Azurite and run `etl run` on the default names.
run_output run_shoal(const fs::path& dir, const std::string& args, const std::string& global = {}) {
  const std::string cmd = "cd '" + dir.string() + "' && '" + tests::shoal_binary() +
                          "' --config shoal.toml --log-level warn --connection-string '" +
                          tests::azurite_connection_string() + "' " + global + " run " + args + " 2>&1";
  run_output out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p)
    return out;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0)
    out.text.append(buf.data(), n);
  int st = ::pclose(p);
  out.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
  return out;
}

class RunIt : public ::testing::Test {
protected:
  fs::path dir = fs::temp_directory_path() / tests::unique_name("shoalrun");
  std::string runs_table_;
  void SetUp() override {
    fs::create_directories(dir);
    const std::string name = tests::unique_name("run");
    runs_table_ = name + "r";
    std::string lower;
    for (char c : name)
      lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::ofstream(dir / "shoal.toml") << "[work]\ntable = \"" << name << "w\"\n"
                                      << "[etl]\nqueue = \"etl\"\ncontainer = \"" << lower
                                      << "\"\nruns_table = \"" << name << "r\"\n"
                                      << "[persistor]\ncontainer = \"" << lower << "\"\n"
                                      << "[catalog]\ntable = \"" << name << "c\"\n"
                                      << "[fleet]\ntable = \"" << name << "f\"\n";
  }
  void TearDown() override {
    if (!HasFailure())
      fs::remove_all(dir);
  }
};

TEST_F(RunIt, LoadsFlights20kEndToEndAndVerifies) {
  auto r = run_shoal(dir, "--dataset flights-20k --workers 4 --db shoal.db --run-dir run", "--json");
  ASSERT_EQ(r.status, 0) << r.text;
  // What it cost: every process's storage requests and CPU seconds (their stats files).
  EXPECT_NE(r.text.find("  storage requests        "), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("  CPU seconds             send "), std::string::npos) << r.text;
  const auto line = r.text.substr(r.text.rfind("\n{") + 1);
  const auto j = nlohmann::json::parse(line, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << line;
  // The send starts once the persistor listens: its start-up is timed on its own, not in the
  // records/s of the stages.
  EXPECT_GT(j.value("persistor_start_s", 0.0), 0.0) << line;
  EXPECT_NE(r.text.find("  persistor start         "), std::string::npos) << r.text;
  EXPECT_GT(j.value("wall_s", 0.0), j.value("persistor_start_s", 0.0) + j.value("end_to_end_s", 0.0)) << line;
  const auto blobs = j.value("blobs", 0);
  EXPECT_GE(blobs, 90) << "one blob per day at least (90 days)";
  EXPECT_LT(blobs, 400) << "day folders, not hour folders";
  const auto& req = j["storage_requests"];
  EXPECT_GT(req.value("total", 0), 0);
  EXPECT_GT(req.value("per_1000_records", 0.0), 0.0);
  EXPECT_NEAR(req.value("per_blob", 0.0) * blobs, req.value("total", 0), 1.0);
  // The run log: one entity group transaction per blob (a blob retried reads and writes more).
  const auto runs = req["by_resource"].value(runs_table_, 0);
  EXPECT_GE(runs, blobs);
  EXPECT_LT(runs, 2 * blobs);
  const auto& cpu = j["cpu_s"];
  for (const char* p : {"send", "persistor", "workers", "supervisor", "run"})
    EXPECT_GT(cpu.value(p, 0.0), 0.0) << p;
  // One stats file per worker process: the 4 of --workers 4, and one more for each restart
  // (the suite under -j2 load once restarted a worker mid-run; the supervisor log says why).
  EXPECT_GE(cpu["processes"].value("workers", 0), 4);
  EXPECT_LE(cpu["processes"].value("workers", 0), 8);
  EXPECT_NE(r.text.find("records read            20000"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("rows loaded (new)       20000 into flights"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("already loaded          0 "), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("quarantined             0\n"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("rows in flights         20000, duplicate message ids: 0"),
            std::string::npos)
      << r.text;
  EXPECT_NE(r.text.find("verification: PASSED"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find(" over 90 days (2001-01-01 … 2001-03-31)"), std::string::npos) << r.text;
  // The live display reported progress while it ran (plain lines: not a terminal).
  EXPECT_NE(r.text.find("] sent "), std::string::npos) << r.text;
}

// The pre-fleet ETL mode (`etl run --once` rounds after the send), kept for comparison.
TEST_F(RunIt, LoadsFlightsIntoSqliteAndVerifiesWithEtlRounds) {
  auto r = run_shoal(dir, "--dataset flights-2k --workers 2 --etl rounds --db shoal.db --run-dir run");
  ASSERT_EQ(r.status, 0) << r.text;
  EXPECT_NE(r.text.find("records read            2000"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("rows loaded (new)       2000 into flights"), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("rows in flights         2000, duplicate message ids: 0"),
            std::string::npos)
      << r.text;
  EXPECT_NE(r.text.find("verification: PASSED"), std::string::npos) << r.text;
}

TEST_F(RunIt, LoadsUnseenCsvAndNdjsonWithTheGenericMappingExactlyOnce) {
  {
    std::ofstream csv(dir / "sensors.csv");
    csv << "sensor,reading,at\n";
    for (int i = 0; i < 120; ++i)
      csv << "s" << i % 7 << ',' << i * 1.5 << ",2024-05-0" << 1 + i % 3 << "T10:00:00Z\n";
    std::ofstream nd(dir / "events.ndjson");
    for (int i = 0; i < 80; ++i)
      nd << "{\"id\":" << i << ",\"kind\":\"click\",\"nested\":{\"x\":" << i << "}}\n";
  }
  auto csv = run_shoal(dir, "--dataset sensors.csv --workers 2 --db shoal.db --run-dir run");
  ASSERT_EQ(csv.status, 0) << csv.text;
  EXPECT_NE(csv.text.find("rows loaded (new)       120 into shoal_etl_records"),
            std::string::npos)
      << csv.text;
  auto nd = run_shoal(dir, "--dataset events.ndjson --workers 2 --db shoal.db --run-dir run");
  ASSERT_EQ(nd.status, 0) << nd.text;
  EXPECT_NE(nd.text.find("rows loaded (new)       80 into shoal_etl_records"), std::string::npos)
      << nd.text;
  // The same file again: stable message ids, so nothing new lands and the run still verifies.
  auto again = run_shoal(dir, "--dataset sensors.csv --workers 2 --db shoal.db --run-dir run");
  ASSERT_EQ(again.status, 0) << again.text;
  EXPECT_NE(again.text.find("rows loaded (new)       0 into"), std::string::npos) << again.text;
  EXPECT_NE(again.text.find("already loaded          120"), std::string::npos) << again.text;
  EXPECT_NE(again.text.find("rows in shoal_etl_records 200, duplicate message ids: 0"),
            std::string::npos)
      << again.text;
}

// seattle-weather has one record a day: its dataset writes month folders, and the summary counts
// its blobs over months, not days.
TEST_F(RunIt, SeattleWeatherGoesToMonthFoldersAndTheSummarySaysMonths) {
  auto r = run_shoal(dir, "--dataset seattle-weather --workers 2 --db shoal.db --run-dir run");
  ASSERT_EQ(r.status, 0) << r.text;
  EXPECT_NE(r.text.find(" over 48 months ("), std::string::npos) << r.text;
  EXPECT_NE(r.text.find("verification: PASSED"), std::string::npos) << r.text;
}

TEST_F(RunIt, UnknownDatasetIsAClearError) {
  auto r = run_shoal(dir, "--dataset no-such-thing.json --db shoal.db --run-dir run");
  EXPECT_EQ(r.status, 2) << r.text;
  EXPECT_NE(r.text.find("is not a file"), std::string::npos) << r.text;
}

TEST_F(RunIt, UnknownEmulatorDataModeIsAClearError) {
  auto r = run_shoal(dir, "--dataset flights-2k --emulator-data tmpfs --db shoal.db --run-dir run");
  EXPECT_EQ(r.status, 2) << r.text;
  EXPECT_NE(r.text.find("--emulator-data must be auto, memory or disk"), std::string::npos) << r.text;
}

} // namespace
} // namespace shoal::workers
