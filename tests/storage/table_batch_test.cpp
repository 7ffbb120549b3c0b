// The entity group transaction wire format: the multipart request we build and the responses
// Azurite 3.35.0 sent (captured verbatim, with CRLF line endings), including its failure part and
// its slightly malformed answer to a batch of more than 100 operations.

#include "storage/table_batch.hpp"

#include <gtest/gtest.h>

#include <string>

namespace shoal::storage {
namespace {

// Joins lines with CRLF, as on the wire.
std::string crlf(std::initializer_list<std::string_view> lines) {
  std::string out;
  for (auto l : lines) {
    out += l;
    out += "\r\n";
  }
  return out;
}

const std::string ok_type = "multipart/mixed; boundary=batchresponse_0e1d";
const std::string ok_body = crlf({
    "--batchresponse_0e1d",
    "Content-Type: multipart/mixed; boundary=changesetresponse_02e2",
    "",
    "--changesetresponse_02e2",
    "Content-Type: application/http",
    "Content-Transfer-Encoding: binary",
    "",
    "HTTP/1.1 204 No Content",
    "X-Content-Type-Options: nosniff",
    "Cache-Control: no-cache",
    "DataServiceVersion: 3.0;",
    "Location: http://127.0.0.1:10992/devstoreaccount1/probe1(PartitionKey='p',RowKey='a')",
    "DataServiceId: http://127.0.0.1:10992/devstoreaccount1/probe1(PartitionKey='p',RowKey='a')",
    "ETag: W/\"datetime'2026-11-21T12%3A23%3A19.6981936Z'\"",
    "",
    "",
    "--changesetresponse_02e2",
    "Content-Type: application/http",
    "Content-Transfer-Encoding: binary",
    "",
    "HTTP/1.1 204 No Content",
    "DataServiceVersion: 3.0;",
    "ETag: W/\"datetime'2026-11-21T12%3A23%3A19.6981944Z'\"",
    "",
    "",
    "--changesetresponse_02e2",
    "Content-Type: application/http",
    "Content-Transfer-Encoding: binary",
    "",
    "HTTP/1.1 204 No Content",
    "ETag: W/\"datetime'2026-11-21T12%3A23%3A19.6981951Z'\"",
    "",
    "",
    "--changesetresponse_02e2--",
    "--batchresponse_0e1d--",
});

const std::string fail_type = "multipart/mixed; boundary=batchresponse_a797";
const std::string fail_body = crlf({
    "--batchresponse_a797",
    "Content-Type: multipart/mixed; boundary=changesetresponse_1e83",
    "",
    "--changesetresponse_1e83",
    "Content-Type: application/http",
    "Content-Transfer-Encoding: binary",
    "",
    "HTTP/1.1 409 Conflict",
    "Content-ID: 2",
    "DataServiceVersion: 3.0;",
    "Content-Type: application/json;odata=minimalmetadata;charset=utf-8",
    "",
    R"({"odata.error":{"code":"EntityAlreadyExists","message":{"lang":"en-US","value":"1:The specified entity already exists.\nRequestId:635257e1\nTime:2026-11-21T12:23:19.710Z"}}})",
    "--changesetresponse_1e83--",
    "--batchresponse_a797--",
});

// More than 100 operations: Azurite repeats the changeset boundary (without "--") before the
// status line.
const std::string big_type = "multipart/mixed; boundary=batchresponse_dccb";
const std::string big_body = crlf({
    "--batchresponse_dccb",
    "Content-Type: multipart/mixed; boundary=changesetresponse_8b1e",
    "",
    "--changesetresponse_8b1e",
    "Content-Type: application/http",
    "Content-Transfer-Encoding: binary",
    "",
    "changesetresponse_8b1e",
    "HTTP/1.1 400 Bad Request",
    "X-Content-Type-Options: nosniff",
    "DataServiceVersion: 3.0;",
    "Content-Type: application/json;odata=minimalmetadata;charset=utf-8",
    "",
    R"({"odata.error":{"code":"InvalidInput","message":{"lang":"en-US","value":"0:The batch request operation exceeds the maximum 100 changes per change set.\nRequestId:3f08c536\nTime:2026-11-21T12:23:19.7180000Z"}}})",
    "--changesetresponse_8b1e--",
    "--batchresponse_dccb--",
});

TEST(TableBatchTest, BuildsOneChangesetWithAbsoluteUrlsAndIfMatch) {
  std::vector<table_operation> ops;
  table_entity e;
  e.partition_key = "p";
  e.row_key = "a";
  e.set("v", 1);
  ops.push_back({table_operation_kind::insert, e, "*"});
  e.row_key = "it's";
  ops.push_back({table_operation_kind::merge, e, "W/\"datetime'x'\""});
  ops.push_back({table_operation_kind::delete_entity, e, "*"});
  ops.push_back({table_operation_kind::insert_or_replace, e, "ignored"});
  auto b = detail::build_batch_body("http://127.0.0.1:10002/devstoreaccount1", "tbl", ops, "B", "C");
  EXPECT_EQ(b.content_type, "multipart/mixed; boundary=batch_B");
  const std::string expected = crlf({
      "--batch_B",
      "Content-Type: multipart/mixed; boundary=changeset_C",
      "",
      "--changeset_C",
      "Content-Type: application/http",
      "Content-Transfer-Encoding: binary",
      "",
      "POST http://127.0.0.1:10002/devstoreaccount1/tbl HTTP/1.1",
      "Content-Type: application/json",
      "Accept: application/json;odata=minimalmetadata",
      "Prefer: return-no-content",
      "DataServiceVersion: 3.0;",
      "",
      R"({"PartitionKey":"p","RowKey":"a","v":1})",
      "--changeset_C",
      "Content-Type: application/http",
      "Content-Transfer-Encoding: binary",
      "",
      "MERGE http://127.0.0.1:10002/devstoreaccount1/tbl(PartitionKey='p',RowKey='it%27%27s') HTTP/1.1",
      "Content-Type: application/json",
      "Accept: application/json;odata=minimalmetadata",
      "Prefer: return-no-content",
      "DataServiceVersion: 3.0;",
      "If-Match: W/\"datetime'x'\"",
      "",
      R"({"PartitionKey":"p","RowKey":"it's","v":1})",
      "--changeset_C",
      "Content-Type: application/http",
      "Content-Transfer-Encoding: binary",
      "",
      "DELETE http://127.0.0.1:10002/devstoreaccount1/tbl(PartitionKey='p',RowKey='it%27%27s') HTTP/1.1",
      "Accept: application/json;odata=minimalmetadata",
      "Prefer: return-no-content",
      "DataServiceVersion: 3.0;",
      "If-Match: *",
      "",
      "",
      "--changeset_C",
      "Content-Type: application/http",
      "Content-Transfer-Encoding: binary",
      "",
      "PUT http://127.0.0.1:10002/devstoreaccount1/tbl(PartitionKey='p',RowKey='it%27%27s') HTTP/1.1",
      "Content-Type: application/json",
      "Accept: application/json;odata=minimalmetadata",
      "Prefer: return-no-content",
      "DataServiceVersion: 3.0;",
      "",
      R"({"PartitionKey":"p","RowKey":"it's","v":1})",
      "--changeset_C--",
      "--batch_B--",
  });
  EXPECT_EQ(b.body, expected);
}

TEST(TableBatchTest, EntityPathDoublesQuotesThenPercentEncodes) {
  EXPECT_EQ(detail::entity_path("t", "p", "r"), "/t(PartitionKey='p',RowKey='r')");
  EXPECT_EQ(detail::entity_path("t", "O'B r", "\xC3\xA9%"), "/t(PartitionKey='O%27%27B%20r',RowKey='%C3%A9%25')");
  EXPECT_EQ(detail::entity_path("t", "", ""), "/t(PartitionKey='',RowKey='')");
}

TEST(TableBatchTest, ParsesASuccessfulResponseWithOneEtagPerOperation) {
  auto parts = detail::parse_batch_response(ok_type, ok_body);
  ASSERT_TRUE(parts) << parts.error().describe();
  ASSERT_EQ(parts->size(), 3u);
  EXPECT_EQ((*parts)[0].status, 204);
  EXPECT_EQ((*parts)[0].header("etag").value_or(""), "W/\"datetime'2026-11-21T12%3A23%3A19.6981936Z'\"");
  EXPECT_EQ((*parts)[2].header("etag").value_or(""), "W/\"datetime'2026-11-21T12%3A23%3A19.6981951Z'\"");
  EXPECT_EQ((*parts)[0].header("content-type").value_or(""), "application/http");
}

TEST(TableBatchTest, ParsesTheFailurePartAndItsIndex) {
  auto parts = detail::parse_batch_response(fail_type, fail_body);
  ASSERT_TRUE(parts) << parts.error().describe();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].status, 409);
  EXPECT_EQ(detail::failed_operation_index((*parts)[0]), 1u);
  auto [code, message] = detail::parse_odata_error((*parts)[0].body);
  EXPECT_EQ(code, "EntityAlreadyExists");
  EXPECT_TRUE(message.starts_with("1:The specified entity already exists.")) << message;
}

TEST(TableBatchTest, ParsesAzuritesMalformedOver100Answer) {
  auto parts = detail::parse_batch_response(big_type, big_body);
  ASSERT_TRUE(parts) << parts.error().describe();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].status, 400);
  EXPECT_EQ(detail::failed_operation_index((*parts)[0]), 0u);
  EXPECT_EQ(detail::parse_odata_error((*parts)[0].body).first, "InvalidInput");
}

TEST(TableBatchTest, FallsBackToContentIdAndToleratesLfAndQuotedBoundaries) {
  std::string body = "--b1\nContent-Type: multipart/mixed; boundary=c1\n\n--c1\nContent-Type: application/http\n"
                     "Content-ID: 3\n\nHTTP/1.1 412 Precondition Failed\nContent-Type: application/json\n\n"
                     "{\"odata.error\":{\"code\":\"UpdateConditionNotSatisfied\",\"message\":\"no prefix\"}}\n--c1--\n";
  auto parts = detail::parse_batch_response("multipart/mixed; boundary=\"b1\"", body); // no closing --b1--
  ASSERT_TRUE(parts) << parts.error().describe();
  ASSERT_EQ(parts->size(), 1u);
  EXPECT_EQ((*parts)[0].status, 412);
  EXPECT_EQ(detail::failed_operation_index((*parts)[0]), 2u);
}

TEST(TableBatchTest, RejectsBodiesWithoutParts) {
  EXPECT_FALSE(detail::parse_batch_response("application/json", "{}"));
  auto r = detail::parse_batch_response("multipart/mixed; boundary=x", "--x\r\n\r\nnothing\r\n--x--\r\n");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_response);
  detail::batch_part none;
  EXPECT_EQ(detail::failed_operation_index(none), std::nullopt);
}

} // namespace
} // namespace shoal::storage
