// pipeline::send through the scriptable fake transport: URL building, signing, the retry
// schedule (injected clock, fixed jitter, recorded sleeps: no real sleeping) and fault handling.

#include "storage/pipeline.hpp"

#include "storage/encoding.hpp"
#include "storage/shared_key.hpp"

#include "tests/support/fake_transport.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace shoal::storage {
namespace {

using namespace std::chrono;
using tests::fake_transport;

// A manual clock that advances 1 s per reading, fixed jitter, and a sleep that only records.
struct harness {
  std::shared_ptr<fake_transport> transport = std::make_shared<fake_transport>();
  std::shared_ptr<std::vector<milliseconds>> sleeps = std::make_shared<std::vector<milliseconds>>();
  std::shared_ptr<int> clock_reads = std::make_shared<int>(0);
  double jitter_unit = 0.5; // → factor 1.0 with the default ±20 %

  static system_clock::time_point t0() {
    return system_clock::time_point{sys_days{year{2026} / November / 21} + hours{11} + minutes{58} +
                                    seconds{31}};
  }

  pipeline make(pipeline_options opts = {}, storage_account acct = dev_account()) {
    opts.hooks.now = [reads = clock_reads] { return t0() + seconds{(*reads)++}; };
    opts.hooks.random_unit = [u = jitter_unit] { return u; };
    opts.hooks.sleep = [s = sleeps](milliseconds d) { s->push_back(d); };
    auto p = pipeline::make(std::move(acct), std::move(opts), transport);
    EXPECT_TRUE(p) << p.error().describe();
    return std::move(*p);
  }

  static storage_account dev_account() { return *parse_connection_string("UseDevelopmentStorage=true"); }
};

storage_request get_blob() {
  storage_request r;
  r.path = "/cont1/blob";
  return r;
}

std::string header(const http_request& r, std::string_view name) {
  return std::string(shared_key::find_header(r.headers, name));
}

using sleeps_t = std::vector<milliseconds>;

// -- request building ---------------------------------------------------------------------------

TEST(PipelineTest, BuildsSignedRequestForEachService) {
  harness h;
  h.transport->respond(201).respond(201).respond(204);
  const pipeline p = h.make();

  storage_request container;
  container.method = http_method::put;
  container.path = "/cont1";
  container.query = {{"restype", "container"}};
  ASSERT_TRUE(p.send(service::blob, container));

  storage_request queue;
  queue.method = http_method::put;
  queue.path = "/q1";
  ASSERT_TRUE(p.send(service::queue, queue));

  storage_request table;
  table.method = http_method::post;
  table.path = "/Tables";
  table.headers = {{"Content-Type", "application/json"}};
  table.body = R"({"TableName":"t1"})";
  ASSERT_TRUE(p.send(service::table, table));

  const auto reqs = h.transport->requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].url, "http://127.0.0.1:10000/devstoreaccount1/cont1?restype=container");
  EXPECT_EQ(reqs[0].method, http_method::put);
  EXPECT_EQ(header(reqs[0], "x-ms-date"), "Sat, 21 Nov 2026 11:58:31 GMT");
  EXPECT_EQ(header(reqs[0], "x-ms-version"), "2023-11-03");
  // The exact string to sign of reference §2a (with our API version), signed with the key.
  const std::string to_sign0 =
      "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sat, 21 Nov 2026 11:58:31 GMT\n"
      "x-ms-version:2023-11-03\n/devstoreaccount1/devstoreaccount1/cont1\nrestype:container";
  EXPECT_EQ(header(reqs[0], "authorization"),
            "SharedKey devstoreaccount1:" + shared_key::signature(p.account().key, to_sign0));

  EXPECT_EQ(reqs[1].url, "http://127.0.0.1:10001/devstoreaccount1/q1");
  EXPECT_EQ(header(reqs[1], "x-ms-version"), "2023-11-03");

  EXPECT_EQ(reqs[2].url, "http://127.0.0.1:10002/devstoreaccount1/Tables");
  EXPECT_EQ(reqs[2].body, R"({"TableName":"t1"})");
  EXPECT_EQ(header(reqs[2], "x-ms-version"), "2019-02-02");
  const std::string to_sign2 = "POST\n\napplication/json\nSat, 21 Nov 2026 11:58:33 GMT\n"
                               "/devstoreaccount1/devstoreaccount1/Tables";
  EXPECT_EQ(header(reqs[2], "authorization"),
            "SharedKey devstoreaccount1:" + shared_key::signature(p.account().key, to_sign2));
}

TEST(PipelineTest, TableSharedKeyLiteWhenConfigured) {
  harness h;
  h.transport->respond(200);
  pipeline_options opts;
  opts.table_auth = table_auth_scheme::shared_key_lite;
  const pipeline p = h.make(opts);
  storage_request q;
  q.path = "/Tables";
  q.query = {{"$filter", "TableName eq 'x'"}};
  ASSERT_TRUE(p.send(service::table, q));
  const auto req = h.transport->requests().at(0);
  EXPECT_EQ(req.url,
            "http://127.0.0.1:10002/devstoreaccount1/Tables?$filter=TableName%20eq%20%27x%27");
  const std::string to_sign = "Sat, 21 Nov 2026 11:58:31 GMT\n/devstoreaccount1/devstoreaccount1/Tables";
  EXPECT_EQ(header(req, "authorization"),
            "SharedKeyLite devstoreaccount1:" + shared_key::signature(p.account().key, to_sign));
}

TEST(PipelineTest, SasIsAppendedAndNothingIsSigned) {
  harness h;
  h.transport->respond(200).respond(200);
  auto acct = parse_connection_string("BlobEndpoint=https://acct.blob.core.windows.net;"
                                      "SharedAccessSignature=sv=2022-11-02&sig=a%2Bb");
  ASSERT_TRUE(acct) << acct.error().describe();
  const pipeline p = h.make({}, *acct);
  storage_request list;
  list.query = {{"comp", "list"}};
  ASSERT_TRUE(p.send(service::blob, list));
  ASSERT_TRUE(p.send(service::blob, get_blob()));
  const auto reqs = h.transport->requests();
  EXPECT_EQ(reqs[0].url, "https://acct.blob.core.windows.net/?comp=list&sv=2022-11-02&sig=a%2Bb");
  EXPECT_EQ(reqs[1].url, "https://acct.blob.core.windows.net/cont1/blob?sv=2022-11-02&sig=a%2Bb");
  for (const auto& r : reqs) {
    EXPECT_EQ(header(r, "authorization"), "");
    EXPECT_FALSE(header(r, "x-ms-date").empty());
  }
  // No table endpoint in this account: an error before anything is sent.
  auto t = p.send(service::table, get_blob());
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, errc::invalid_argument);
  EXPECT_EQ(h.transport->request_count(), 2u);
}

TEST(PipelineTest, KeepsCallerApiVersionAndHeaders) {
  harness h;
  h.transport->respond(200);
  const pipeline p = h.make();
  storage_request r = get_blob();
  r.headers = {{"x-ms-version", "2025-11-05"}, {"x-ms-range", "bytes=0-1"}};
  r.timeout = milliseconds{1234};
  ASSERT_TRUE(p.send(service::blob, r));
  const auto req = h.transport->requests().at(0);
  EXPECT_EQ(header(req, "x-ms-version"), "2025-11-05");
  EXPECT_EQ(header(req, "x-ms-range"), "bytes=0-1");
  EXPECT_EQ(req.timeout, milliseconds{1234});
  int versions = 0;
  for (const auto& [k, v] : req.headers)
    versions += k == "x-ms-version";
  EXPECT_EQ(versions, 1);
}

TEST(PipelineTest, RejectsBadOptionsAndPaths) {
  harness h;
  pipeline_options bad;
  bad.retry.max_attempts = 0;
  EXPECT_FALSE(pipeline::make(harness::dev_account(), bad, h.transport));
  bad = {};
  bad.retry.jitter = 1.5;
  EXPECT_FALSE(pipeline::make(harness::dev_account(), bad, h.transport));
  const pipeline p = h.make();
  storage_request r;
  r.path = "no-slash";
  auto res = p.send(service::blob, r);
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::invalid_argument);
  EXPECT_EQ(h.transport->request_count(), 0u);
}

// -- errors -------------------------------------------------------------------------------------

TEST(PipelineTest, TableJsonErrorBecomesErrorValue) {
  harness h;
  h.transport->respond(
      409, {{"x-ms-error-code", "EntityAlreadyExists"}, {"x-ms-request-id", "req-1"}},
      R"({"odata.error":{"code":"EntityAlreadyExists","message":{"lang":"en-US",)"
      R"("value":"The specified entity already exists.\nRequestId:req-1\nTime:2026"}}})");
  const pipeline p = h.make();
  auto r = p.send(service::table, get_blob());
  ASSERT_FALSE(r);
  const error& e = r.error();
  EXPECT_EQ(e.code, errc::conflict);
  EXPECT_EQ(e.http_status, 409);
  EXPECT_EQ(e.service_code, "EntityAlreadyExists");
  EXPECT_EQ(e.request_id, "req-1");
  EXPECT_EQ(e.message, "The specified entity already exists.");
  EXPECT_FALSE(e.retryable);
  EXPECT_EQ(e.attempts, 1);
}

TEST(PipelineTest, XmlErrorBecomesErrorValue) {
  harness h;
  h.transport->respond(
      404, {{"x-ms-request-id", "req-2"}},
      "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobNotFound</Code>"
      "<Message>The specified blob does not exist. &lt;x&gt; &amp;\nRequestId:req-2</Message>"
      "</Error>");
  const pipeline p = h.make();
  auto r = p.send(service::blob, get_blob());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found);
  EXPECT_EQ(r.error().service_code, "BlobNotFound"); // from the body: no header here
  EXPECT_EQ(r.error().message, "The specified blob does not exist. <x> &");
  EXPECT_EQ(r.error().request_id, "req-2");
}

TEST(PipelineTest, ErrorWithoutBodyStillHasAMessage) {
  harness h;
  h.transport->respond(403, {{"x-ms-error-code", "AuthorizationFailure"}});
  const pipeline p = h.make();
  auto r = p.send(service::table, get_blob());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::auth);
  EXPECT_EQ(r.error().message, "HTTP 403");
  EXPECT_NE(r.error().describe().find("AuthorizationFailure"), std::string::npos);
}

TEST(PipelineTest, RedirectAndNotModifiedAreValues) {
  harness h;
  h.transport->respond(304).respond(200, {}, "ok");
  const pipeline p = h.make();
  auto r = p.send(service::blob, get_blob());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, 304);
  EXPECT_EQ(h.sleeps->size(), 0u);
}

// -- request counts ------------------------------------------------------------------------------

storage_request req(http_method m, std::string path, std::vector<std::pair<std::string, std::string>> q = {},
                    std::string body = {}) {
  storage_request r;
  r.method = m;
  r.path = std::move(path);
  r.query = std::move(q);
  r.body = std::move(body);
  return r;
}

TEST(PipelineTest, NamesTheKindAndResourceOfEveryRequest) {
  using m = http_method;
  struct want {
    service svc;
    storage_request r;
    std::string_view kind;
    std::string resource;
  };
  const std::string batch_body = "--batch_1\r\nContent-Type: multipart/mixed; boundary=changeset_1\r\n\r\n"
                                 "--changeset_1\r\nContent-Type: application/http\r\n\r\n"
                                 "MERGE http://127.0.0.1:10002/devstoreaccount1/shoalwork(PartitionKey='etl-0a',"
                                 "RowKey='a%2Fb') HTTP/1.1\r\n";
  const std::vector<want> cases{
      {service::table, req(m::post, "/$batch", {}, batch_body), "batch", "shoalwork"},
      {service::table, req(m::post, "/$batch"), "batch", "$batch"},
      {service::table, req(m::post, "/Tables"), "create_table", "Tables"},
      {service::table, req(m::get, "/Tables"), "list_tables", "Tables"},
      {service::table, req(m::del, "/Tables('t1')"), "delete_table", "Tables"},
      {service::table, req(m::post, "/runs"), "insert", "runs"},
      {service::table, req(m::get, "/runs(PartitionKey='p',RowKey='r')"), "get", "runs"},
      {service::table, req(m::get, "/runs()", {{"$filter", "PartitionKey eq 'p'"}}), "query", "runs"},
      {service::table, req(m::get, "/runs", {{"$filter", "PartitionKey eq 'p'"}}), "query", "runs"},
      {service::table, req(m::merge, "/runs(PartitionKey='p',RowKey='r')"), "merge", "runs"},
      {service::table, req(m::put, "/runs(PartitionKey='p',RowKey='r')"), "update", "runs"},
      {service::table, req(m::del, "/runs(PartitionKey='p',RowKey='r')"), "delete", "runs"},
      {service::blob, req(m::put, "/shoal", {{"restype", "container"}}), "create_container", "shoal"},
      {service::blob, req(m::put, "/shoal/flights/2001/01/05/h-p-1.json"), "put", "shoal"},
      {service::blob, req(m::get, "/shoal/flights/2001/01/05/h-p-1.json"), "get", "shoal"},
      {service::blob, req(m::head, "/shoal/x"), "properties", "shoal"},
      {service::blob, req(m::put, "/shoal/x", {{"comp", "appendblock"}}), "append_block", "shoal"},
      {service::blob, req(m::put, "/shoal/x", {{"comp", "metadata"}}), "set_metadata", "shoal"},
      {service::blob, req(m::get, "/shoal", {{"restype", "container"}, {"comp", "list"}}), "list", "shoal"},
      {service::blob, req(m::del, "/shoal/x"), "delete", "shoal"},
      {service::queue, req(m::post, "/q1/messages"), "put_message", "q1"},
      {service::queue, req(m::get, "/q1/messages", {{"numofmessages", "32"}}), "get_messages", "q1"},
      {service::queue, req(m::del, "/q1/messages/abc", {{"popreceipt", "x"}}), "delete_message", "q1"},
      {service::queue, req(m::put, "/q1"), "create_queue", "q1"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(request_kind(c.svc, c.r), c.kind) << to_string(c.svc) << " " << to_string(c.r.method) << " " << c.r.path;
    EXPECT_EQ(request_resource(c.svc, c.r), c.resource) << c.r.path;
  }
}

TEST(PipelineTest, CountsEveryAttemptByServiceOperationAndResource) {
  // The counts are the process's: compare before and after.
  auto count_of = [](service svc, std::string_view op, std::string_view resource) {
    std::uint64_t n = 0;
    for (const auto& c : process_request_counts())
      if (c.svc == svc && c.op == op && c.resource == resource) n += c.count;
    return n;
  };
  harness h;
  h.transport->respond(503).respond(201).respond(404);
  const pipeline p = h.make();
  const auto puts = count_of(service::blob, "put", "countme");
  const auto gets = count_of(service::blob, "get", "countme");
  ASSERT_TRUE(p.send(service::blob, req(http_method::put, "/countme/b", {}, "x"))); // 503, then 201
  ASSERT_FALSE(p.send(service::blob, req(http_method::get, "/countme/b")));        // 404 counts too
  EXPECT_EQ(count_of(service::blob, "put", "countme") - puts, 2u) << "a retry is a second request";
  EXPECT_EQ(count_of(service::blob, "get", "countme") - gets, 1u);
  // The rvalue send (its body moved into the request) is counted with its resource too.
  h.transport->respond(202);
  ASSERT_TRUE(p.send(service::table, req(http_method::post, "/$batch", {}, "POST http://h/acct/movedtable HTTP/1.1\r\n")));
  EXPECT_EQ(count_of(service::table, "batch", "movedtable"), 1u);
}

} // namespace
} // namespace shoal::storage
