// Bounded input (issue 15 item 2): JSON nesting is measured before anything walks it, and the
// payload of '[' nested 200,000 deep that used to overflow the persistor's stack is refused by
// an ndjson persistor, carried as a string by persistor-v1, and quarantined by the ETL. Message
// bodies decoded by actors are unpacked within msgpack-cxx limits.

#include "actors/message.hpp"
#include "workers/blob_format.hpp"
#include "workers/etl/dataset.hpp"
#include "workers/json_limits.hpp"
#include "workers/persistor/format.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace shoal::workers {
namespace {

// The payload: '[' nested 200,000 deep, one per line (600 KB with the closing ones).
std::string deep_payload(std::size_t depth = 200'000) {
  std::string s;
  s.reserve(depth * 3);
  for (std::size_t i = 0; i < depth; ++i)
    s += "[\n";
  s += std::string(depth, ']');
  return s;
}

TEST(JsonDepth, MeasuresNestingOutsideStrings) {
  EXPECT_EQ(json_depth("42"), 0u);
  EXPECT_EQ(json_depth("{\"a\":[1,{\"b\":[]}]}"), 4u);
  EXPECT_EQ(json_depth("[\"[[[[\\\"[[\"]"), 1u); // brackets in strings, an escaped quote
  EXPECT_EQ(json_depth(std::string(128, '[') + std::string(128, ']')), 128u);
  EXPECT_EQ(json_depth(std::string(129, '[') + std::string(129, ']')), 129u);
  // Stops as soon as the limit is passed: the deep payload costs one partial scan.
  EXPECT_EQ(json_depth(deep_payload()), max_json_depth + 1);
}

TEST(JsonDepth, CheckRefusesOnlyWhatIsDeeperThanTheLimit) {
  EXPECT_TRUE(check_json_depth(std::string(128, '[') + std::string(128, ']')));
  // Many brackets side by side are not deep (the count prefilter must not decide alone).
  std::string wide;
  for (int i = 0; i < 1000; ++i)
    wide += "[{}],";
  EXPECT_TRUE(check_json_depth("[" + wide + "1]"));
  auto deep = check_json_depth(deep_payload(), "payload");
  ASSERT_FALSE(deep);
  EXPECT_EQ(deep.error().code, errc::limit_exceeded);
  EXPECT_NE(deep.error().message.find("payload nests deeper than 128 levels"), std::string::npos)
      << deep.error().message;
}

persistor::record record_with(std::string payload) {
  persistor::record r;
  r.message_id = "00112233445566778899aabbccddeeff";
  r.producer = "test@p@h";
  r.dest = "deep";
  r.payload = std::move(payload);
  r.event_time = r.ingest_time = 978'690'600'000;
  return r;
}

TEST(PersistorBounds, NdjsonRefusesTheDeepPayloadWithAReasonV1CarriesIt) {
  const auto r = record_with(deep_payload());
  auto nd = persistor::check_payload(r, persistor::record_format::ndjson);
  ASSERT_FALSE(nd);
  EXPECT_EQ(nd.error().code, errc::invalid_argument);
  EXPECT_NE(nd.error().message.find("nests deeper than 128"), std::string::npos) << nd.error().message;
  EXPECT_TRUE(persistor::check_payload(r, persistor::record_format::persistor_v1));
  // persistor-v1 stores it as a string: strict JSON out, the payload back intact.
  std::string out;
  persistor::append_record(out, persistor::record_format::persistor_v1, r);
  auto j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["DATA"].get<std::string>(), r.payload);
}

TEST(PersistorBounds, FormattingADeepMultiLinePayloadNeverRecurses) {
  // check_payload keeps it out of ndjson batches; the formatter itself must still survive it
  // (the SIGSEGV was nlohmann's recursive dump of exactly this).
  const auto r = record_with(deep_payload());
  std::string out;
  persistor::append_record(out, persistor::record_format::ndjson, r);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(out.find('\n'), out.size() - 1) << "one line";
  EXPECT_TRUE(nlohmann::json::accept(out)); // iterative: safe at any depth
  // The event-time path of a deep payload ends in an error, not a crash.
  EXPECT_FALSE(persistor::event_time_of(r.payload, "ts"));
}

TEST(EtlBounds, ADeepNdjsonRecordIsQuarantinedAndTheRestLoads) {
  std::string body = "{\"data\":{\"k\":1},\"meta\":{\"message_id\":\"a\"}}\n";
  body += "{\"data\":" + deep_payload(5000) + ",\"meta\":{\"message_id\":\"b\"}}\n";
  body += "{\"data\":{\"k\":3},\"meta\":{\"message_id\":\"c\"}}\n";
  auto blob = workers::extract_records(body);
  ASSERT_TRUE(blob) << blob.error().describe();
  ASSERT_EQ(blob->records.size(), 3u);
  EXPECT_TRUE(blob->records[0].problem.empty());
  EXPECT_NE(blob->records[1].problem.find("nests deeper than"), std::string::npos) << blob->records[1].problem;
  EXPECT_TRUE(blob->records[2].problem.empty());
  std::vector<etl::quarantine_row> q;
  auto valid = etl::validate_records(etl::generic_dataset(), *blob, q);
  EXPECT_EQ(valid.size(), 2u);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].step, "extract");
}

TEST(EtlBounds, ADatasetMappingRefusesADeepPayloadBeforeWalkingIt) {
  // persistor-v1 carries the deep payload as a string; a dataset parses it to validate and map
  // it with JSON pointers: validation quarantines it first.
  etl::dataset d;
  d.name = "deep";
  d.dest = "deep";
  d.generic = false;
  etl::field_spec f;
  f.column = "v";
  f.source = "/0/0/0";
  f.type = etl::field_type::json;
  d.fields.push_back(f);
  const std::string body = workers::write_blob(workers::blob_format::persistor_v1,
                                           {{"a", "2001-01-05T10:30:00Z", "[[[1]]]"},
                                            {"b", "2001-01-05T10:30:00Z", deep_payload()}});
  auto blob = workers::extract_records(body);
  ASSERT_TRUE(blob) << blob.error().describe();
  std::vector<etl::quarantine_row> q;
  auto valid = etl::validate_records(d, *blob, q);
  ASSERT_EQ(valid.size(), 1u);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].message_id, "b");
  EXPECT_EQ(q[0].step, "validate");
  EXPECT_NE(q[0].reason.find("nests deeper than 128"), std::string::npos) << q[0].reason;
  auto rows = etl::transform_records(d, "deep/2001/01/05/h-p-00000001.json", valid, q);
  ASSERT_EQ(rows.size(), 1u);
}

// -- msgpack bodies -------------------------------------------------------------------------------

struct small_msg {
  std::vector<std::uint32_t> shards;
  MSGPACK_DEFINE(shards);
};

TEST(MsgpackBodyLimits, ACountLargerThanTheBodyIsRefusedWithoutAllocatingForIt) {
  msgpack::zone zone;
  // [array32 of 0xffffffff elements] in 5 bytes: unbounded, msgpack-cxx would ask for ~100 GB.
  const std::vector<std::uint8_t> bomb{0x91, 0xdd, 0xff, 0xff, 0xff, 0xff};
  const auto t0 = std::chrono::steady_clock::now();
  auto m = actors::decode_body<small_msg>(bomb, zone);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, actors::errc::decode);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)); // not a timing target: a hang guard
  // A map bomb too.
  const std::vector<std::uint8_t> map_bomb{0x91, 0xdf, 0xff, 0xff, 0xff, 0xff};
  EXPECT_FALSE(actors::decode_body<small_msg>(map_bomb, zone));
}

TEST(MsgpackBodyLimits, NestingDeeperThanTheLimitIsRefusedAndNormalBodiesDecode) {
  msgpack::zone zone;
  std::vector<std::uint8_t> deep{0x91};
  for (std::size_t i = 0; i < actors::max_body_depth + 8; ++i)
    deep.push_back(0x91); // fixarray of one element, nested
  deep.push_back(0x01);
  EXPECT_FALSE(actors::decode_body<small_msg>(deep, zone));
  std::vector<std::uint8_t> ok;
  actors::encode_body(small_msg{{1, 2, 3}}, ok);
  auto m = actors::decode_body<small_msg>(ok, zone);
  ASSERT_TRUE(m) << m.error().message;
  EXPECT_EQ(m->shards, (std::vector<std::uint32_t>{1, 2, 3}));
}

} // namespace
} // namespace shoal::workers
