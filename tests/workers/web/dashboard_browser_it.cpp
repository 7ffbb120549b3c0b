// The dashboard in a real browser (issue 17): a real `shoal supervisor` with two real
// `shoal worker` processes (exec job) on the fixture's Azurite, ETL data from a real `shoal run`,
// and Debian's Chromium driven through Selenium by dashboard_browser.py. The browser checks the
// pages (fleet, dead letters, refusals, requeue with the token, ETL, catalog) and saves a
// screenshot of each into build/tests/web/; this test prepares the data and checks the work
// table before and after.

#include "tests/workers/fleet/fleet_harness.hpp"
#include "workers/etl/sql_sink.hpp"

#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>

#ifndef SHOAL_TEST_WEB_OUTPUT_DIR
#error "SHOAL_TEST_WEB_OUTPUT_DIR must name the folder the screenshots go to"
#endif

namespace shoal::tests::web {
namespace {

using namespace shoal::tests::fleet;
namespace fs = std::filesystem;

struct command_output {
  int status = -1;
  std::string text;
};

command_output run_command(const std::string& cmd) {
  command_output out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p)
    return out;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0)
    out.text.append(buf.data(), n);
  const int st = ::pclose(p);
  out.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
  return out;
}

// The payload that fails for good: markup that would run if the page ever inserted it as HTML.
const std::string poison_payload =
    "{\"note\": \"<script>window.__shoalPwned=1</script><img src=x onerror=\\\"window.__shoalPwned=2\\\">\", "
    "\"fail\": \"fail-me\"}";

TEST(DashboardBrowser, ShowsTheFleetAndDeadLettersAndRequeuesOnlyWithTheTokenInChromium) {
  const fs::path dir = fs::temp_directory_path() / unique_name("shoalweb");
  const fs::path out = SHOAL_TEST_WEB_OUTPUT_DIR;
  fs::create_directories(dir);
  fs::create_directories(out);
  const std::string name = unique_name("web");
  std::string lower;
  for (char c : name)
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const fs::path token_file = dir / "token";
  std::ofstream(token_file) << "3f9c2a7be1d04c55a8e6b0d7c9f1e2a4\n";
  ::chmod(token_file.c_str(), 0600);
  const fs::path heal = dir / "healed";
  const int web_port = free_port();
  const int metrics_port = free_port();
  const std::string toml = "[work]\ntable = \"" + name + "w\"\nmax_attempts = 2\nretry_base_ms = 100\nretry_max_ms = 200\n" +
                           "[etl]\nruns_table = \"" + name + "r\"\ncontainer = \"" + lower + "\"\nsqlite_path = \"" +
                           (dir / "shoal.db").string() + "\"\n" + "[persistor]\ncontainer = \"" + lower + "\"\n" +
                           "[catalog]\ntable = \"" + name + "c\"\n" + "[fleet]\ntable = \"" + name +
                           "f\"\nheartbeat_interval_ms = 200\ndrain_timeout_ms = 5000\nmetrics_port = " +
                           std::to_string(metrics_port) + "\n" + "[worker]\npoll_min_ms = 50\npoll_max_ms = 500\n" +
                           "[web]\nport = " + std::to_string(web_port) + "\ntoken_file = \"" + token_file.string() +
                           "\"\nrefresh_ms = 500\nsample_ms = 1000\n";
  std::ofstream(dir / "shoal.toml") << toml;

  // 1. ETL data for the ETL and persistor pages: a real `shoal run` of a small CSV over three
  //    days (its own fleet table and no dashboard of its own), then one quarantined record.
  {
    std::ofstream csv(dir / "sensors.csv");
    csv << "sensor,reading,at\n";
    for (int i = 0; i < 60; ++i)
      csv << "s" << i % 5 << ',' << i * 1.5 << ",2024-05-0" << 1 + i % 3 << "T10:00:00Z\n";
  }
  auto run = run_command("cd '" + dir.string() + "' && SHOAL_WEB_PORT=0 SHOAL_FLEET_METRICS_PORT=0 SHOAL_FLEET_TABLE=" +
                         name + "rf '" + shoal_binary() + "' --config shoal.toml --log-level warn --connection-string '" +
                         azurite_connection_string() +
                         "' run --dataset sensors.csv --event-time-field at --workers 2 --db shoal.db --run-dir run");
  ASSERT_EQ(run.status, 0) << run.text;
  {
    auto sink = workers::etl::open_sqlite_sink({.path = (dir / "shoal.db").string()});
    ASSERT_TRUE(sink) << sink.error().describe();
    workers::etl::load_batch b;
    b.blob = "sensors/2024/05/01/quarantine-demo.json";
    b.dataset = "generic";
    b.owner = "test";
    b.insert_sql = "INSERT INTO shoal_etl_records (message_id, dest, event_time, payload, blob) VALUES (?, ?, ?, ?, ?)";
    b.quarantined.push_back({0, "m-1", "validate", "reading is not a number",
                             "{\"reading\": \"<script>window.__shoalPwned=3</script>\"}"});
    auto r = (*sink)->load(b);
    ASSERT_TRUE(r) << r.error().describe();
  }

  // 2. Exec records: six that succeed and one that fails for good until the heal file exists.
  auto t = make_table(name + "w");
  std::vector<workers::new_record> recs;
  for (int i = 0; i < 6; ++i)
    recs.push_back({"ok-" + std::to_string(i), "{\"n\": " + std::to_string(i) + "}", {}});
  recs.push_back({"poison-1", poison_payload, {}});
  ASSERT_TRUE(t.enqueue("exec", recs));
  const std::string job = "payload=$(cat); case \"$payload\" in *fail-me*) test -e '" + heal.string() +
                          "' || { echo 'poison payload refused' >&2; exit 3; } ;; esac";

  supervisor_process sup(dir, toml, {"--workers", "2", "--job", "exec", "--exec", job});
  ASSERT_TRUE(eventually([&] { return count_of(t, "exec", workers::record_status::dead) == 1; }, milliseconds(60'000)))
      << sup.log();
  ASSERT_TRUE(eventually([&] { return count_of(t, "exec", workers::record_status::done) == 6; }, milliseconds(30'000)))
      << sup.log();
  auto dead = t.get("exec", "poison-1", false);
  ASSERT_TRUE(dead);
  EXPECT_EQ(dead->attempts, 2);
  EXPECT_NE(dead->last_error.find("poison payload refused"), std::string::npos) << dead->last_error;
  ASSERT_TRUE(eventually([&] { return http_get(web_port, "/api/config").find("200 OK") != std::string::npos; },
                         milliseconds(10'000)))
      << sup.log();

  // 3. The browser.
  // Debian's interpreter: python3-selenium is installed for it, not for a python3 earlier on PATH.
  auto browser = run_command("/usr/bin/python3 '" + source_dir() + "/tests/workers/web/dashboard_browser.py' --url http://127.0.0.1:" +
                             std::to_string(web_port) + " --token-file '" + token_file.string() + "' --heal-file '" +
                             heal.string() + "' --out '" + out.string() + "' --queue exec --dead-id poison-1 --dest sensors");
  std::printf("%s", browser.text.c_str());
  ASSERT_EQ(browser.status, 0) << browser.text << "\n--- supervisor log ---\n" << sup.log();
  EXPECT_NE(browser.text.find("ALL PASSED"), std::string::npos);

  // 4. Requeued with the token: back to pending (attempts reset to 0), then completed by the
  //    fleet in one attempt now that the job accepts it.
  ASSERT_TRUE(eventually([&] { return count_of(t, "exec", workers::record_status::done) == 7; }, milliseconds(30'000)))
      << sup.log();
  auto healed = t.get("exec", "poison-1", false);
  ASSERT_TRUE(healed);
  EXPECT_EQ(healed->status, workers::record_status::done);
  EXPECT_EQ(healed->attempts, 1);
  EXPECT_EQ(count_of(t, "exec", workers::record_status::dead), 0u);
  // The actions were counted by outcome on /metrics.
  auto metrics = http_get(metrics_port, "/metrics");
  EXPECT_NE(metrics.find("shoal_web_actions_total{action=\"requeue\",outcome=\"done\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("shoal_web_actions_total{action=\"requeue\",outcome=\"refused\"}"), std::string::npos) << metrics;
  for (const char* page : {"fleet", "queues", "dead", "dead-refused", "dead-after-requeue", "etl", "persistor"})
    EXPECT_TRUE(fs::exists(out / (std::string(page) + ".png"))) << page;
  std::printf("screenshots in %s\n", out.string().c_str());
  if (!::testing::Test::HasFailure())
    fs::remove_all(dir);
}

} // namespace
} // namespace shoal::tests::web
