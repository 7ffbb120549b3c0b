// Unit tests of blob extraction: both formats, malformed records, parse errors with position.

#include "workers/blob_format.hpp"

#include "workers/persistor/format.hpp"

#include <gtest/gtest.h>

#include <optional>

namespace shoal::workers::etl {
namespace {

TEST(BlobFormatTest, ExtractsPersistorV1RecordsWithMetadata) {
  std::string body = write_blob(blob_format::persistor_v1,
                                {{"a", "2026-01-02T03:04:05Z", "{\"x\":1}"}, {"b", "2026-01-02T03:04:06Z", "plain text\nwith newline"}});
  auto r = extract_records(body);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->format, blob_format::persistor_v1);
  ASSERT_EQ(r->records.size(), 2u);
  EXPECT_EQ(r->records[0].message_id, "a");
  EXPECT_EQ(r->records[0].payload, "{\"x\":1}");
  EXPECT_EQ(r->records[0].event_time, "2026-01-02T03:04:05Z");
  EXPECT_EQ(r->records[1].payload, "plain text\nwith newline");
  EXPECT_EQ(r->records[1].line, 3u); // blank line between records
  EXPECT_EQ(r->records[1].index, 1u);
  EXPECT_TRUE(r->records[1].problem.empty());
}

TEST(BlobFormatTest, ReadsTheRecordsThePersistorWritesWithTheirProperties) {
  // What the persistor writes always holds METADATA.properties (an object of strings); the
  // records read the same whether the fast reader or the DOM decides (a non-string property
  // value takes the DOM).
  persistor::record r;
  r.message_id = "00ff";
  r.producer = "send@1@h";
  r.dest = "flights";
  r.payload = R"({"date":"2001/01/01 00:47","note":"a \"quoted\" word"})";
  r.event_time = 978'310'020'000;
  r.ingest_time = 978'310'021'000;
  r.properties = {{"ct", "application/json"}, {"k\"ey", "v\\al"}};
  std::string body;
  persistor::append_record(body, persistor::record_format::persistor_v1, r);
  r.message_id = "0100";
  r.properties.clear();
  persistor::append_record(body, persistor::record_format::persistor_v1, r);
  body += R"({"DATA":"x","METADATA":{"message_id":"0101","properties":{"n":1}}})" "\n\n";
  auto ex = extract_records(body);
  ASSERT_TRUE(ex) << ex.error().message;
  EXPECT_EQ(ex->format, blob_format::persistor_v1);
  ASSERT_EQ(ex->records.size(), 3u);
  for (const auto& rec : ex->records) EXPECT_TRUE(rec.problem.empty()) << rec.problem;
  EXPECT_EQ(ex->records[0].message_id, "00ff");
  EXPECT_EQ(ex->records[0].producer, "send@1@h");
  EXPECT_EQ(ex->records[0].payload, r.payload);
  EXPECT_EQ(ex->records[0].event_time, "2001-01-01T00:47:00.000Z");
  EXPECT_EQ(ex->records[0].ingest_time, "2001-01-01T00:47:01.000Z");
  EXPECT_EQ(ex->records[1].message_id, "0100");
  EXPECT_EQ(ex->records[2].message_id, "0101");
  EXPECT_EQ(ex->records[2].payload, "x");
}

TEST(BlobFormatTest, ExtractsNdjsonRecordsAndSerializesTheData) {
  std::string body = write_blob(blob_format::ndjson, {{"a", "t", "{\"x\":[1,2]}"}, {"b", "t", "{\"s\":\"}{\"}"}});
  auto r = extract_records(body);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->format, blob_format::ndjson);
  ASSERT_EQ(r->records.size(), 2u);
  EXPECT_EQ(r->records[0].payload, "{\"x\":[1,2]}");
  EXPECT_EQ(r->records[1].payload, "{\"s\":\"}{\"}");
  EXPECT_EQ(r->records[1].line, 2u);
}

TEST(BlobFormatTest, MarksRecordsWithoutDataOrMessageIdAsProblems) {
  std::string body = "{\"DATA\":\"x\",\"METADATA\":{\"message_id\":\"1\"}}\n\n"
                     "{\"METADATA\":{\"message_id\":\"2\"}}\n\n"
                     "{\"DATA\":\"y\",\"METADATA\":{}}\n\n"
                     "{\"DATA\":5,\"METADATA\":{\"message_id\":\"4\"}}\n";
  auto r = extract_records(body);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->records.size(), 4u);
  EXPECT_TRUE(r->records[0].problem.empty());
  EXPECT_NE(r->records[1].problem.find("DATA"), std::string::npos);
  EXPECT_NE(r->records[2].problem.find("message_id"), std::string::npos);
  EXPECT_NE(r->records[3].problem.find("string"), std::string::npos);
}

// Found by the etl_blob fuzz target: 1e999 is valid JSON that nlohmann cannot hold (out_of_range
// 406 "number overflow"), and the reader caught only parse errors, so the exception left it.
// Such a record is quarantined with the reason; the rest of the blob loads.
TEST(BlobFormatTest, ANumberBeyondADoubleQuarantinesItsRecordNotTheBlob) {
  const std::string body = "{\"data\":{\"n\":1e999},\"meta\":{\"message_id\":\"big\"}}\n"
                           "{\"data\":{\"x\":1},\"meta\":{\"message_id\":\"ok\"}}\n";
  std::optional<result<extracted_blob>> r;
  ASSERT_NO_THROW(r.emplace(extract_records(body)));
  ASSERT_TRUE(*r) << (*r).error().message;
  ASSERT_EQ((*r)->records.size(), 2u);
  EXPECT_NE((*r)->records[0].problem.find("number overflow"), std::string::npos) << (*r)->records[0].problem;
  EXPECT_TRUE((*r)->records[1].problem.empty()) << (*r)->records[1].problem;
  EXPECT_EQ((*r)->records[1].message_id, "ok");
  EXPECT_EQ((*r)->records[1].line, 2u);
}

TEST(BlobFormatTest, UnparsableBlobFailsWithLineColumnAndByte) {
  std::string body = "{\"data\":{},\"meta\":{\"message_id\":\"1\"}}\n{\"data\":{\"a\":tru},\"meta\":{}}\n";
  auto r = extract_records(body);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::parse);
  EXPECT_NE(r.error().message.find("line 2"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("byte"), std::string::npos) << r.error().message;

  auto unterminated = extract_records("{\"data\":{}}\n{\"data\":\"abc");
  ASSERT_FALSE(unterminated);
  EXPECT_NE(unterminated.error().message.find("line 2, column 1"), std::string::npos) << unterminated.error().message;

  auto junk = extract_records("{\"data\":1,\"meta\":{\"message_id\":\"x\"}} garbage");
  ASSERT_FALSE(junk);
  EXPECT_NE(junk.error().message.find("column 38 (byte 37)"), std::string::npos) << junk.error().message;
}

TEST(BlobFormatTest, EmptyBlobHasNoRecordsAndDestIsTheFirstSegment) {
  auto r = extract_records("  \n\n");
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->records.empty());
  EXPECT_EQ(dest_of("flights/2026/11/21/13/h-p-00000001.json"), "flights");
  EXPECT_EQ(dest_of("flat.json"), "flat.json");
}

} // namespace
} // namespace shoal::workers::etl
