#include "workers/fleet/metrics.hpp"
#include "workers/fleet/status.hpp"
#include "workers/fleet/supervisor.hpp"

#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "tests/support/fake_transport.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace shoal::workers::fleet {
namespace {

fleet_status sample() {
  fleet_status s;
  s.host = "h1";
  s.pid = 42;
  s.endpoint = "ipc:///tmp/x.sock";
  s.uptime_ms = 1234;
  s.state = "running";
  s.coordinator = true;
  s.workers_wanted = 2;
  s.assignment = {7, {0, 1, 2, 3}, "h1"};
  s.hosts.push_back(host_view{"h1", "", 2, {0, 1, 2, 3}, true, 0});
  worker_status w;
  w.slot = "w0";
  w.pid = 100;
  w.state = "working";
  w.queue = "exec";
  w.current = "rec-\xC3\xA9"; // é: UTF-8 survives
  w.in_flight = 1;
  w.done = 10;
  w.failed = 2;
  w.claimed = 13;
  w.contention = 4;
  w.lease_lost = 1;
  w.rate_per_s = 2.5;
  w.last_heartbeat_ms_ago = 120;
  w.restarts = 3;
  w.shards = {0, 2};
  w.assign_epoch = 5;
  s.workers.push_back(w);
  worker_status b;
  b.slot = "w1";
  b.state = "backoff";
  s.workers.push_back(b);
  queue_status q;
  q.by_status = {{"pending", 5}, {"claimed", 1}, {"done", 10}, {"dead", 0}};
  q.total = 16;
  q.age_ms = 300;
  s.queues["exec"] = q;
  return s;
}

TEST(FleetStatusTest, JsonRoundTripKeepsEveryField) {
  const auto s = sample();
  const auto text = to_json(s);
  auto back = parse_status(text);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_EQ(to_json(*back), text);
  EXPECT_EQ(back->workers.at(0).current, "rec-\xC3\xA9");
  EXPECT_EQ(back->workers.at(0).shards, (std::vector<std::uint32_t>{0, 2}));
  EXPECT_EQ(back->queues.at("exec").by_status.at("pending"), 5u);
  EXPECT_EQ(back->assignment.epoch, 7u);
  EXPECT_TRUE(back->reachable);
}

TEST(FleetStatusTest, JsonShapeMatchesStatusMd) {
  auto j = nlohmann::json::parse(to_json(sample()));
  for (const char* k : {"version", "reachable", "host", "pid", "endpoint", "uptime_ms", "state", "coordinator",
                        "workers_wanted", "assignment", "hosts", "workers", "queues"})
    EXPECT_TRUE(j.contains(k)) << k;
  const auto& w = j["workers"][0];
  for (const char* k : {"slot", "pid", "state", "queue", "current", "in_flight", "done", "failed", "claimed",
                        "contention", "lease_lost", "rate_per_s", "last_heartbeat_ms_ago", "restarts", "shards",
                        "assign_epoch"})
    EXPECT_TRUE(w.contains(k)) << k;
  EXPECT_EQ(j["queues"]["exec"]["by_status"]["done"], 10);
  EXPECT_EQ(j["hosts"][0]["coordinator"], true);
}

TEST(FleetStatusTest, ParseRejectsNonObjectsAndWrongTypes) {
  EXPECT_FALSE(parse_status("not json"));
  EXPECT_FALSE(parse_status("[1,2]"));
  EXPECT_FALSE(parse_status(R"({"workers":[{"pid":"abc"}]})"));
  auto empty = parse_status("{}");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->workers.empty());
}

TEST(FleetStatusTest, InvalidUtf8IsReplacedNotThrown) {
  auto s = sample();
  s.workers[0].current = std::string("bad\xFF");
  auto back = parse_status(to_json(s));
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_NE(back->workers[0].current, s.workers[0].current);
}

TEST(FleetStatusTest, TableShowsWorkersQueuesAndUnreachable) {
  auto t = to_table(sample());
  EXPECT_NE(t.find("w0"), std::string::npos);
  EXPECT_NE(t.find("working"), std::string::npos);
  EXPECT_NE(t.find("exec"), std::string::npos);
  EXPECT_NE(t.find("0,2"), std::string::npos);
  fleet_status u;
  u.reachable = false;
  u.error = "no supervisor answered";
  u.queues["exec"].by_status = {{"pending", 3}};
  auto ut = to_table(u);
  EXPECT_NE(ut.find("no supervisor answered"), std::string::npos);
  EXPECT_NE(ut.find("exec"), std::string::npos);
}

TEST(SplitShardsTest, RoundRobinAndOverlapWhenShardsAreFew) {
  auto p = split_shards({0, 1, 2, 3, 4}, 2);
  EXPECT_EQ(p, (std::vector<std::vector<std::uint32_t>>{{0, 2, 4}, {1, 3}}));
  auto few = split_shards({5, 9}, 3);
  EXPECT_EQ(few, (std::vector<std::vector<std::uint32_t>>{{5}, {9}, {5}}));
  EXPECT_TRUE(split_shards({1, 2}, 0).empty());
  auto none = split_shards({}, 2);
  ASSERT_EQ(none.size(), 2u);
  EXPECT_TRUE(none[0].empty());
}

TEST(FleetMetricsTest, RendersEveryMetricName) {
  fleet_metrics m;
  m.add(fleet_counter::claims, 5);
  m.add(fleet_counter::restarts);
  m.set_records("exec", {{"pending", 7}});
  m.set_workers({{"idle", 2}});
  const auto text = m.render();
  for (const char* name : {"shoal_claims_total 5", "shoal_completions_total", "shoal_contention_total",
                           "shoal_lease_lost_total", "shoal_worker_restarts_total 1",
                           "shoal_missed_heartbeats_total", "shoal_hwm_drops_total",
                           "shoal_records{queue=\"exec\",status=\"pending\"} 7",
                           "shoal_records{queue=\"exec\",status=\"dead\"} 0", "shoal_workers{state=\"idle\"} 2"})
    EXPECT_NE(text.find(name), std::string::npos) << name << "\n" << text;
  m.set_workers({{"working", 1}});
  EXPECT_NE(m.render().find("shoal_workers{state=\"idle\"} 0"), std::string::npos);
}

TEST(FleetMetricsTest, ExportsThisProcesssStorageRequests) {
  auto transport = std::make_shared<tests::fake_transport>();
  transport->respond(201).respond(201);
  auto p = storage::pipeline::make(*storage::parse_connection_string("UseDevelopmentStorage=true"), {}, transport);
  ASSERT_TRUE(p);
  storage::storage_request put;
  put.method = storage::http_method::put;
  put.path = "/metricscont/b";
  ASSERT_TRUE(p->send(storage::service::blob, put));
  ASSERT_TRUE(p->send(storage::service::blob, put));
  fleet_metrics m;
  const auto text = m.render();
  EXPECT_NE(text.find("shoal_storage_requests_total{op=\"put\",resource=\"metricscont\",service=\"blob\"} 2"),
            std::string::npos)
      << text;
}

} // namespace
} // namespace shoal::workers::fleet
