// blob_client and queue_client over a scripted transport: the requests they build, how they
// read answers, and the retry-after-landing decisions — deterministic, no network.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/encoding.hpp"
#include "storage/queue_client.hpp"

#include "tests/support/fake_transport.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>

namespace shoal::storage {
namespace {

using tests::fake_transport;

std::optional<std::string> header_of(const http_request& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k.size() != name.size())
      continue;
    bool same = true;
    for (std::size_t i = 0; i < k.size(); ++i)
      same = same && std::tolower(static_cast<unsigned char>(k[i])) ==
                         std::tolower(static_cast<unsigned char>(name[i]));
    if (same)
      return v;
  }
  return std::nullopt;
}

class ClientFakeTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto acct = parse_connection_string("UseDevelopmentStorage=true");
    ASSERT_TRUE(acct) << acct.error().describe();
    pipeline_options opts;
    opts.hooks.sleep = [](std::chrono::milliseconds) {};
    opts.hooks.random_unit = [] { return 0.5; };
    auto p = pipeline::make(*acct, opts, fake);
    ASSERT_TRUE(p) << p.error().describe();
    blobs.emplace(*p);
    queues.emplace(*p);
  }

  std::shared_ptr<fake_transport> fake = std::make_shared<fake_transport>();
  std::optional<blob_client> blobs;
  std::optional<queue_client> queues;
};

TEST_F(ClientFakeTest, PutBlobSendsTypeMd5MetadataAndCreateOnly) {
  fake->respond(201, {{"etag", "\"0x1\""}, {"content-md5", base64_encode(md5("body"))},
                      {"date", "Sat, 21 Nov 2026 11:58:31 GMT"}});
  put_blob_options o;
  o.content_type = "application/json";
  o.metadata = {{"count", "1"}};
  o.create_only = true;
  auto r = blobs->put_blob("c1x", "dir/a b.json", "body", o);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->etag, "\"0x1\"");
  ASSERT_TRUE(r->date);
  EXPECT_EQ(format_http_date(*r->date), "Sat, 21 Nov 2026 11:58:31 GMT");
  ASSERT_EQ(fake->request_count(), 1u);
  const http_request req = fake->requests()[0];
  EXPECT_EQ(req.method, http_method::put);
  EXPECT_NE(req.url.find("/devstoreaccount1/c1x/dir/a%20b.json"), std::string::npos) << req.url;
  EXPECT_EQ(header_of(req, "x-ms-blob-type"), "BlockBlob");
  EXPECT_EQ(header_of(req, "Content-Type"), "application/json");
  EXPECT_EQ(header_of(req, "Content-MD5"), base64_encode(md5("body")));
  EXPECT_EQ(header_of(req, "If-None-Match"), "*");
  EXPECT_EQ(header_of(req, "x-ms-meta-count"), "1");
  EXPECT_EQ(req.body, "body");
}

TEST_F(ClientFakeTest, InvalidInputSendsNothing) {
  EXPECT_EQ(blobs->put_blob("UPPER", "a", "b").error().code, errc::invalid_argument);
  EXPECT_EQ(blobs->get_blob("c1x", "").error().code, errc::invalid_argument);
  EXPECT_EQ(blobs->append_block("c1x", "a", std::string(max_append_block_bytes + 1, 'x'))
                .error()
                .code,
            errc::limit_exceeded);
  get_messages_options g;
  g.count = 33;
  EXPECT_EQ(queues->get_messages("q-1", g).error().code, errc::invalid_argument);
  EXPECT_EQ(queues->put_message("q-1", std::string(70'000, 'x')).error().code,
            errc::limit_exceeded);
  EXPECT_EQ(fake->request_count(), 0u);
}

TEST_F(ClientFakeTest, AppendSendsPositionAndReadsOffsetAndCount) {
  fake->respond(201, {{"etag", "\"0x2\""},
                      {"x-ms-blob-append-offset", "18"},
                      {"x-ms-blob-committed-block-count", "3"}});
  append_block_options o;
  o.expected_offset = 18;
  o.max_size = 1024;
  auto r = blobs->append_block("c1x", "log", "abc", o);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->offset, 18u);
  EXPECT_EQ(r->committed_block_count, 3u);
  EXPECT_FALSE(r->recovered);
  const http_request req = fake->requests()[0];
  EXPECT_NE(req.url.find("comp=appendblock"), std::string::npos);
  EXPECT_EQ(header_of(req, "x-ms-blob-condition-appendpos"), "18");
  EXPECT_EQ(header_of(req, "x-ms-blob-condition-maxsize"), "1024");
}

TEST_F(ClientFakeTest, AppendWithoutOffsetHeadersIsBadResponse) {
  fake->respond(201, {{"etag", "\"0x2\""}});
  auto r = blobs->append_block("c1x", "log", "abc");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_response);
}

TEST_F(ClientFakeTest, RetriedAppendMeeting412WithOurBytesIsRecovered) {
  fake->respond(503, {{"x-ms-error-code", "ServerBusy"}}) // first attempt "lost"
      .respond(412, {{"x-ms-error-code", "AppendPositionConditionNotMet"}})
      .respond(206, {{"etag", "\"0x3\""},
                     {"content-range", "bytes 10-12/13"},
                     {"x-ms-blob-type", "AppendBlob"},
                     {"x-ms-blob-committed-block-count", "4"}},
               "abc");
  append_block_options o;
  o.expected_offset = 10;
  auto r = blobs->append_block("c1x", "log", "abc", o);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_TRUE(r->recovered);
  EXPECT_EQ(r->offset, 10u);
  EXPECT_EQ(r->committed_block_count, 4u);
  EXPECT_EQ(r->etag, "\"0x3\"");
  ASSERT_EQ(fake->request_count(), 3u);
  EXPECT_EQ(header_of(fake->requests()[2], "x-ms-range"), "bytes=10-12");
}

TEST_F(ClientFakeTest, RetriedAppendMeeting412WithOtherBytesStaysPreconditionFailed) {
  fake->respond(503, {{"x-ms-error-code", "ServerBusy"}})
      .respond(412, {{"x-ms-error-code", "AppendPositionConditionNotMet"}})
      .respond(206, {{"content-range", "bytes 10-12/13"}}, "xyz");
  append_block_options o;
  o.expected_offset = 10;
  auto r = blobs->append_block("c1x", "log", "abc", o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed);
  EXPECT_EQ(r.error().service_code, "AppendPositionConditionNotMet");
  EXPECT_GT(r.error().attempts, 1);
}

TEST_F(ClientFakeTest, FirstAttempt412IsNeverTakenForOurOwn) {
  fake->respond(412, {{"x-ms-error-code", "AppendPositionConditionNotMet"}});
  append_block_options o;
  o.expected_offset = 10;
  auto r = blobs->append_block("c1x", "log", "abc", o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed);
  EXPECT_EQ(fake->request_count(), 1u); // no verification read
  EXPECT_NE(r.error().message.find("expected 10"), std::string::npos) << r.error().message;
}

TEST_F(ClientFakeTest, ListBlobsQueryAndMalformedBody) {
  fake->respond(200, {}, "<EnumerationResults><Blobs><Blob><Name>a</Name></Blob></Blobs>"
                         "<NextMarker>m2</NextMarker></EnumerationResults>")
      .respond(200, {{"x-ms-request-id", "req-7"}}, "<EnumerationResults><Blobs><Blob>");
  list_blobs_options o;
  o.prefix = "a/b c";
  o.delimiter = "/";
  o.max_results = 2;
  o.include_metadata = true;
  o.marker = "m1";
  auto pager = blobs->list_blobs_pager("c1x", o);
  auto p1 = pager.next();
  ASSERT_TRUE(p1 && *p1) << (p1 ? "" : p1.error().describe());
  EXPECT_EQ((*p1)->next_marker, "m2");
  const std::string url = fake->requests()[0].url;
  for (const char* part : {"restype=container", "comp=list", "prefix=a%2Fb%20c", "delimiter=%2F",
                           "maxresults=2", "include=metadata", "marker=m1"})
    EXPECT_NE(url.find(part), std::string::npos) << part << " not in " << url;
  auto p2 = pager.next();
  ASSERT_FALSE(p2);
  EXPECT_EQ(p2.error().code, errc::bad_response);
  EXPECT_EQ(p2.error().http_status, 200);
  EXPECT_EQ(p2.error().request_id, "req-7");
  EXPECT_NE(fake->requests()[1].url.find("marker=m2"), std::string::npos);
}

TEST_F(ClientFakeTest, WholeBlobReadChecksMd5) {
  fake->respond(200, {{"content-md5", base64_encode(md5("right"))}, {"content-length", "5"}},
                "wrong");
  auto r = blobs->get_blob("c1x", "a");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_response);
}

TEST_F(ClientFakeTest, StaleReceiptBecomesPreconditionFailed) {
  fake->respond(400, {{"x-ms-error-code", "PopReceiptMismatch"}},
                "<?xml version=\"1.0\"?><Error><Code>PopReceiptMismatch</Code><Message>The "
                "specified pop receipt did not match.</Message></Error>");
  auto r = queues->delete_message("q-1", "id 1", "rcpt+/=");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed);
  EXPECT_EQ(r.error().service_code, "PopReceiptMismatch");
  EXPECT_NE(r.error().message.find("pop receipt is stale"), std::string::npos);
  const std::string url = fake->requests()[0].url;
  EXPECT_NE(url.find("/q-1/messages/id%201"), std::string::npos) << url;
  EXPECT_NE(url.find("popreceipt=rcpt%2B%2F%3D"), std::string::npos) << url;
}

TEST_F(ClientFakeTest, PutMessageBuildsBodyAndQuery) {
  fake->respond(201, {},
                "<QueueMessagesList><QueueMessage><MessageId>m1</MessageId><PopReceipt>r1"
                "</PopReceipt></QueueMessage></QueueMessagesList>");
  put_message_options o;
  o.visibility_timeout = std::chrono::seconds{5};
  o.ttl = message_ttl_infinite;
  o.encoding = message_encoding::raw;
  auto r = queues->put_message("q-1", "a<b", o);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->message_id, "m1");
  EXPECT_EQ(r->pop_receipt, "r1");
  const http_request req = fake->requests()[0];
  EXPECT_EQ(req.method, http_method::post);
  EXPECT_EQ(req.body, "<QueueMessage><MessageText>a&lt;b</MessageText></QueueMessage>");
  EXPECT_NE(req.url.find("visibilitytimeout=5"), std::string::npos) << req.url;
  EXPECT_NE(req.url.find("messagettl=-1"), std::string::npos) << req.url;
  EXPECT_EQ(header_of(req, "Content-Type"), "application/xml");
}

TEST_F(ClientFakeTest, UpdateWithoutNewReceiptIsBadResponse) {
  fake->respond(204, {});
  auto r = queues->update_message("q-1", "m1", "r1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_response);
  fake->respond(204, {{"x-ms-popreceipt", "r2"},
                      {"x-ms-time-next-visible", "Sat, 21 Nov 2026 11:58:31 GMT"}});
  auto ok = queues->update_message("q-1", "m1", "r1");
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_EQ(ok->pop_receipt, "r2");
  EXPECT_TRUE(ok->time_next_visible);
  EXPECT_TRUE(fake->requests()[1].body.empty()); // no text: visibility only
}

TEST_F(ClientFakeTest, MalformedMessageListIsBadResponse) {
  fake->respond(200, {}, "<QueueMessagesList><QueueMessage>");
  auto r = queues->get_messages("q-1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_response);
  fake->respond(200, {{"x-ms-approximate-messages-count", "many"}});
  EXPECT_EQ(queues->approximate_message_count("q-1").error().code, errc::bad_response);
}

} // namespace
} // namespace shoal::storage
