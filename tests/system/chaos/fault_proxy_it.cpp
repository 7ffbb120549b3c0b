// The storage fault proxy (tests/support/fault_proxy.hpp) in front of the fixture's Azurite,
// driven through shoal's own storage clients: it relays byte for byte (SharedKey still
// verifies), injects each fault kind as Azure would answer it, and counts what it injected.
// Each test runs its own proxy in this process, so they need no lock on the fixture's.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/queue_client.hpp"
#include "storage/table_client.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/fault_proxy.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace shoal::tests {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

class FaultProxyIt : public ::testing::Test {
protected:
  void SetUp() override {
    fault_proxy_options o;
    o.upstream_connection_string = azurite_connection_string();
    auto p = fault_proxy::listen(o);
    ASSERT_TRUE(p) << p.error().describe();
    proxy_.emplace(std::move(*p));
    proxy_->start();
  }

  storage::pipeline pipe(int max_attempts = 4, milliseconds request_timeout = 30s) {
    auto account = storage::parse_connection_string(proxy_->connection_string());
    EXPECT_TRUE(account) << account.error().describe();
    storage::pipeline_options po;
    po.retry.max_attempts = max_attempts;
    po.http.request_timeout = request_timeout;
    auto p = storage::pipeline::make(*account, po);
    EXPECT_TRUE(p);
    return *p;
  }

  // A plan of one rule of `kind`, in force for `window` from now.
  void plan(fault_kind kind, milliseconds window, std::vector<std::string> services = {}, int retry_after_s = 1,
            milliseconds delay = 0ms) {
    fault_rule r;
    r.kind = kind;
    r.rate = 1.0;
    r.to = window;
    r.services = std::move(services);
    r.retry_after_s = retry_after_s;
    r.delay = delay;
    fault_plan p;
    p.rules = {r};
    proxy_->set_plan(p);
  }

  std::uint64_t injected(fault_kind k) { return proxy_->stats()["injected"][std::string(to_string(k))].get<std::uint64_t>(); }

  std::optional<fault_proxy> proxy_;
};

TEST_F(FaultProxyIt, RelaysEveryServiceUntouchedSoSharedKeyStillVerifies) {
  auto p = pipe();
  auto t = storage::table_client::make(p, unique_name("proxyrelay"));
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->create_table()) << "table create through the proxy";
  storage::table_entity e;
  e.partition_key = "p";
  e.row_key = "r";
  e.set("v", std::string("hello"));
  ASSERT_TRUE(t->insert(e));
  auto got = t->get("p", "r");
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(*got->get<std::string>("v"), "hello");

  storage::blob_client b(p);
  const std::string container = unique_name("proxyrelay");
  ASSERT_TRUE(b.create_container(container));
  const std::string body(300'000, 'b');
  ASSERT_TRUE(b.put_blob(container, "x.json", body));
  auto down = b.get_blob(container, "x.json");
  ASSERT_TRUE(down) << down.error().describe();
  EXPECT_EQ(down->body, body);

  storage::queue_client q(p);
  const std::string queue = unique_name("proxyrelay");
  ASSERT_TRUE(q.create_queue(queue));
  ASSERT_TRUE(q.put_message(queue, "m1"));

  auto s = proxy_->stats();
  EXPECT_GE(s["requests"]["table"].get<int>(), 3);
  EXPECT_GE(s["requests"]["blob"].get<int>(), 3);
  EXPECT_GE(s["requests"]["queue"].get<int>(), 2);
  for (auto k : all_fault_kinds) EXPECT_EQ(injected(k), 0u) << to_string(k);
}

TEST_F(FaultProxyIt, ServerBusyCarriesTheServicesErrorBodiesAndIsRetried) {
  auto once = pipe(1);
  plan(fault_kind::server_busy, 60s);
  auto t = storage::table_client::make(once, unique_name("proxybusy"));
  ASSERT_TRUE(t);
  auto r = t->create_table();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().http_status, 503);
  EXPECT_EQ(r.error().code, storage::errc::throttled);
  EXPECT_EQ(r.error().service_code, "ServerBusy");
  EXPECT_NE(r.error().message.find("The server is busy."), std::string::npos) << r.error().describe();
  EXPECT_FALSE(r.error().request_id.empty());
  auto c = storage::blob_client(once).create_container(unique_name("proxybusy"));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().service_code, "ServerBusy");
  EXPECT_NE(c.error().message.find("The server is busy."), std::string::npos) << c.error().describe();
  EXPECT_EQ(injected(fault_kind::server_busy), 2u);

  // With retries, the request gets through once the window ends.
  plan(fault_kind::server_busy, 500ms);
  auto t2 = storage::table_client::make(pipe(6), unique_name("proxybusy"));
  ASSERT_TRUE(t2);
  EXPECT_TRUE(t2->create_table());
}

TEST_F(FaultProxyIt, RetryAfterIsHonouredBeforeTheNextAttempt) {
  // 503 with Retry-After: 1 for 1.5 s: attempts at 0 and ~1 s meet it, the third (~2 s) passes.
  plan(fault_kind::server_busy_retry_after, 1500ms, {"table"}, 1);
  auto t = storage::table_client::make(pipe(4), unique_name("proxyra"));
  ASSERT_TRUE(t);
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(t->create_table());
  // Wall clock on purpose: what is checked is that the client waited the server's delay.
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1900ms);
  EXPECT_EQ(injected(fault_kind::server_busy_retry_after), 2u);
}

TEST_F(FaultProxyIt, OperationTimedOutAfterExecutingLeavesTheWriteDoneAndTheRetryResolvesIt) {
  auto p = pipe();
  auto t = storage::table_client::make(p, unique_name("proxyota"));
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->create_table());
  plan(fault_kind::operation_timed_out_after, 300ms, {"table"});
  storage::table_entity e;
  e.partition_key = "p";
  e.row_key = "once";
  e.set("v", std::string("x"));
  auto w = t->insert(e); // landed, answered 500; the retry meets 409 and reads it back
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_GE(injected(fault_kind::operation_timed_out_after), 1u);
  auto got = t->get("p", "once");
  ASSERT_TRUE(got);
}

TEST_F(FaultProxyIt, ResetInTheMiddleOfABodyIsRetriedAndNeverReturnsATruncatedBlob) {
  auto p = pipe();
  storage::blob_client b(p);
  const std::string container = unique_name("proxymid");
  ASSERT_TRUE(b.create_container(container));
  std::string body;
  for (int i = 0; body.size() < 2'000'000; ++i) body += std::to_string(i) + ",";
  ASSERT_TRUE(b.put_blob(container, "big.json", body));
  plan(fault_kind::reset_mid_body, 400ms, {"blob"});
  auto down = b.get_blob(container, "big.json");
  ASSERT_TRUE(down) << down.error().describe();
  EXPECT_EQ(down->body.size(), body.size());
  EXPECT_TRUE(down->body == body);
  EXPECT_GE(injected(fault_kind::reset_mid_body), 1u);

  plan(fault_kind::reset_before_response, 60s, {"blob"});
  auto once = storage::blob_client(pipe(1)).get_blob(container, "big.json");
  ASSERT_FALSE(once);
  EXPECT_EQ(once.error().code, storage::errc::transport) << once.error().describe();
}

TEST_F(FaultProxyIt, AStallLongerThanTheRequestTimeoutTimesTheRequestOut) {
  plan(fault_kind::stall, 60s, {"table"}, 1, 5000ms);
  auto t = storage::table_client::make(pipe(1, 1000ms), unique_name("proxystall"));
  ASSERT_TRUE(t);
  auto r = t->create_table();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, storage::errc::timeout) << r.error().describe();
  EXPECT_EQ(injected(fault_kind::stall), 1u);
}

TEST_F(FaultProxyIt, AnOutageResetsEveryRequestForItsWindowAndThenRelaysAgain) {
  auto p = pipe(1);
  storage::blob_client b(p);
  const std::string container = unique_name("proxyout");
  ASSERT_TRUE(b.create_container(container)); // a kept-alive connection exists now
  plan(fault_kind::outage, 800ms);
  auto r = b.create_container(unique_name("proxyout"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, storage::errc::transport) << r.error().describe();
  EXPECT_GE(injected(fault_kind::outage), 1u);
  std::this_thread::sleep_for(900ms); // the outage's window is what this test is about
  EXPECT_TRUE(b.create_container(unique_name("proxyout")));
}

TEST_F(FaultProxyIt, ControlPortTakesPlansAndAnswersStatsAndRejectsABadPlan) {
  fault_proxy_client c(proxy_->control_port());
  fault_plan p;
  fault_rule r;
  r.kind = fault_kind::latency;
  r.rate = 1.0;
  r.delay = 200ms;
  r.period = 1000ms;
  r.active = 1000ms;
  p.rules = {r};
  ASSERT_TRUE(c.set_plan(p));
  auto t = storage::table_client::make(pipe(), unique_name("proxyctl"));
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->create_table());
  auto s = c.stats();
  ASSERT_TRUE(s) << s.error().describe();
  EXPECT_EQ((*s)["injected"]["latency"].get<int>(), 1);
  ASSERT_TRUE(c.reset());
  EXPECT_EQ((*c.stats())["requests"]["total"].get<int>(), 0);
  auto bad = http_exchange("127.0.0.1", proxy_->control_port(), "PUT", "/plan", R"({"rules":[{"kind":"flood"}]})");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->first, 400);
  EXPECT_NE(bad->second.find("flood"), std::string::npos);
}

} // namespace
} // namespace shoal::tests
