// Unit tests of the persistor's pure parts: event-time parsing, partitions, blob names, the two
// record formats (read back by the ETL extractor and a strict JSON parser), and the batcher's
// three seal rules on a manual clock.

#include "storage/encoding.hpp"
#include "workers/config.hpp"
#include "workers/blob_format.hpp"
#include "workers/persistor/batcher.hpp"
#include "workers/persistor/format.hpp"
#include "workers/persistor/format_internal.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
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

TEST(PersistorEventTime, RefusesTimesBeyondTheMillisecondRange) {
  for (const char* bad : {"99999999999999999999999", "1" "0000000000000000000000000000000.5"})
    EXPECT_EQ(parse_event_time(bad).error().code, errc::parse) << bad;
  for (const char* payload : {R"({"ts":1e400})", R"({"ts":-1e300})", R"({"ts":9.3e18})"}) {
    auto r = event_time_of(payload, "ts");
    ASSERT_FALSE(r) << payload;
    EXPECT_EQ(r.error().code, errc::parse);
  }
  EXPECT_EQ(*event_time_of(R"({"ts":9.1e18})", "ts"), static_cast<unix_ms>(9.1e18));
}

TEST(PersistorEventTime, FieldLookupWithoutADomAgreesWithTheDomLookup) {
  const std::vector<std::string> payloads{
      R"({"ts":"2001/01/05 10:30","x":1})", R"({"x":{"ts":[1,2]},"ts":978690600})",
      R"({"ts":978690600000})", R"({"ts":-978690600})", R"({"ts":978690600.25})", R"({"ts":1.5e9})",
      R"({"ts":-0})", R"({"ts":0.0})", R"({"ts":12345678901234567890})", R"({"ts":-1234567890123456789012})",
      R"({"ts":999999999999999999})", R"({"ts":1e400})", R"({"ts":true})", R"({"ts":null})",
      R"({"ts":{}})", R"({"ts":[]})", R"({"ts":"yesterday"})", R"({"ts":"2001-01-05T10:30:00Z"})",
      R"({"ts":"2001\/01\/05 10:30"})", R"({"t\u0073":"2001-01-05"})", R"({"ts":1,"ts":"2001-01-05"})",
      R"({"a":{"ts":1},"a":{"x":2}})", R"({"a":{"x":2},"a":{"ts":978690600}})",
      R"({"a":{"b":{"c":"2001-01-05"}}})", R"({"a":[{"b":1}]})", R"({"a":"str"})", R"({"":{"":1}})",
      R"( { "a" : { "ts" : 978690600 } , "b" : "}" , "c":"\"{" } )", "{\n\"ts\":\r\n978690600\n}",
      R"({"s":"x\"}","ts":978690600})", R"({"s":"\\","ts":978690600})", R"([1,2])", R"("ts")", "",
      "not json", R"({"ts":1,})", R"({"ts":01})", "\xef\xbb\xbf{\"ts\":978690600}",
      "{\"ts\":\"\xc3\xa9\"}", "{\"ts\":\"\xc3\"}", "{\"\xc3\xa9\":1,\"ts\":978690600}",
      std::string(600, '[') + std::string(600, ']'),
      "{\"deep\":" + std::string(600, '[') + std::string(600, ']') + ",\"ts\":978690600}"};
  const std::vector<std::string> fields{"ts", "a.ts", "a.b.c", "a.b", "a", "x.ts", ".", "", "s", "a..b",
                                        "deep"};
  for (const auto& p : payloads)
    for (const auto& f : fields) {
      const auto got = event_time_of(p, f);
      const auto want = detail::event_time_dom(p, f); // a nlohmann DOM, then the path
      ASSERT_EQ(got.has_value(), want.has_value()) << p << " / " << f;
      if (got) {
        EXPECT_EQ(*got, *want) << p << " / " << f;
      } else {
        EXPECT_EQ(got.error().code, want.error().code) << p << " / " << f;
        EXPECT_EQ(got.error().message, want.error().message) << p << " / " << f;
      }
    }
}

TEST(PersistorLayout, PartitionAndBlobName) {
  // The seed's layout by default: {dest}/{YYYY}/{MM}/{DD}/{host}-{persistor}-{seq}.json.
  EXPECT_EQ(partition_of(t_2001_01_05_1030), "2001/01/05");
  EXPECT_EQ(partition_of(t_2001_01_05_1030, partition_depth::day), "2001/01/05");
  EXPECT_EQ(partition_of(t_2001_01_05_1030, partition_depth::hour), "2001/01/05/10");
  EXPECT_EQ(partition_of(t_2001_01_05_1030, partition_depth::month), "2001/01");
  EXPECT_EQ(format_time(t_2001_01_05_1030 + 7), "2001-01-05T10:30:00.007Z");
  EXPECT_EQ(blob_name("flights", partition_of(t_2001_01_05_1030), "h1", "p1", 7),
            "flights/2001/01/05/h1-p1-00000007.json");
  EXPECT_EQ(blob_name("flights", "2001/01/05/10", "h1", "p1", 7),
            "flights/2001/01/05/10/h1-p1-00000007.json");
  EXPECT_EQ(blob_name("flights", "2001/01", "h1", "p1", 7), "flights/2001/01/h1-p1-00000007.json");
  EXPECT_TRUE(validate_dest("flights-2.x_y"));
  EXPECT_FALSE(validate_dest(""));
  EXPECT_FALSE(validate_dest(".."));
  EXPECT_FALSE(validate_dest("a/b"));
  EXPECT_FALSE(validate_dest(std::string(129, 'a')));
}

TEST(PersistorLayout, PartitionDepthsParseAndReadBack) {
  EXPECT_EQ(*parse_partition_depth("day"), partition_depth::day);
  EXPECT_EQ(*parse_partition_depth("hour"), partition_depth::hour);
  EXPECT_EQ(*parse_partition_depth("month"), partition_depth::month);
  auto bad = parse_partition_depth("week");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  for (auto d : {partition_depth::month, partition_depth::day, partition_depth::hour})
    EXPECT_EQ(*parse_partition_depth(to_string(d)), d);
  // The catalog date of a folder of every depth (a month folder: its first day), and the folder
  // of a blob name of every layout, old hour-partitioned names included.
  EXPECT_EQ(partition_date("2001/01/05"), "2001-01-05");
  EXPECT_EQ(partition_date("2001/01/05/10"), "2001-01-05");
  EXPECT_EQ(partition_date("2001/01"), "2001-01-01");
  EXPECT_EQ(partition_date("x"), "");
  EXPECT_EQ(partition_of_blob("flights/2001/01/05/h1-p1-00000007.json"), "2001/01/05");
  EXPECT_EQ(partition_of_blob("flights/2001/01/05/10/h1-p1-00000007.json"), "2001/01/05/10");
  EXPECT_EQ(partition_of_blob("flights/2001/01/h1-p1-00000007.json"), "2001/01");
  EXPECT_EQ(partition_of_blob("flights/h1.json"), "");
}

TEST(PersistorLayout, PartitionPeriodsAreEqualExactlyWhenFoldersAre) {
  // Around the year, month, day and hour boundaries, also before 1970.
  std::vector<unix_ms> ts;
  for (unix_ms base : {unix_ms{0}, unix_ms{951'782'400'000} /* 2000-02-29 */, t_2001_01_05_1030,
                       unix_ms{-86'400'000LL * 40}, unix_ms{978'307'200'000} /* 2001-01-01 */})
    for (unix_ms d : {unix_ms{-3'600'001}, unix_ms{-1}, unix_ms{0}, unix_ms{1}, unix_ms{3'599'999},
                      unix_ms{86'399'999}, unix_ms{86'400'000}, unix_ms{31LL * 86'400'000}})
      ts.push_back(base + d);
  for (auto depth : {partition_depth::month, partition_depth::day, partition_depth::hour})
    for (unix_ms a : ts)
      for (unix_ms b : ts)
        ASSERT_EQ(partition_period(a, depth) == partition_period(b, depth),
                  partition_of(a, depth) == partition_of(b, depth))
            << a << " " << b << " " << to_string(depth);
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
  auto ex = workers::extract_records(body);
  ASSERT_TRUE(ex) << ex.error().describe();
  ASSERT_EQ(ex->records.size(), 3u);
  EXPECT_EQ(ex->format, workers::blob_format::persistor_v1);
  EXPECT_EQ(ex->records[0].message_id, "a1");
  EXPECT_EQ(ex->records[0].payload, R"({"x":"line1\nline2"})");
  EXPECT_EQ(ex->records[0].event_time, "2001-01-05T10:30:00.000Z");
  EXPECT_EQ(ex->records[0].ingest_time, "2001-01-05T10:30:01.000Z");
  EXPECT_EQ(ex->records[0].producer, "send@1@h");
  EXPECT_TRUE(ex->records[2].problem.empty());
  auto j3 = nlohmann::json::parse(std::string_view(ex->records[2].raw));
  EXPECT_EQ(j3["METADATA"]["properties"]["encoding"], "base64");
  EXPECT_EQ(j3["DATA"], storage::base64_encode(std::string("\xff\xfe bin", 6)));
}

TEST(PersistorFormat, NdjsonEmbedsJsonPayloadsAndQuotesOthers) {
  std::string body;
  append_record(body, record_format::ndjson, sample("b1", R"({"x":1})"));
  append_record(body, record_format::ndjson, sample("b2", "not json"));
  auto ex = workers::extract_records(body);
  ASSERT_TRUE(ex) << ex.error().describe();
  ASSERT_EQ(ex->records.size(), 2u);
  EXPECT_EQ(ex->format, workers::blob_format::ndjson);
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
    auto ex = workers::extract_records(body);
    ASSERT_TRUE(ex) << ex.error().describe() << "\n" << body;
    ASSERT_EQ(ex->records.size(), 2u);
    auto j = nlohmann::json::parse(std::string_view(ex->records[0].raw).substr(
        0, ex->records[0].raw.find_last_not_of('\n') + 1));
    const auto& meta = fmt == record_format::ndjson ? j["meta"] : j["METADATA"];
    EXPECT_EQ(meta["properties"]["weird"], ctl);
    EXPECT_EQ(meta["properties"][storage::base64_encode(std::string("\xff", 1))], "bad key");
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
}

TEST(PersistorBatcher, SealsOnRecordCount) {
  batcher b({.max_records = 3, .max_bytes = 1 << 20, .max_delay_ms = 1000}, record_format::ndjson);
  EXPECT_TRUE(b.add(sample("1", "{}"), 1, 0).empty());
  EXPECT_TRUE(b.add(sample("2", "{}"), 2, 1).empty());
  auto s = b.add(sample("3", "{}"), 3, 2);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].tokens, (std::vector<ack_token>{1, 2, 3}));
  EXPECT_EQ(s[0].summary.record_count, 3u);
  EXPECT_EQ(s[0].partition, "2001/01/05");
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
  batcher b({.max_records = 100, .max_bytes = 1 << 20, .max_delay_ms = 1000}, record_format::persistor_v1,
            partition_depth::hour);
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
      "{]", R"({"a":1 "b":2})", "\xef\xbb\xbf{}", "NaN", "[1,,2]", R"({,"a":1})",
      // numbers at a double's edges: nlohmann refuses an overflow (±inf), keeps an underflow
      "1e400", "-1e400", "1E+309", "1.8e308", "1.7e308", "17976931348623157e292", "0.1e310",
      "0.00001e312", "1e-400", "-1e-400", "0e999999", "0.0e400", "123.456e306", "[1e308,2e308]",
      "1" + std::string(400, '0'), "1" + std::string(300, '0') + ".5", "0." + std::string(400, '0') + "1e400"};
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


// -- the one-pass formatter against the reference (the two-pass formatter it replaced) ---------------

// format_time as it was written with <chrono> and snprintf (the persistor keeps it for years
// outside 0..9999).
std::string reference_time(unix_ms t) { return detail::format_time_slow(t); }

bool reference_utf8(std::string_view s) { return storage::utf16_length(s).has_value(); }

void reference_meta(std::string& out, const record& r, bool utf8) {
  using storage::append_json_string;
  out += "{\"message_id\":";
  append_json_string(out, reference_utf8(r.message_id) ? std::string_view(r.message_id) : "?");
  out += ",\"producer\":";
  append_json_string(out, reference_utf8(r.producer) ? std::string_view(r.producer) : "?");
  out += ",\"dest\":";
  append_json_string(out, r.dest);
  out += ",\"event_time\":";
  append_json_string(out, reference_time(r.event_time));
  out += ",\"ingest_time\":";
  append_json_string(out, reference_time(r.ingest_time));
  out += ",\"properties\":{";
  bool first = true;
  for (const auto& [k, v] : r.properties) {
    if (!first)
      out += ',';
    first = false;
    append_json_string(out, reference_utf8(k) ? k : storage::base64_encode(k));
    out += ':';
    append_json_string(out, reference_utf8(v) ? v : storage::base64_encode(v));
  }
  if (!utf8) {
    if (!first)
      out += ',';
    out += "\"encoding\":\"base64\"";
  }
  out += "}}";
}

// append_record as it was: UTF-8 checked first, then escaped (persistor-v1) or checked as JSON
// by nlohmann (ndjson), each in its own pass.
std::string reference_record(record_format format, const record& r) {
  std::string out;
  const bool utf8 = reference_utf8(r.payload);
  const std::string text = utf8 ? r.payload : storage::base64_encode(r.payload);
  if (format == record_format::persistor_v1) {
    out += "{\"DATA\":";
    storage::append_json_string(out, text);
    out += ",\"METADATA\":";
    reference_meta(out, r, utf8);
    out += "}\n\n";
  } else {
    out += "{\"data\":";
    if (utf8 && !r.payload.starts_with("\xef\xbb\xbf") && nlohmann::json::accept(r.payload)) {
      if (r.payload.find_first_of("\r\n") == std::string::npos)
        out += r.payload;
      else
        out += nlohmann::json::parse(r.payload).dump();
    } else {
      storage::append_json_string(out, text);
    }
    out += ",\"meta\":";
    reference_meta(out, r, utf8);
    out += "}\n";
  }
  return out;
}

// Payloads at every edge of the scanner: specials before, on and after the 16- and 32-byte steps,
// every control character, every kind of malformed UTF-8, JSON with and without non-ASCII text.
std::vector<std::string> edge_payloads() {
  std::vector<std::string> v{"", "a", "\"", "\\", "/", std::string(1, '\0'), "\x7f", "x\x1fy",
                             "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf",
                             // malformed: lone continuation, overlong 2/3/4-byte, surrogate,
                             // above U+10FFFF, bad leads, truncated at the end, bad continuation
                             "\x80", "\xbf", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xe0\x9f\xbf",
                             "\xed\xa0\x80", "\xed\xbf\xbf", "\xf0\x80\x80\xaf", "\xf0\x8f\xbf\xbf",
                             "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80", "\xfe",
                             "\xff", "ok\xc3", "ok\xe2\x82", "ok\xf0\x9f\x98", "\xc3\x28",
                             "\xe2\x28\xa1", "\xf0\x28\x8c\xbc",
                             // JSON
                             R"({"k":"v"})", R"({"k":"caf)" "\xc3\xa9" R"("})",
                             R"({"k":")" "\xc3" R"("})", R"({"k":")" "\xed\xa0\x80" R"("})",
                             "{\"k\":1}\xc3\xa9", "\xc3\xa9{}", R"(["a\"b\\c\u00e9\uD83D\uDE00"])",
                             "{\"a\":\n 1}", "{\"a\":\r\n[1,\n2]}", "[1,2", "{\"k\":\"a\tb\"}",
                             "\xef\xbb\xbf{}", R"({"k":"\ud800"})", "  42  ", "-0.5e3", "nul"};
  for (int c = 0; c < 0x20; ++c)
    v.push_back("ctl" + std::string(1, static_cast<char>(c)) + "x");
  for (const char* special : {"\"", "\\", "\n", "\x01", "\xc3\xa9", "\xff", "\xe2\x82\xac"})
    for (std::size_t at : {0, 1, 14, 15, 16, 17, 30, 31, 32, 33, 47, 48, 63, 64, 65, 100}) {
      std::string s(at, 'p');
      s += special;
      s += std::string(40, 'q');
      v.push_back(s);
      v.push_back(std::string(at, 'p') + special); // at the very end
      v.push_back(R"({"k":")" + std::string(at, 'p') + special + std::string(at % 7, 'q') + "\"}");
    }
  v.push_back(std::string(2000, '[') + std::string(2000, ']'));                  // deep JSON
  v.push_back(std::string(2000, '[') + "\"\xc3\xa9\"" + std::string(2000, ']')); // deep, UTF-8
  v.push_back(std::string(2000, '[') + "\"\xc3\"" + std::string(2000, ']'));     // deep, not UTF-8
  v.push_back(std::string(2000, '[') + std::string(1999, ']'));                  // deep, not JSON
  v.push_back("{\"k\":\"" + std::string(2040, 'x') + "\"}");                     // the bench's
  return v;
}

TEST(PersistorFormatOnePass, WritesExactlyWhatTheTwoPassFormatterWrote) {
  for (auto fmt : {record_format::persistor_v1, record_format::ndjson})
    for (const auto& p : edge_payloads()) {
      auto r = sample("0123456789abcdef0123456789abcdef", p);
      r.properties = {{"h", p}, {p, "v"}};
      std::string out = "prefix"; // appended after what is there
      const std::size_t n = append_record(out, fmt, r);
      const std::string want = reference_record(fmt, r);
      EXPECT_EQ(n, want.size()) << p;
      EXPECT_EQ(out, "prefix" + want) << static_cast<int>(fmt) << " payload: " << p;
    }
}

TEST(PersistorFormatOnePass, InvalidUtf8GoesToBase64AndNothingHalfWrittenStays) {
  for (const std::string bad : {"\xff", "abc\xc3", "{\"k\":\"\xed\xa0\x80\"}", "\xf4\x90\x80\x80x"})
    for (auto fmt : {record_format::persistor_v1, record_format::ndjson}) {
      std::string out;
      append_record(out, fmt, sample("id", bad));
      auto j = nlohmann::json::parse(out); // strict: the rolled-back bytes left nothing behind
      const auto& data = fmt == record_format::ndjson ? j["data"] : j["DATA"];
      EXPECT_EQ(data, storage::base64_encode(bad)) << bad;
      const auto& meta = fmt == record_format::ndjson ? j["meta"] : j["METADATA"];
      EXPECT_EQ(meta["properties"]["encoding"], "base64");
    }
  // Metadata strings that are not UTF-8: "?" for ids and producers, base64 for properties.
  auto r = sample(std::string("\xc0\xaf", 2), "{}");
  r.producer = "p\xe0\x80\xaf";
  r.properties = {{"k", "\xf5"}};
  std::string out;
  append_record(out, record_format::ndjson, r);
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["meta"]["message_id"], "?");
  EXPECT_EQ(j["meta"]["producer"], "?");
  EXPECT_EQ(j["meta"]["properties"]["k"], storage::base64_encode("\xf5"));
  EXPECT_FALSE(j["meta"]["properties"].contains("encoding"));
}

TEST(PersistorFormatOnePass, AgreesWithTheReferenceOnGeneratedPayloads) {
  // Seeded generator (deterministic): payloads mixing plain runs of every length, quotes,
  // backslashes, control characters, well-formed and malformed UTF-8, some wrapped as JSON.
  std::mt19937 gen(20261121);
  const std::vector<std::string> pieces{"\"", "\\", "\n", "\t", "\x01", "\x1f", "\x7f", "/",
                                        "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xc3",
                                        "\xed\xa0\x80", "\x80", "\xff", "\\u00e9", "{", "}", ":",
                                        ",", "[", "]", " ", "1"};
  for (int i = 0; i < 3000; ++i) {
    std::string p;
    const int parts = static_cast<int>(gen() % 12);
    for (int k = 0; k < parts; ++k) {
      p += std::string(gen() % 70, static_cast<char>('a' + gen() % 26));
      p += pieces[gen() % pieces.size()];
    }
    if (gen() % 2 == 0)
      p = "{\"k\":\"" + p + "\",\"n\":[1,2.5e3,true,null]}";
    for (auto fmt : {record_format::persistor_v1, record_format::ndjson}) {
      std::string out;
      append_record(out, fmt, sample("id", p));
      ASSERT_EQ(out, reference_record(fmt, sample("id", p))) << p;
    }
  }
}

TEST(PersistorBatcher, OneBatchPerFolderOfTheDepth) {
  // Records one hour apart over two days and into the next month: by hour each is its own
  // batch, by day two per day's records, by month one per month.
  std::vector<record> recs;
  for (int h = 0; h < 48; ++h)
    recs.push_back(sample(std::to_string(h), "{}", t_2001_01_05_1030 + h * 3'600'000LL));
  recs.push_back(sample("feb", "{}", t_2001_01_05_1030 + 31LL * 86'400'000));
  for (auto [depth, want] : {std::pair{partition_depth::hour, std::size_t{49}},
                             std::pair{partition_depth::day, std::size_t{4}},
                             std::pair{partition_depth::month, std::size_t{2}}}) {
    batcher b({.max_records = 1000, .max_bytes = 1 << 20, .max_delay_ms = 1000}, record_format::ndjson, depth);
    ack_token t = 1;
    for (const auto& r : recs)
      EXPECT_TRUE(b.add(r, t++, 0).empty());
    auto all = b.flush_all();
    EXPECT_EQ(all.size(), want) << to_string(depth);
    std::size_t n = 0;
    for (const auto& bt : all) {
      n += bt.tokens.size();
      EXPECT_EQ(bt.partition.size(), depth == partition_depth::hour ? 13u : depth == partition_depth::day ? 10u : 7u);
    }
    EXPECT_EQ(n, recs.size());
  }
}

// Issue 14: a file of dated records sent in date order (flights) reaches a day's folder, fills
// it, and never comes back. Once left_behind_records of the next day have come in a row, the
// days left behind are sealed (and written, acked and loaded while the rest is still sent)
// instead of waiting for max_delay or the end-of-input flush. Records of other dests and
// interleaved input are not cut by it.
TEST(PersistorBatcher, SealsTheFoldersTheInputHasLeftBehind) {
  constexpr std::int64_t day = 86'400'000;
  batcher b({.max_records = 1000, .max_bytes = 1 << 20, .max_delay_ms = 1000, .left_behind_records = 3},
            record_format::ndjson);
  ack_token t = 1;
  auto other = sample("o", "{}");
  other.dest = "other";
  EXPECT_TRUE(b.add(other, t++, 0).empty());
  for (int i = 0; i < 5; ++i) // day 0: tokens 2..6
    EXPECT_TRUE(b.add(sample("a", "{}"), t++, 0).empty());
  EXPECT_TRUE(b.add(sample("b", "{}", t_2001_01_05_1030 + day), t++, 0).empty());
  EXPECT_TRUE(b.add(sample("b", "{}", t_2001_01_05_1030 + day), t++, 0).empty());
  auto s = b.add(sample("b", "{}", t_2001_01_05_1030 + day), t++, 0); // third of day 1 in a row
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].partition, "2001/01/05");
  EXPECT_EQ(s[0].tokens, (std::vector<ack_token>{2, 3, 4, 5, 6}));
  EXPECT_TRUE(b.add(sample("b", "{}", t_2001_01_05_1030 + day), t++, 0).empty()) << "sealed once per run";
  // A late record of day 0 opens a new batch; interleaved days from then on cut nothing.
  for (int i = 0; i < 20; ++i)
    EXPECT_TRUE(b.add(sample("x", "{}", t_2001_01_05_1030 + (i % 2) * day), t++, 0).empty()) << i;
  EXPECT_EQ(b.open_records(), 1u + 4u + 20u);
  auto rest = b.flush_all();
  ASSERT_EQ(rest.size(), 3u); // day 0 and day 1 of "flights", and "other" (never cut)
  EXPECT_EQ(rest[2].dest, "other");
  EXPECT_EQ(rest[2].tokens, std::vector<ack_token>{1});

  // 0 turns it off.
  batcher off({.max_records = 1000, .max_bytes = 1 << 20, .max_delay_ms = 1000, .left_behind_records = 0},
              record_format::ndjson);
  EXPECT_TRUE(off.add(sample("a", "{}"), 1, 0).empty());
  for (ack_token i = 2; i < 50; ++i)
    EXPECT_TRUE(off.add(sample("b", "{}", t_2001_01_05_1030 + day), i, 0).empty());
}

TEST(PersistorBatcher, SealHoldingSealsOnlyTheBatchesWithThoseTokens) {
  batcher b({.max_records = 100, .max_bytes = 1 << 20, .max_delay_ms = 1000}, record_format::ndjson);
  b.add(sample("1", "{}"), 1, 0);
  b.add(sample("2", "{}", t_2001_01_05_1030 + 86'400'000), 2, 0);
  b.add(sample("3", "{}", t_2001_01_05_1030 + 2 * 86'400'000), 3, 0);
  b.add(sample("4", "{}", t_2001_01_05_1030 + 2 * 86'400'000), 4, 0);
  auto s = b.seal_holding([](ack_token t) { return t == 1 || t == 4; });
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].tokens, std::vector<ack_token>{1});
  EXPECT_EQ(s[1].tokens, (std::vector<ack_token>{3, 4}));
  EXPECT_EQ(b.open_records(), 1u);
  EXPECT_TRUE(b.seal_holding([](ack_token) { return false; }).empty());
}

TEST(PersistorFormatOnePass, TimesMatchTheChronoTextInEveryRange) {
  std::vector<unix_ms> ts{0, 1, -1, 999, -999, 86'399'999, 86'400'000, -86'400'000, -86'400'001,
                          951'782'400'000 /* 2000-02-29 */, 4'107'542'400'000 /* 2100-03-01 */,
                          253'402'300'799'999 /* 9999-12-31T23:59:59.999 */, 253'402'300'800'000,
                          -62'167'219'200'000 /* 0000-01-01 */, -62'167'219'200'001,
                          -62'198'755'200'000 /* year -1 */, 400'000'000'000'000 /* year 14645 */};
  std::mt19937_64 gen(7);
  for (int i = 0; i < 20'000; ++i)
    ts.push_back(static_cast<unix_ms>(gen() % 600'000'000'000'000ull) - 200'000'000'000'000);
  for (unix_ms t : ts) {
    ASSERT_EQ(format_time(t), reference_time(t)) << t;
    const std::string s = reference_time(t);
    if (s.size() == 24) {
      ASSERT_EQ(partition_of(t, partition_depth::hour),
                s.substr(0, 4) + "/" + s.substr(5, 2) + "/" + s.substr(8, 2) + "/" + s.substr(11, 2))
          << t;
    }
  }
}

TEST(PersistorJsonAccept, RefusesMalformedUtf8InsideStrings) {
  for (const std::string bad : {"\"\xc3\"", "\"\xed\xa0\x80\"", "[\"ok\",\"\xff\"]", "{\"\x80\":1}",
                                "\"\xf4\x90\x80\x80\"", "\"\xe0\x80\xaf\""}) {
    bool ml = false;
    EXPECT_FALSE(json_accept(bad, ml)) << bad;
    EXPECT_FALSE(nlohmann::json::accept(bad)) << bad;
  }
  bool ml = false;
  EXPECT_TRUE(json_accept("[\"\xf0\x9f\x98\x80\",\"\xf4\x8f\xbf\xbf\"]", ml));
}

} // namespace
} // namespace shoal::workers::persistor
