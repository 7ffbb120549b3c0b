// The retry schedule and fault handling of pipeline::send, driven through the fake transport
// with an injected clock, a fixed jitter and a sleep hook that only records: no real sleeps.

#include "storage/pipeline.hpp"

#include "storage/shared_key.hpp"

#include "tests/support/fake_transport.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace shoal::storage {
namespace {

using namespace std::chrono;
using tests::fake_transport;
using sleeps_t = std::vector<milliseconds>;

class RetryTest : public ::testing::Test {
protected:
  std::shared_ptr<fake_transport> transport = std::make_shared<fake_transport>();
  sleeps_t sleeps;
  int clock_reads = 0;
  double jitter_unit = 0.5; // uniform[0,1) draw; 0.5 → factor 1.0

  pipeline make(retry_options retry = {}) {
    pipeline_options opts;
    opts.retry = retry;
    opts.hooks.now = [this] {
      return system_clock::time_point{sys_days{year{2026} / November / 21}} +
             seconds{clock_reads++};
    };
    opts.hooks.random_unit = [this] { return jitter_unit; };
    opts.hooks.sleep = [this](milliseconds d) { sleeps.push_back(d); };
    auto p = pipeline::make(*parse_connection_string("UseDevelopmentStorage=true"), opts, transport);
    EXPECT_TRUE(p) << p.error().describe();
    return std::move(*p);
  }

  static storage_request request() {
    storage_request r;
    r.method = http_method::put;
    r.path = "/cont1/blob";
    r.headers = {{"x-ms-blob-type", "BlockBlob"}};
    r.body = "data";
    return r;
  }

  static auto forever(int status, std::vector<std::pair<std::string, std::string>> headers = {}) {
    return [status, headers](const http_request&) -> result<http_response> {
      http_response r;
      r.status = status;
      r.headers = headers;
      return r;
    };
  }
};

// -- schedule -----------------------------------------------------------------------------------

TEST_F(RetryTest, BacksOffExponentiallyThenGivesUpAfterFourAttempts) {
  transport->otherwise(forever(503, {{"x-ms-error-code", "ServerBusy"}}));
  const pipeline p = make();
  auto r = p.send(service::blob, request());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::throttled);
  EXPECT_EQ(r.error().http_status, 503);
  EXPECT_EQ(r.error().service_code, "ServerBusy");
  EXPECT_TRUE(r.error().retryable);
  EXPECT_EQ(r.error().attempts, 4);
  EXPECT_EQ(transport->request_count(), 4u);
  EXPECT_EQ(sleeps, (sleeps_t{milliseconds{200}, milliseconds{400}, milliseconds{800}}));
  EXPECT_NE(r.error().describe().find("after 4 attempts"), std::string::npos);
}

TEST_F(RetryTest, JitterScalesEachDelayWithinPlusMinusTwentyPercent) {
  transport->otherwise(forever(500));
  jitter_unit = 0.0;
  const pipeline low = make();
  ASSERT_FALSE(low.send(service::blob, request()));
  EXPECT_EQ(sleeps, (sleeps_t{milliseconds{160}, milliseconds{320}, milliseconds{640}}));

  sleeps.clear();
  jitter_unit = 1.0;
  const pipeline high = make();
  ASSERT_FALSE(high.send(service::blob, request()));
  EXPECT_EQ(sleeps, (sleeps_t{milliseconds{240}, milliseconds{480}, milliseconds{960}}));
}

TEST_F(RetryTest, DelayIsCappedAtMaxDelay) {
  transport->otherwise(forever(502));
  retry_options o;
  o.max_attempts = 5;
  o.base_delay = milliseconds{10'000};
  o.max_delay = milliseconds{15'000};
  const pipeline p = make(o);
  auto r = p.send(service::blob, request());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().attempts, 5);
  EXPECT_EQ(sleeps, (sleeps_t{milliseconds{10'000}, milliseconds{15'000}, milliseconds{15'000},
                              milliseconds{15'000}}));
}

TEST_F(RetryTest, HonoursServerRetryAfterHeaders) {
  transport->respond(503, {{"x-ms-retry-after-ms", "1500"}})
      .respond(429, {{"retry-after-ms", "250"}})
      .respond(503, {{"retry-after", "3"}})
      .respond(200);
  const pipeline p = make();
  auto r = p.send(service::blob, request());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(sleeps, (sleeps_t{milliseconds{1500}, milliseconds{250}, milliseconds{3000}}));
}

TEST_F(RetryTest, RetryAfterIsCappedAndHttpDateFormIgnored) {
  transport->respond(503, {{"retry-after", "3600"}})
      .respond(503, {{"retry-after", "Sat, 21 Nov 2026 12:00:00 GMT"}})
      .respond(200);
  retry_options o;
  o.max_delay = milliseconds{5'000};
  const pipeline p = make(o);
  ASSERT_TRUE(p.send(service::blob, request()));
  // 3600 s capped at 5 s; the date form falls back to the computed 400 ms (2nd retry).
  EXPECT_EQ(sleeps, (sleeps_t{milliseconds{5'000}, milliseconds{400}}));
}

TEST_F(RetryTest, RetriesEveryTransientStatus) {
  for (int status : {408, 429, 500, 502, 503, 504})
    transport->respond(status);
  transport->respond(201);
  retry_options o;
  o.max_attempts = 7;
  const pipeline p = make(o);
  auto r = p.send(service::blob, request());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(transport->request_count(), 7u);
}

TEST_F(RetryTest, NeverRetriesOtherClientErrors) {
  for (int status : {400, 401, 403, 404, 409, 412, 413, 501}) {
    transport->respond(status);
    sleeps.clear();
    const std::size_t before = transport->request_count();
    const pipeline p = make();
    auto r = p.send(service::blob, request());
    ASSERT_FALSE(r) << status;
    EXPECT_EQ(r.error().http_status, status);
    EXPECT_EQ(r.error().attempts, 1) << status;
    EXPECT_FALSE(r.error().retryable) << status;
    EXPECT_EQ(transport->request_count(), before + 1) << status;
    EXPECT_TRUE(sleeps.empty()) << status;
  }
}

TEST_F(RetryTest, OneAttemptMeansNoRetry) {
  transport->respond(503).respond(200);
  retry_options o;
  o.max_attempts = 1;
  const pipeline p = make(o);
  auto r = p.send(service::blob, request());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().attempts, 1);
  EXPECT_TRUE(r.error().retryable);
  EXPECT_EQ(transport->pending(), 1u);
}

TEST_F(RetryTest, ReStampsAndReSignsEveryAttempt) {
  transport->respond(500).respond(503).respond(200);
  const pipeline p = make();
  ASSERT_TRUE(p.send(service::blob, request()));
  const auto reqs = transport->requests();
  ASSERT_EQ(reqs.size(), 3u);
  std::set<std::string> dates, auths;
  for (const auto& req : reqs) {
    const std::string date(shared_key::find_header(req.headers, "x-ms-date"));
    const std::string auth(shared_key::find_header(req.headers, "authorization"));
    dates.insert(date);
    auths.insert(auth);
    // Each attempt's signature is valid for that attempt's own date.
    const shared_key::signing_input in{.method = req.method,
                                       .account = "devstoreaccount1",
                                       .path = "/devstoreaccount1/cont1/blob",
                                       .query = {},
                                       .headers = req.headers,
                                       .content_length = req.body.size()};
    EXPECT_EQ(auth, shared_key::authorization(
                        "devstoreaccount1",
                        shared_key::signature(p.account().key,
                                              shared_key::blob_queue_string_to_sign(in))));
    EXPECT_EQ(req.body, "data");
    EXPECT_EQ(req.url, reqs[0].url);
  }
  EXPECT_EQ(dates.size(), 3u);
  EXPECT_EQ(auths.size(), 3u);
  EXPECT_EQ(*dates.begin(), "Sat, 21 Nov 2026 00:00:00 GMT");
}

// -- faults -------------------------------------------------------------------------------------

TEST_F(RetryTest, TimeoutThenSuccess) {
  transport->fail_timeout().respond(201);
  const pipeline p = make();
  auto r = p.send(service::blob, request());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->attempts, 2); // a 2xx after a retry says so: its body may reflect attempt 1
  EXPECT_EQ(transport->request_count(), 2u);
  EXPECT_EQ(sleeps, (sleeps_t{milliseconds{200}}));
}

TEST_F(RetryTest, ServiceUnavailableThenSuccess) {
  transport->respond(503).respond(503).respond(201).respond(200);
  const pipeline p = make();
  auto r = p.send(service::blob, request());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->attempts, 3);
  EXPECT_EQ(transport->request_count(), 3u);
  auto first_try = p.send(service::blob, request());
  ASSERT_TRUE(first_try) << first_try.error().describe();
  EXPECT_EQ(first_try->attempts, 1);
}

TEST_F(RetryTest, ConnectionResetThenSuccess) {
  transport->fail_connection_reset().respond(201);
  const pipeline p = make();
  auto r = p.send(service::blob, request());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(transport->request_count(), 2u);
}

TEST_F(RetryTest, PersistentTimeoutsEndAsTimeoutAfterFourAttempts) {
  transport->otherwise([](const http_request&) -> result<http_response> {
    return std::unexpected(error{errc::timeout, 0, {}, {}, true, 1, "curl: Timeout (fake)"});
  });
  const pipeline p = make();
  auto r = p.send(service::blob, request());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::timeout);
  EXPECT_EQ(r.error().http_status, 0);
  EXPECT_EQ(r.error().attempts, 4);
  EXPECT_TRUE(r.error().retryable);
}

TEST_F(RetryTest, NonRetryableTransportErrorIsNotRetried) {
  transport->fail(error{errc::transport, 0, {}, {}, false, 1, "curl: SSL peer certificate (fake)"})
      .respond(200);
  const pipeline p = make();
  auto r = p.send(service::blob, request());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::transport);
  EXPECT_EQ(r.error().attempts, 1);
  EXPECT_EQ(transport->request_count(), 1u);
}

TEST_F(RetryTest, PreconditionFailedOnSecondAttemptCarriesAttempts) {
  // The first attempt may have landed before its connection died: the 412 of the retry
  // then tells the caller to re-read, and attempts = 2 says so.
  transport->fail_connection_reset().respond(
      412, {{"x-ms-error-code", "ConditionNotMet"}, {"x-ms-request-id", "r2"}});
  const pipeline p = make();
  auto r = p.send(service::blob, request());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed);
  EXPECT_EQ(r.error().http_status, 412);
  EXPECT_EQ(r.error().service_code, "ConditionNotMet");
  EXPECT_EQ(r.error().attempts, 2);
  EXPECT_FALSE(r.error().retryable);
  EXPECT_EQ(transport->request_count(), 2u);
}

TEST_F(RetryTest, OperationTimedOutFiveHundredIsTimeoutAndRetried) {
  transport->otherwise(forever(500, {{"x-ms-error-code", "OperationTimedOut"}}));
  const pipeline p = make();
  auto r = p.send(service::table, request());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::timeout);
  EXPECT_EQ(r.error().attempts, 4);
}

} // namespace
} // namespace shoal::storage
