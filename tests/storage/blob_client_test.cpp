// blob_client (and, where one test covers both, queue_client) over a scripted transport: the
// requests they build, how they read answers, and the retry-after-landing decisions —
// deterministic, no network.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/encoding.hpp"
#include "storage/queue_client.hpp"

#include "tests/support/fake_storage.hpp"
#include "tests/support/fake_transport.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>

namespace shoal::storage {
namespace {

using tests::fake_transport;

using tests::header_of;

// The shared fixture (tests/support/fake_storage.hpp), under this suite's name.
class BlobClientTest : public tests::fake_storage_test {};

TEST_F(BlobClientTest, PutBlobSendsTypeMd5MetadataAndCreateOnly) {
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

TEST_F(BlobClientTest, InvalidInputSendsNothing) {
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

TEST_F(BlobClientTest, AppendSendsPositionAndReadsOffsetAndCount) {
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

TEST_F(BlobClientTest, AppendWithoutOffsetHeadersIsBadResponse) {
  fake->respond(201, {{"etag", "\"0x2\""}});
  auto r = blobs->append_block("c1x", "log", "abc");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_response);
}

TEST_F(BlobClientTest, RetriedAppendMeeting412WithOurBytesIsRecovered) {
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

TEST_F(BlobClientTest, RetriedAppendMeeting412WithOtherBytesStaysPreconditionFailed) {
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

TEST_F(BlobClientTest, FirstAttempt412IsNeverTakenForOurOwn) {
  fake->respond(412, {{"x-ms-error-code", "AppendPositionConditionNotMet"}});
  append_block_options o;
  o.expected_offset = 10;
  auto r = blobs->append_block("c1x", "log", "abc", o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed);
  EXPECT_EQ(fake->request_count(), 1u); // no verification read
  EXPECT_NE(r.error().message.find("expected 10"), std::string::npos) << r.error().message;
}

TEST_F(BlobClientTest, RetriedIfMatchPutThatLandedIsRecoveredByMd5) {
  fake->respond(500, {{"x-ms-error-code", "InternalError"}})
      .respond(412, {{"x-ms-error-code", "ConditionNotMet"}})
      .respond(200, {{"etag", "\"0x9\""}, {"content-md5", base64_encode(md5("new"))},
                     {"content-length", "3"}});
  put_blob_options o;
  o.if_match = "\"0x8\"";
  auto r = blobs->put_blob("c1x", "a", "new", o);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_TRUE(r->recovered);
  EXPECT_EQ(r->etag, "\"0x9\"");
  EXPECT_EQ(fake->requests()[2].method, http_method::head);

  // Same story, but the stored bytes are someone else's: the 412 stands.
  fake->respond(500, {{"x-ms-error-code", "InternalError"}})
      .respond(412, {{"x-ms-error-code", "ConditionNotMet"}})
      .respond(200, {{"etag", "\"0xA\""}, {"content-md5", base64_encode(md5("other"))},
                     {"content-length", "5"}});
  auto lost = blobs->put_blob("c1x", "a", "new", o);
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().code, errc::precondition_failed);
}

TEST_F(BlobClientTest, RetriedDeletesThatMeet404AreSuccesses) {
  fake->respond(503, {{"x-ms-error-code", "ServerBusy"}})
      .respond(404, {{"x-ms-error-code", "BlobNotFound"}})
      .respond(404, {{"x-ms-error-code", "BlobNotFound"}})
      .respond(503, {{"x-ms-error-code", "ServerBusy"}})
      .respond(404, {{"x-ms-error-code", "MessageNotFound"}});
  EXPECT_TRUE(blobs->delete_blob("c1x", "a"));           // retried: the first one landed
  auto first = blobs->delete_blob("c1x", "a");           // first attempt: really missing
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code, errc::not_found);
  EXPECT_TRUE(queues->delete_message("q-1", "m1", "r1")); // retried
}

TEST_F(BlobClientTest, ListBlobsQueryAndMalformedBody) {
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

TEST_F(BlobClientTest, WholeBlobReadChecksMd5) {
  fake->respond(200, {{"content-md5", base64_encode(md5("right"))}, {"content-length", "5"}},
                "wrong");
  auto r = blobs->get_blob("c1x", "a");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_response);
}

} // namespace
} // namespace shoal::storage
