// The dashboard's HTTP side against a real `shoal supervisor` (with the fake worker of the fleet
// tests) on the fixture's Azurite: every page and /api/ document, the action rules, requeue and
// purge, read-only mode, a bad token file; and the Grafana dashboard and the alert rules name
// only metrics that /metrics exports.

#include "tests/workers/fleet/fleet_harness.hpp"

#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <map>
#include <regex>
#include <set>

#ifndef SHOAL_TEST_FAKE_WORKER
#error "SHOAL_TEST_FAKE_WORKER must name the fake worker executable"
#endif

namespace shoal::tests::web {
namespace {

using namespace shoal::tests::fleet;
using json = nlohmann::json;
namespace fs = std::filesystem;

struct http_reply {
  int status = 0;
  std::map<std::string, std::string> headers; // lower-case names
  std::string body;
};

// One HTTP/1.0 request to 127.0.0.1:port over a plain socket.
http_reply request(int port, const std::string& method, const std::string& path,
                   const std::vector<std::pair<std::string, std::string>>& headers = {}, const std::string& body = "") {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  http_reply out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return out;
  }
  std::string req = method + " " + path + " HTTP/1.0\r\nHost: 127.0.0.1:" + std::to_string(port) + "\r\n";
  for (const auto& [k, v] : headers)
    req += k + ": " + v + "\r\n";
  const bool has_length = std::any_of(headers.begin(), headers.end(), [](const auto& h) { return h.first == "Content-Length"; });
  if (method == "POST" && !has_length)
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  (void)::write(fd, req.data(), req.size());
  std::string raw;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0)
    raw.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  const auto end = raw.find("\r\n\r\n");
  if (raw.size() < 12 || end == std::string::npos)
    return out;
  out.status = std::atoi(raw.substr(9, 3).c_str());
  std::istringstream head(raw.substr(0, end));
  std::string line;
  std::getline(head, line);
  while (std::getline(head, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos)
      continue;
    std::string k = line.substr(0, colon);
    for (char& c : k)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto v = line.substr(colon + 1);
    while (!v.empty() && v.front() == ' ')
      v.erase(0, 1);
    while (!v.empty() && (v.back() == '\r' || v.back() == ' '))
      v.pop_back();
    out.headers[k] = v;
  }
  out.body = raw.substr(end + 4);
  return out;
}

json body_json(const http_reply& r) { return json::parse(r.body, nullptr, false); }

const std::string token = "a1b2c3d4e5f60718293a4b5c6d7e8f90";

class DashboardIt : public ::testing::Test {
protected:
  fs::path dir = fs::temp_directory_path() / unique_name("shoaldash");
  std::string table = unique_name("dash");
  int web_port = free_port();
  int metrics_port = free_port();

  void SetUp() override { fs::create_directories(dir); }
  void TearDown() override {
    if (!HasFailure())
      fs::remove_all(dir);
  }
  std::string toml(bool with_token) {
    std::ofstream(dir / "token") << token << "\n";
    ::chmod((dir / "token").c_str(), 0600);
    return "[work]\ntable = \"" + table + "\"\nlease_ms = 60000\nlease_renew_ms = 20000\n" + "[fleet]\ntable = \"" +
           table + "f\"\nworkers = 2\nheartbeat_interval_ms = 100\ndrain_timeout_ms = 5000\nmetrics_port = " +
           std::to_string(metrics_port) + "\n[etl]\nruns_table = \"" + table + "r\"\nsqlite_path = \"" +
           (dir / "none.db").string() + "\"\n[catalog]\ntable = \"" + table + "c\"\n[web]\nport = " +
           std::to_string(web_port) + "\nrefresh_ms = 500\nsample_ms = 300\n" +
           (with_token ? "token_file = \"" + (dir / "token").string() + "\"\n" : "");
  }
  std::vector<std::string> fake() { return {"--worker-program", SHOAL_TEST_FAKE_WORKER}; }
  std::vector<std::pair<std::string, std::string>> auth() {
    return {{"Authorization", "Bearer " + token}, {"Content-Type", "application/json"}};
  }
  bool serving() {
    return eventually([&] { return request(web_port, "GET", "/api/config").status == 200; }, milliseconds(20'000));
  }
};

// A record of `queue` made dead through the work table's own calls: claimed and failed once
// with max_attempts 1.
void make_dead(workers::work_table& t, const std::string& queue, const std::string& id, const std::string& payload) {
  std::vector<workers::new_record> recs{{id, payload, {}}};
  ASSERT_TRUE(t.enqueue(queue, recs));
  auto o = t.options();
  o.work.max_attempts = 1;
  auto one = workers::work_table::make(t.table(), std::nullopt, o);
  ASSERT_TRUE(one);
  std::vector<std::uint32_t> all;
  for (std::uint32_t s = 0; s < o.work.shards; ++s)
    all.push_back(s);
  auto claimed = one->claim(queue, all, "test-owner@host", 10);
  ASSERT_TRUE(claimed);
  for (auto& c : *claimed)
    if (c.id == id) {
      auto st = one->fail(c, "exit 3: <b>bad</b> input");
      ASSERT_TRUE(st);
      ASSERT_EQ(*st, workers::record_status::dead);
    }
}

TEST_F(DashboardIt, ServesEveryPageAndDocumentWithItsSecurityHeaders) {
  auto t = make_table(table);
  make_dead(t, "fq", "d-1", "<script>alert(1)</script>");
  supervisor_process sup(dir, toml(true), fake());
  ASSERT_TRUE(serving()) << sup.log();
  const std::string url = "dashboard http://127.0.0.1:" + std::to_string(web_port) + "/";
  EXPECT_TRUE(eventually([&] { return sup.log().find(url) != std::string::npos; }, milliseconds(5000))) << sup.log();

  auto root = request(web_port, "GET", "/");
  EXPECT_EQ(root.status, 302);
  EXPECT_EQ(root.headers["location"], "/fleet");
  for (const char* page : {"/fleet", "/queues", "/dead", "/etl", "/persistor"}) {
    auto r = request(web_port, "GET", page);
    EXPECT_EQ(r.status, 200) << page;
    EXPECT_NE(r.body.find("/static/app.js"), std::string::npos) << page;
    EXPECT_NE(r.headers["content-security-policy"].find("script-src 'self'"), std::string::npos) << page;
    EXPECT_EQ(r.headers["x-content-type-options"], "nosniff");
    EXPECT_EQ(r.headers["x-frame-options"], "DENY");
  }
  EXPECT_EQ(request(web_port, "GET", "/static/app.js").headers["content-type"], "text/javascript; charset=utf-8");
  EXPECT_EQ(request(web_port, "GET", "/nowhere").status, 404);
  EXPECT_EQ(request(web_port, "GET", "/static/../../etc/passwd").status, 404);
  EXPECT_EQ(request(web_port, "DELETE", "/api/fleet").status, 405);

  // Fleet: the supervisor's own view (STATUS.md shape), live.
  ASSERT_TRUE(eventually(
      [&] {
        auto f = body_json(request(web_port, "GET", "/api/fleet"));
        return f.is_object() && f["workers"].size() == 2 && f["workers"][0]["state"] == "idle" &&
               f["workers"][1]["state"] == "idle";
      },
      milliseconds(20'000)))
      << sup.log();
  auto fleet = body_json(request(web_port, "GET", "/api/fleet"));
  EXPECT_GT(fleet["workers"][0]["pid"].get<int>(), 0);
  EXPECT_EQ(fleet["hosts"].size(), 1u);

  // Queues: found in the table (fq holds no worker of this fleet), counts per status and shard.
  ASSERT_TRUE(eventually(
      [&] {
        auto q = body_json(request(web_port, "GET", "/api/queues"));
        for (const auto& x : q["queues"])
          if (x["name"] == "fq" && x["by_status"]["dead"] == 1 && x["history"].size() >= 2)
            return true;
        return false;
      },
      milliseconds(20'000)));

  // Dead letters: the record with its error, attempts, owner and payload, as JSON text.
  auto dead = request(web_port, "GET", "/api/dead?queue=fq");
  ASSERT_EQ(dead.status, 200) << dead.body;
  EXPECT_EQ(dead.headers["cache-control"], "no-store");
  auto d = body_json(dead);
  ASSERT_EQ(d["dead"].size(), 1u) << dead.body;
  EXPECT_EQ(d["dead"][0]["id"], "d-1");
  EXPECT_EQ(d["dead"][0]["attempts"], 1);
  EXPECT_EQ(d["dead"][0]["last_error"], "exit 3: <b>bad</b> input");
  EXPECT_EQ(d["dead"][0]["payload"]["text"], "<script>alert(1)</script>");
  EXPECT_EQ(d["dead"][0]["owners"][0]["owner"], "test-owner@host");
  EXPECT_EQ(request(web_port, "GET", "/api/dead?queue=bad-name").status, 400);

  // ETL and catalog pages before any ETL ran: empty, saying why, not failing.
  auto etl = request(web_port, "GET", "/api/etl");
  ASSERT_EQ(etl.status, 200) << etl.body;
  EXPECT_TRUE(body_json(etl)["instances"].empty());
  EXPECT_NE(body_json(etl)["quarantine_note"].get<std::string>().find("no SQLite database"), std::string::npos);
  auto per = request(web_port, "GET", "/api/persistor");
  ASSERT_EQ(per.status, 200) << per.body;
  EXPECT_TRUE(body_json(per)["days"].empty());
  EXPECT_EQ(request(web_port, "GET", "/api/catalog").status, 400); // no dest, date or host
  EXPECT_EQ(request(web_port, "GET", "/api/catalog?dest=flights").status, 404) << "no catalog yet";
  EXPECT_EQ(request(web_port, "GET", "/api/etl/run?id=nothing").status, 404);
}

TEST_F(DashboardIt, RequeuesAndPurgesOnlyWithTheTokenFromItsOwnOrigin) {
  auto t = make_table(table);
  make_dead(t, "fq", "d-1", "x");
  make_dead(t, "fq", "d-2", "y");
  make_dead(t, "fq", "d-3", "z");
  supervisor_process sup(dir, toml(true), fake());
  ASSERT_TRUE(serving()) << sup.log();
  const std::string one = R"({"queue": "fq", "ids": ["d-1"]})";

  EXPECT_EQ(request(web_port, "POST", "/api/dead/requeue", {{"Content-Type", "application/json"}}, one).status, 401);
  auto wrong = auth();
  wrong[0].second = "Bearer " + std::string(token.size(), 'x');
  EXPECT_EQ(request(web_port, "POST", "/api/dead/requeue", wrong, one).status, 403);
  auto other = auth();
  other.emplace_back("Origin", "http://evil.example");
  EXPECT_EQ(request(web_port, "POST", "/api/dead/requeue", other, one).status, 403);
  EXPECT_EQ(request(web_port, "POST", "/api/dead/requeue",
                    {{"Authorization", "Bearer " + token}, {"Content-Type", "text/plain"}}, one)
                .status,
            415);
  EXPECT_EQ(count_of(t, "fq", workers::record_status::dead), 3u) << "a refused request changed something";

  // Malformed bodies are refused with a reason, and change nothing.
  EXPECT_EQ(request(web_port, "POST", "/api/dead/requeue", auth(), "{not json").status, 400);
  EXPECT_EQ(request(web_port, "POST", "/api/dead/requeue", auth(), R"({"queue": "fq"})").status, 400);
  EXPECT_EQ(request(web_port, "POST", "/api/dead/requeue", auth(), R"({"queue": "fq", "ids": [1]})").status, 400);
  // A body over 64 KiB is refused without being parsed (the server discards it).
  EXPECT_EQ(request(web_port, "POST", "/api/dead/requeue", auth(), std::string(70'000, ' ')).status, 413);

  auto ok = request(web_port, "POST", "/api/dead/requeue", auth(), one);
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(body_json(ok)["changed"], 1);
  auto r = t.get("fq", "d-1", false);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, workers::record_status::pending);
  EXPECT_EQ(r->attempts, 0);

  // Same origin, as the page sends it.
  auto same = auth();
  same.emplace_back("Origin", "http://127.0.0.1:" + std::to_string(web_port));
  same.emplace_back("Sec-Fetch-Site", "same-origin");
  auto purge = request(web_port, "POST", "/api/dead/purge", same, R"({"queue": "fq", "ids": ["d-2"]})");
  ASSERT_EQ(purge.status, 200) << purge.body;
  EXPECT_FALSE(t.get("fq", "d-2", false));
  auto all = request(web_port, "POST", "/api/dead/requeue", auth(), R"({"queue": "fq", "all": true})");
  ASSERT_EQ(all.status, 200) << all.body;
  EXPECT_EQ(body_json(all)["changed"], 1); // d-3; d-1 is pending already
  EXPECT_EQ(count_of(t, "fq", workers::record_status::dead), 0u);

  auto metrics = http_get(metrics_port, "/metrics");
  EXPECT_NE(metrics.find("shoal_web_actions_total{action=\"requeue\",outcome=\"refused\"} 8"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("shoal_web_actions_total{action=\"purge\",outcome=\"done\"} 1"), std::string::npos) << metrics;
}

TEST_F(DashboardIt, WithoutATokenFileTheDashboardIsReadOnly) {
  auto t = make_table(table);
  make_dead(t, "fq", "d-1", "x");
  supervisor_process sup(dir, toml(false), fake());
  ASSERT_TRUE(serving()) << sup.log();
  EXPECT_EQ(body_json(request(web_port, "GET", "/api/config"))["actions"], false);
  auto r = request(web_port, "POST", "/api/dead/requeue", auth(), R"({"queue": "fq", "all": true})");
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(body_json(r)["error"].get<std::string>().find("token_file"), std::string::npos) << r.body;
  EXPECT_EQ(count_of(t, "fq", workers::record_status::dead), 1u);
}

TEST_F(DashboardIt, ABadTokenFileStopsTheSupervisorWithAReason) {
  std::string cfg = toml(true);
  std::ofstream(dir / "token") << "short\n";
  supervisor_process sup(dir, cfg, fake());
  auto rc = sup.proc().wait(milliseconds(20'000));
  ASSERT_TRUE(rc) << sup.log();
  EXPECT_NE(*rc, 0);
  EXPECT_NE(sup.log().find("at least 16 characters"), std::string::npos) << sup.log();
}

// -- Grafana and Prometheus: every metric they name is exported -----------------------------------

std::set<std::string> metric_names(const std::string& text) {
  static const std::regex name(R"(\bshoal_[a-z_]+\b)");
  std::set<std::string> out;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), name); it != std::sregex_iterator(); ++it)
    out.insert(it->str());
  return out;
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST_F(DashboardIt, GrafanaPanelsAndAlertRulesNameOnlyMetricsThatMetricsExports) {
  const fs::path deploy = fs::path(source_dir()) / "deploy";
  auto dash = json::parse(read_text(deploy / "grafana" / "shoal-fleet.json"), nullptr, false);
  ASSERT_TRUE(dash.is_object()) << "deploy/grafana/shoal-fleet.json is not valid JSON";
  std::set<std::string> wanted;
  std::size_t queries = 0;
  for (const auto& p : dash["panels"]) {
    if (p["type"] == "row")
      continue;
    ASSERT_TRUE(p.contains("targets") && !p["targets"].empty()) << p["title"];
    for (const auto& t : p["targets"]) {
      auto names = metric_names(t.value("expr", ""));
      EXPECT_FALSE(names.empty()) << p["title"] << ": " << t.value("expr", "");
      wanted.insert(names.begin(), names.end());
      ++queries;
    }
  }
  EXPECT_GE(queries, 15u);
  for (const auto& v : dash["templating"]["list"])
    if (v.contains("definition")) {
      auto names = metric_names(v["definition"].get<std::string>());
      wanted.insert(names.begin(), names.end());
    }
  const auto rules = metric_names(read_text(deploy / "prometheus" / "shoal-alerts.yml"));
  ASSERT_GE(rules.size(), 5u);
  wanted.insert(rules.begin(), rules.end());
  // The issue's list: each has a panel.
  for (const char* m : {"shoal_claims_total", "shoal_completions_total", "shoal_failures_total", "shoal_contention_total",
                        "shoal_lease_lost_total", "shoal_worker_restarts_total", "shoal_records",
                        "shoal_persisted_records_total", "shoal_queue_completions_total"})
    EXPECT_TRUE(wanted.contains(m)) << m << " has no panel";

  // A supervisor that has done what makes every series appear: workers heartbeating, a queue
  // read, a refused dashboard action.
  auto t = make_table(table);
  supervisor_process sup(dir, toml(true), fake());
  ASSERT_TRUE(serving()) << sup.log();
  request(web_port, "POST", "/api/dead/requeue", {{"Content-Type", "application/json"}}, "{}");
  std::set<std::string> missing;
  (void)eventually( // what is still missing is asserted below, by name
      [&] {
        // Exported = a sample line (name, then '{' or ' ') or its # TYPE line.
        const auto text = http_get(metrics_port, "/metrics");
        missing.clear();
        for (const auto& m : wanted)
          if (text.find("\n" + m + "{") == std::string::npos && text.find("\n" + m + " ") == std::string::npos)
            missing.insert(m);
        return missing.empty();
      },
      milliseconds(20'000));
  std::string list;
  for (const auto& m : missing)
    list += m + " ";
  EXPECT_TRUE(missing.empty()) << "named by deploy/grafana or deploy/prometheus but not on /metrics: " << list << "\n"
                               << http_get(metrics_port, "/metrics");
}

} // namespace
} // namespace shoal::tests::web
