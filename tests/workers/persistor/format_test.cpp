// Unit tests of the persistor's pure parts: event-time parsing, partitions, blob names, the two
// record formats (read back by the ETL extractor and a strict JSON parser), and the batcher's
// three seal rules on a manual clock.

#include "workers/config.hpp"
#include "workers/etl/blob_format.hpp"
#include "workers/persistor/batcher.hpp"
#include "workers/persistor/format.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <string>
#include <vector>

namespace shoal::workers::persistor {
namespace {

constexpr unix_ms t_2001_01_05_1030 = 978'690'600'000; // 2001-01-05T10:30:00Z

TEST(PersistorEventTime, ParsesEveryAcceptedForm) {
  EXPECT_EQ(*parse_event_time("2001-01-05T10:30:00Z"), t_2001_01_05_1030);
  EXPECT_EQ(*parse_event_time("2001-01-05T10:30:00.250Z"), t_2001_01_05_1030 + 250);
  EXPECT_EQ(*parse_event_time("2001-01-05T12:30:00+02:00"), t_2001_01_05_1030);
  EXPECT_EQ(*parse_event_time("2001-01-05T05:30:00-0500"), t_2001_01_05_1030);
  EXPECT_EQ(*parse_event_time("2001-01-05 10:30"), t_2001_01_05_1030);
  EXPECT_EQ(*parse_event_time("2001/01/05 10:30"), t_2001_01_05_1030);
  EXPECT_EQ(*parse_event_time("2001/01/05 10:30:00"), t_2001_01_05_1030);
  EXPECT_EQ(*parse_event_time("2001-01-05"), t_2001_01_05_1030 - (10 * 60 + 30) * 60'000);
  EXPECT_EQ(*parse_event_time("978690600"), t_2001_01_05_1030);
  EXPECT_EQ(*parse_event_time("978690600000"), t_2001_01_05_1030);
  EXPECT_EQ(*parse_event_time(" 978690600.5 "), t_2001_01_05_1030 + 500);
}

TEST(PersistorEventTime, RejectsGarbageWithAClearError) {
  for (const char* bad : {"", "yesterday", "2001-13-05T10:30:00Z", "2001-02-30", "2001-01-05T25:00",
                          "2001-01-05T10:30:00Zjunk", "2001/01-05 10:30", "12ab"}) {
    auto r = parse_event_time(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::parse) << bad;
  }
}

TEST(PersistorEventTime, ReadsAFieldOfThePayload) {
  EXPECT_EQ(*event_time_of(R"({"when":"2001/01/05 10:30","x":1})", "when"), t_2001_01_05_1030);
  EXPECT_EQ(*event_time_of(R"({"a":{"ts":978690600}})", "a.ts"), t_2001_01_05_1030);
  EXPECT_EQ(*event_time_of(R"({"ts":978690600000})", "ts"), t_2001_01_05_1030);
  EXPECT_FALSE(event_time_of(R"({"x":1})", "ts"));
  EXPECT_FALSE(event_time_of("not json", "ts"));
  EXPECT_FALSE(event_time_of(R"({"ts":true})", "ts"));
}

TEST(PersistorLayout, PartitionAndBlobName) {
  EXPECT_EQ(partition_of(t_2001_01_05_1030), "2001/01/05/10");
  EXPECT_EQ(format_time(t_2001_01_05_1030 + 7), "2001-01-05T10:30:00.007Z");
  EXPECT_EQ(blob_name("flights", "2001/01/05/10", "h1", "p1", 7),
            "flights/2001/01/05/10/h1-p1-00000007.json");
  EXPECT_TRUE(validate_dest("flights-2.x_y"));
  EXPECT_FALSE(validate_dest(""));
  EXPECT_FALSE(validate_dest(".."));
  EXPECT_FALSE(validate_dest("a/b"));
  EXPECT_FALSE(validate_dest(std::string(129, 'a')));
}

record sample(std::string id, std::string payload, unix_ms t = t_2001_01_05_1030) {
  record r;
  r.message_id = std::move(id);
  r.producer = "send@1@h";
  r.dest = "flights";
  r.payload = std::move(payload);
  r.event_time = t;
  r.ingest_time = t + 1000;
  r.properties = {{"source", "test"}};
  return r;
}

TEST(PersistorFormat, PersistorV1ParsesStrictlyAndThroughTheEtlExtractor) {
  std::string body;
  append_record(body, record_format::persistor_v1, sample("a1", R"({"x":"line1\nline2"})"));
  append_record(body, record_format::persistor_v1, sample("a2", "plain text with \"quotes\""));
  append_record(body, record_format::persistor_v1, sample("a3", std::string("\xff\xfe bin", 6)));
  // Records are separated by a blank line; each one is strict JSON.
  std::size_t pos = 0, n = 0;
  while (pos < body.size()) {
    const std::size_t end = body.find("\n\n", pos);
    ASSERT_NE(end, std::string::npos);
    auto j = nlohmann::json::parse(body.substr(pos, end - pos)); // throws on bad JSON
    EXPECT_TRUE(j.contains("DATA") && j["DATA"].is_string());
    EXPECT_EQ(j["METADATA"]["dest"], "flights");
    pos = end + 2;
    ++n;
  }
  EXPECT_EQ(n, 3u);
  auto ex = etl::extract_records(body);
  ASSERT_TRUE(ex) << ex.error().describe();
  ASSERT_EQ(ex->records.size(), 3u);
  EXPECT_EQ(ex->format, etl::blob_format::persistor_v1);
  EXPECT_EQ(ex->records[0].message_id, "a1");
  EXPECT_EQ(ex->records[0].payload, R"({"x":"line1\nline2"})");
  EXPECT_EQ(ex->records[0].event_time, "2001-01-05T10:30:00.000Z");
  EXPECT_EQ(ex->records[0].ingest_time, "2001-01-05T10:30:01.000Z");
  EXPECT_EQ(ex->records[0].producer, "send@1@h");
  EXPECT_TRUE(ex->records[2].problem.empty());
  auto j3 = nlohmann::json::parse(std::string_view(ex->records[2].raw));
  EXPECT_EQ(j3["METADATA"]["properties"]["encoding"], "base64");
  EXPECT_EQ(j3["DATA"], base64(std::string("\xff\xfe bin", 6)));
}

TEST(PersistorFormat, NdjsonEmbedsJsonPayloadsAndQuotesOthers) {
  std::string body;
  append_record(body, record_format::ndjson, sample("b1", R"({"x":1})"));
  append_record(body, record_format::ndjson, sample("b2", "not json"));
  auto ex = etl::extract_records(body);
  ASSERT_TRUE(ex) << ex.error().describe();
  ASSERT_EQ(ex->records.size(), 2u);
  EXPECT_EQ(ex->format, etl::blob_format::ndjson);
  EXPECT_EQ(nlohmann::json::parse(ex->records[0].payload), nlohmann::json::parse(R"({"x":1})"));
  EXPECT_EQ(ex->records[1].message_id, "b2");
  std::size_t lines = 0;
  for (char c : body)
    lines += c == '\n';
  EXPECT_EQ(lines, 2u);
}

TEST(PersistorFormat, EscapesEveryControlCharacterAndKeepsNdjsonOnOneLine) {
  std::string payload = "{\"a\":\n  \"x\\ty\"\n}"; // JSON spread over lines
  std::string ctl;
  for (int c = 0; c < 0x20; ++c)
    ctl += static_cast<char>(c);
  ctl += "\"\\/\u00e9"; // quote, backslash, slash, a 2-byte UTF-8 character
  for (auto fmt : {record_format::ndjson, record_format::persistor_v1}) {
    std::string body;
    auto r1 = sample("c1", payload);
    r1.properties["weird"] = ctl;
    r1.properties[std::string("\xff", 1)] = "bad key";
    append_record(body, fmt, r1);
    append_record(body, fmt, sample("c2", ctl));
    if (fmt == record_format::ndjson) {
      std::size_t lines = 0;
      for (char c : body)
        lines += c == '\n';
      EXPECT_EQ(lines, 2u) << body;
    }
    auto ex = etl::extract_records(body);
    ASSERT_TRUE(ex) << ex.error().describe() << "\n" << body;
    ASSERT_EQ(ex->records.size(), 2u);
    auto j = nlohmann::json::parse(std::string_view(ex->records[0].raw).substr(
        0, ex->records[0].raw.find_last_not_of('\n') + 1));
    const auto& meta = fmt == record_format::ndjson ? j["meta"] : j["METADATA"];
    EXPECT_EQ(meta["properties"]["weird"], ctl);
    EXPECT_EQ(meta["properties"][base64(std::string("\xff", 1))], "bad key");
    if (fmt == record_format::ndjson) {
      EXPECT_EQ(nlohmann::json::parse(ex->records[0].payload), nlohmann::json::parse(payload));
      EXPECT_EQ(ex->records[1].payload, nlohmann::json(ctl).dump()); // not JSON: a JSON string
    } else {
      EXPECT_EQ(ex->records[0].payload, payload);
      EXPECT_EQ(ex->records[1].payload, ctl);
    }
  }
}

TEST(PersistorFormat, MetadataDeclaresCountAndTimes) {
  auto m = blob_metadata({.record_count = 3, .first_event_time = 0, .last_event_time = 1000},
                         record_format::ndjson);
  EXPECT_EQ(m["count"], "3");
  EXPECT_EQ(m["first_event_time"], "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(m["last_event_time"], "1970-01-01T00:00:01.000Z");
  EXPECT_EQ(m["format"], "ndjson");
  EXPECT_EQ(base64("ab"), "YWI=");
  EXPECT_EQ(base64("abc"), "YWJj");
  EXPECT_EQ(base64("a"), "YQ==");
}

TEST(PersistorBatcher, SealsOnRecordCount) {
  batcher b({.max_records = 3, .max_bytes = 1 << 20, .max_delay_ms = 1000}, record_format::ndjson);
  EXPECT_TRUE(b.add(sample("1", "{}"), 1, 0).empty());
  EXPECT_TRUE(b.add(sample("2", "{}"), 2, 1).empty());
  auto s = b.add(sample("3", "{}"), 3, 2);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].tokens, (std::vector<ack_token>{1, 2, 3}));
  EXPECT_EQ(s[0].summary.record_count, 3u);
  EXPECT_EQ(s[0].partition, "2001/01/05/10");
  EXPECT_EQ(b.open_records(), 0u);
  EXPECT_EQ(b.open_bytes(), 0u);
}

TEST(PersistorBatcher, SealsBeforeExceedingBytesAndKeepsOversizedRecordsAlone) {
  std::string one;
  append_record(one, record_format::ndjson, sample("1", R"({"p":"xxxxxxxxxx"})"));
  batcher b({.max_records = 100, .max_bytes = one.size() * 2 + 1, .max_delay_ms = 1000},
            record_format::ndjson);
  EXPECT_TRUE(b.add(sample("1", R"({"p":"xxxxxxxxxx"})"), 1, 0).empty());
  EXPECT_TRUE(b.add(sample("2", R"({"p":"xxxxxxxxxx"})"), 2, 0).empty());
  auto s = b.add(sample("3", R"({"p":"xxxxxxxxxx"})"), 3, 0); // would pass max_bytes
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].tokens.size(), 2u);
  EXPECT_LE(s[0].body.size(), one.size() * 2 + 1);
  auto big = b.add(sample("4", "{\"p\":\"" + std::string(500, 'y') + "\"}"), 4, 0);
  ASSERT_EQ(big.size(), 2u); // the open batch first, then the oversized record alone
  EXPECT_EQ(big[0].tokens, std::vector<ack_token>{3});
  EXPECT_EQ(big[1].tokens, std::vector<ack_token>{4});
}

TEST(PersistorBatcher, SealsOnDelayPerDestAndPartition) {
  batcher b({.max_records = 100, .max_bytes = 1 << 20, .max_delay_ms = 1000}, record_format::persistor_v1);
  b.add(sample("1", "a"), 1, 0);
  b.add(sample("2", "b", t_2001_01_05_1030 + 3'600'000), 2, 500); // next hour: its own batch
  auto r3 = sample("3", "c");
  r3.dest = "other";
  b.add(r3, 3, 600);
  EXPECT_EQ(b.next_due(), 1000);
  EXPECT_TRUE(b.due(999).empty());
  auto d = b.due(1000);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].tokens, std::vector<ack_token>{1});
  EXPECT_EQ(b.next_due(), 1500);
  auto rest = b.flush_all();
  EXPECT_EQ(rest.size(), 2u);
  EXPECT_FALSE(b.next_due());
}

TEST(PersistorConfig, SectionBindsAndValidates) {
  ::setenv("SHOAL_PERSISTOR_BATCH_MAX_RECORDS", "7", 1);
  ::setenv("SHOAL_PERSISTOR_MODE", "pull", 1);
  auto c = load_config({});
  ::unsetenv("SHOAL_PERSISTOR_BATCH_MAX_RECORDS");
  ::unsetenv("SHOAL_PERSISTOR_MODE");
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->persistor.batch_max_records, 7u);
  EXPECT_EQ(c->persistor.mode, "pull");
  EXPECT_EQ(c->persistor.batch_max_bytes, 4u << 20);
  EXPECT_EQ(c->persistor.batch_max_delay_ms, 1000u);
  auto bad = *c;
  bad.persistor.format = "xml";
  EXPECT_FALSE(validate(bad));
  bad = *c;
  bad.persistor.mode = "both";
  EXPECT_FALSE(validate(bad));
  bad = *c;
  bad.persistor.visibility_timeout_ms = 500;
  EXPECT_FALSE(validate(bad));
  bad = *c;
  bad.persistor.batch_max_delay_ms = 600'000; // longer than the visibility timeout: pull only
  EXPECT_FALSE(validate(bad));
  bad.persistor.mode = "push";
  EXPECT_TRUE(validate(bad));
  bad = *c;
  bad.persistor.name = "a/b";
  EXPECT_FALSE(validate(bad));
}

TEST(PersistorJsonAccept, AgreesWithNlohmannOnValidAndInvalidTexts) {
  const std::vector<std::string> texts{
      R"({"a":1})", R"([1,2,3])", R"("s")", "0", "-0.5e+10", "1E5", "true", "false", "null",
      R"({"a":{"b":[{},[],"x\"y\\z\/\b\f\n\r\t\u00e9\uD83D\uDE00"]},"c":-1.25})", " {\"a\" : [ 1 , 2 ] } ",
      "{\n \"a\": 1\r\n}", "[[[[[]]]]]", R"({"":""})", "\"\xc3\xa9\"",
      // invalid
      "", " ", "{", "}", "[1,]", R"({"a":1,})", R"({"a" 1})", R"({a:1})", "01", "1.", ".5", "-",
      "1e", "1e+", "+1", "tru", "nul", "True", R"("abc)", "\"a\tb\"", R"("\x")", R"("\u12")",
      R"("\uDE00")", R"("\uD83Dx")", R"("\uD83D\u0041")", "[1] [2]", "1 2", R"({"a":1}})", "[}",
      "{]", R"({"a":1 "b":2})", "\xef\xbb\xbf{}", "NaN", "[1,,2]", R"({,"a":1})"};
  for (const auto& t : texts) {
    bool multiline = false;
    const bool want = t.starts_with("\xef\xbb\xbf") ? false : nlohmann::json::accept(t);
    EXPECT_EQ(json_accept(t, multiline), want) << t;
    if (want) {
      EXPECT_EQ(multiline, t.find_first_of("\r\n") != std::string::npos) << t;
    }
  }
  // Deeper than the checker's stack: still decided (by the fallback), both ways.
  bool ml = false;
  EXPECT_TRUE(json_accept(std::string(2000, '[') + std::string(2000, ']'), ml));
  EXPECT_FALSE(json_accept(std::string(2000, '[') + std::string(1999, ']'), ml));
}

} // namespace
} // namespace shoal::workers::persistor
