// The Table entity model: exact JSON round-trips of every EDM type, parsing service answers,
// and the client-side limits (nothing is sent).

#include "storage/table_entity.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

namespace shoal::storage {
namespace {

using namespace std::chrono_literals;

table_time ticks(std::int64_t t) { return table_time(table_time::duration(t)); }

table_entity every_type() {
  table_entity e;
  e.partition_key = "p'k";
  e.row_key = "r\xC3\xA9k";
  std::string all_bytes;
  for (int i = 0; i < 256; ++i)
    all_bytes += static_cast<char>(i);
  e.set("s", std::string("O'Brien \"quoted\" \\ \xE2\x82\xAC \xF0\x9F\x98\x80 \x01\n\t\r\b\f\x1f/"))
      .set("empty", std::string())
      .set("i32", std::int32_t{-2147483647 - 1})
      .set("i32max", std::int32_t{2147483647})
      .set("i64", std::numeric_limits<std::int64_t>::max())
      .set("i64min", std::numeric_limits<std::int64_t>::min())
      .set("i64small", std::int64_t{5})
      .set("d", 0.1)
      .set("dwhole", 2.0)
      .set("dbig", 1e300)
      .set("dtiny", 5e-324)
      .set("nan", std::numeric_limits<double>::quiet_NaN())
      .set("inf", std::numeric_limits<double>::infinity())
      .set("ninf", -std::numeric_limits<double>::infinity())
      .set("yes", true)
      .set("no", false)
      .set("when", ticks(17'000'000'001'234'567)) // 100 ns precision
      .set("before1970", ticks(-123'456'789'012'345))
      .set("g", *table_guid::parse("C9DA6455-213D-42C9-9A79-3E9149A57833"))
      .set("bin", table_binary{all_bytes})
      .set("nobin", table_binary{});
  return e;
}

TEST(TableEntityTest, RoundTripsEveryTypeExactlyThroughJson) {
  table_entity e = every_type();
  ASSERT_TRUE(validate_entity(e)) << validate_entity(e).error().describe();
  std::string text = entity_to_json(e);
  auto back = entity_from_json(text);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_TRUE(same_content(e, *back)) << text;
  for (const auto& [name, value] : e.properties) {
    const table_value* got = back->find(name);
    ASSERT_NE(got, nullptr) << name;
    EXPECT_EQ(type_of(*got), type_of(value)) << name;
    EXPECT_TRUE(same_value(*got, value)) << name;
  }
  EXPECT_TRUE(std::isnan(*back->get<double>("nan")));
  EXPECT_EQ(*back->get<double>("dtiny"), 5e-324);
  EXPECT_EQ(*back->get<table_time>("when"), ticks(17'000'000'001'234'567));
}

TEST(TableEntityTest, WritesAnnotationsForTypesJsonCannotCarry) {
  std::string text = entity_to_json(every_type());
  for (const char* needle :
       {"\"i64@odata.type\":\"Edm.Int64\"", "\"i64\":\"9223372036854775807\"", "\"d@odata.type\":\"Edm.Double\"",
        "\"nan\":\"NaN\"", "\"inf\":\"Infinity\"", "\"ninf\":\"-Infinity\"", "\"when@odata.type\":\"Edm.DateTime\"",
        "\"g\":\"c9da6455-213d-42c9-9a79-3e9149a57833\"", "\"g@odata.type\":\"Edm.Guid\"",
        "\"bin@odata.type\":\"Edm.Binary\"", "\"i32\":-2147483648", "\"yes\":true", "\"dwhole\":2.0",
        "\"PartitionKey\":\"p'k\""})
    EXPECT_NE(text.find(needle), std::string::npos) << needle << " in " << text;
  EXPECT_EQ(text.find("i32@odata"), std::string::npos);
  EXPECT_EQ(text.find("yes@odata"), std::string::npos);
  EXPECT_EQ(text.find("\"s@odata"), std::string::npos);
}

TEST(TableEntityTest, InvalidUtf8IsReplacedNotThrown) {
  table_entity e;
  e.set("s", std::string("bad\xFF"));
  std::string text = entity_to_json(e);
  EXPECT_TRUE(entity_from_json(text)) << text;
  EXPECT_FALSE(validate_entity(e));
}

TEST(TableEntityTest, DateTimeKeepsSevenFractionalDigits) {
  table_entity e;
  e.set("t", ticks(0) + std::chrono::seconds(1'704'164'645) + table_time::duration(1'234'567));
  std::string text = entity_to_json(e);
  EXPECT_NE(text.find("\"2024-01-02T03:04:05.1234567Z\""), std::string::npos) << text;
  EXPECT_EQ(to_table_time(std::chrono::system_clock::time_point(std::chrono::nanoseconds(1'999))),
            ticks(19));
  EXPECT_EQ(to_table_time(std::chrono::system_clock::time_point(std::chrono::nanoseconds(-1))), ticks(-1));
}

TEST(TableEntityTest, ParsesAnAzuriteGetResponse) {
  // Captured from Azurite 3.35.0 (minimalmetadata); note `dw` lost its annotation and -0.0 its sign.
  const std::string body =
      R"({"odata.metadata":"http://127.0.0.1:10992/devstoreaccount1/$metadata#probe1/@Element",)"
      R"("odata.etag":"W/\"datetime'2026-11-21T12%3A23%3A24.5069993Z'\"","PartitionKey":"p","RowKey":"types",)"
      R"("s":"O'Brien","i32":42,"i64@odata.type":"Edm.Int64","i64":"9223372036854775807","d":1.5,"dw":2.0,)"
      R"("nan@odata.type":"Edm.Double","nan":"NaN","inf@odata.type":"Edm.Double","inf":"-Infinity","b":true,)"
      R"("dt@odata.type":"Edm.DateTime","dt":"2024-01-02T03:04:05.1234567Z","g@odata.type":"Edm.Guid",)"
      R"("g":"C9DA6455-213D-42C9-9A79-3E9149A57833","bin@odata.type":"Edm.Binary","bin":"AAEC/w==",)"
      R"("small":0.1,"negz":0.0,"Timestamp":"2026-11-21T12:23:24.5069993Z"})";
  auto e = entity_from_json(body);
  ASSERT_TRUE(e) << e.error().describe();
  EXPECT_EQ(e->etag, "W/\"datetime'2026-11-21T12%3A23%3A24.5069993Z'\"");
  EXPECT_EQ(e->partition_key, "p");
  EXPECT_EQ(e->row_key, "types");
  ASSERT_TRUE(e->timestamp);
  EXPECT_EQ(*e->get<std::string>("s"), "O'Brien");
  EXPECT_EQ(*e->get<std::int32_t>("i32"), 42);
  EXPECT_EQ(*e->get<std::int64_t>("i64"), std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(*e->get<double>("d"), 1.5);
  EXPECT_EQ(*e->get<double>("dw"), 2.0);
  EXPECT_TRUE(std::isnan(*e->get<double>("nan")));
  EXPECT_EQ(*e->get<double>("inf"), -std::numeric_limits<double>::infinity());
  EXPECT_EQ(*e->get<bool>("b"), true);
  EXPECT_EQ(e->get<table_guid>("g")->to_string(), "c9da6455-213d-42c9-9a79-3e9149a57833");
  EXPECT_EQ(e->get<table_binary>("bin")->bytes, std::string("\x00\x01\x02\xff", 4));
  EXPECT_EQ(e->properties.size(), 13u); // PK, RK, Timestamp and odata.* are not properties
}

TEST(TableEntityTest, UntypedNumbersPickTheNarrowestType) {
  auto e = entity_from_json(R"({"a":1,"b":-1.25,"c":3000000000,"d":-3000000000,"n":null})");
  ASSERT_TRUE(e) << e.error().describe();
  EXPECT_NE(e->get<std::int32_t>("a"), nullptr);
  EXPECT_NE(e->get<double>("b"), nullptr);
  EXPECT_EQ(*e->get<std::int64_t>("c"), 3000000000);
  EXPECT_EQ(*e->get<std::int64_t>("d"), -3000000000);
  EXPECT_EQ(e->find("n"), nullptr); // null = absent
}

TEST(TableEntityTest, RejectsMalformedJsonAndMismatchedAnnotations) {
  for (const char* bad : {"{", "[]", R"({"x":"abc","x@odata.type":"Edm.Int64"})",
                          R"({"x":"2024-13-45","x@odata.type":"Edm.DateTime"})",
                          R"({"x":"not-a-guid","x@odata.type":"Edm.Guid"})",
                          R"({"x":"***","x@odata.type":"Edm.Binary"})",
                          R"({"x":1,"x@odata.type":"Edm.Unknown"})", R"({"x":{"y":1}})",
                          R"({"x":"1","x@odata.type":"Edm.Double"})", R"({"PartitionKey":5})"}) {
    auto e = entity_from_json(bad);
    ASSERT_FALSE(e) << bad;
    EXPECT_EQ(e.error().code, errc::bad_response) << bad;
  }
}

TEST(TableEntityTest, ValueConstructionPicksTheIntendedType) {
  table_value s = "text";
  table_value i = 42;
  table_value l = std::int64_t{42};
  table_value d = 1.5;
  table_value b = true;
  EXPECT_EQ(type_of(s), edm_type::string);
  EXPECT_EQ(type_of(i), edm_type::int32);
  EXPECT_EQ(type_of(l), edm_type::int64);
  EXPECT_EQ(type_of(d), edm_type::double_);
  EXPECT_EQ(type_of(b), edm_type::boolean);
  EXPECT_EQ(to_string(edm_type::datetime), "Edm.DateTime");
  EXPECT_FALSE(same_value(table_value{1}, table_value{std::int64_t{1}}));
  EXPECT_TRUE(same_value(table_value{std::nan("")}, table_value{std::nan("1")}));
}

TEST(TableEntityTest, GuidParsesEitherCaseAndPrintsLowerCase) {
  auto g = table_guid::parse("00112233-4455-6677-8899-AABBCCDDEEFF");
  ASSERT_TRUE(g) << g.error().describe();
  EXPECT_EQ(g->bytes[0], 0x00);
  EXPECT_EQ(g->bytes[15], 0xFF);
  EXPECT_EQ(g->to_string(), "00112233-4455-6677-8899-aabbccddeeff");
  for (const char* bad : {"", "00112233445566778899AABBCCDDEEFF", "00112233-4455-6677-8899-AABBCCDDEEF",
                          "0011223g-4455-6677-8899-AABBCCDDEEFF", "00112233-4455-6677-8899_AABBCCDDEEFF"})
    EXPECT_FALSE(table_guid::parse(bad)) << bad;
}

TEST(TableValidationTest, TableNames) {
  for (std::string ok : {std::string("abc"), std::string("Shoalwork"), std::string("a12"),
                         std::string("tables1"), std::string(63, 'a')})
    EXPECT_TRUE(validate_table_name(ok)) << ok;
  for (std::string bad : {std::string("ab"), std::string(64, 'a'), std::string("1abc"), std::string("ab-c"),
                          std::string("ab_c"), std::string("tables"), std::string("Tables"), std::string("")}) {
    auto r = validate_table_name(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_NE(r.error().message.find("table name"), std::string::npos);
  }
}

TEST(TableValidationTest, KeysRejectForbiddenCharactersAndLength) {
  EXPECT_TRUE(validate_key("", "RowKey"));
  EXPECT_TRUE(validate_key("queue-0a|record 1.json's", "RowKey"));
  EXPECT_TRUE(validate_key(std::string(512, 'k'), "RowKey"));
  EXPECT_TRUE(validate_key("\xC2\xA0nbsp", "RowKey")); // U+00A0 is past the C1 range
  for (std::string bad : {std::string("a/b"), std::string("a\\b"), std::string("a#b"), std::string("a?b"),
                          std::string("a\x01"), std::string("tab\t"), std::string(1, '\0'), std::string("del\x7F"),
                          std::string("c1\xC2\x85"), std::string("c1\xC2\x9F"), std::string("bad\xFF"),
                          std::string(513, 'k')}) {
    auto r = validate_key(bad, "PartitionKey");
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_NE(r.error().message.find("PartitionKey"), std::string::npos);
  }
  EXPECT_NE(validate_key(std::string(513, 'k'), "RowKey").error().message.find("512"), std::string::npos);
  // An emoji is two UTF-16 units: 256 of them are exactly 512.
  std::string emoji;
  for (int i = 0; i < 256; ++i)
    emoji += "\xF0\x9F\x98\x80";
  EXPECT_TRUE(validate_key(emoji, "RowKey"));
  EXPECT_FALSE(validate_key(emoji + "x", "RowKey"));
}

TEST(TableValidationTest, PropertyNames) {
  for (const char* ok : {"a", "_x", "lease_until", "A1", "\xC3\xA9t\xC3\xA9"})
    EXPECT_TRUE(validate_property_name(ok)) << ok;
  for (std::string bad : {std::string(""), std::string("1a"), std::string("a-b"), std::string("a b"),
                          std::string("a.b"), std::string("PartitionKey"), std::string("RowKey"),
                          std::string("Timestamp"), std::string(256, 'a'), std::string("x@odata.type")})
    EXPECT_FALSE(validate_property_name(bad)) << bad;
}

TEST(TableValidationTest, EntityLimitsNameTheLimit) {
  table_entity e;
  e.partition_key = "p";
  e.row_key = "r";
  for (int i = 0; i < 252; ++i)
    e.set("p" + std::to_string(i), i);
  EXPECT_TRUE(validate_entity(e));
  e.set("one_more", 1);
  auto r = validate_entity(e);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_NE(r.error().message.find("252"), std::string::npos) << r.error().message;

  table_entity s;
  s.set("s", std::string(32 * 1024, 'x'));
  EXPECT_TRUE(validate_entity(s));
  s.set("s", std::string(32 * 1024 + 1, 'x'));
  r = validate_entity(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_NE(r.error().message.find("'s'"), std::string::npos);
  s.set("s", std::string("bad\xC0\x80utf8"));
  EXPECT_EQ(validate_entity(s).error().code, errc::invalid_argument);

  table_entity b;
  b.set("b", table_binary{std::string(64 * 1024, 'x')});
  EXPECT_TRUE(validate_entity(b));
  b.set("b", table_binary{std::string(64 * 1024 + 1, 'x')});
  EXPECT_EQ(validate_entity(b).error().code, errc::limit_exceeded);

  table_entity big; // 17 strings of 32 Ki units ≈ 17 × 64 KiB > 1 MiB
  for (int i = 0; i < 17; ++i)
    big.set("s" + std::to_string(i), std::string(32 * 1024, 'x'));
  EXPECT_GT(entity_size_bytes(big), table_limits::max_entity_bytes);
  r = validate_entity(big);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_NE(r.error().message.find("1 MiB"), std::string::npos);

  table_entity badkey;
  badkey.row_key = "a/b";
  EXPECT_EQ(validate_entity(badkey).error().code, errc::invalid_argument);
  table_entity badname;
  badname.set("a-b", 1);
  EXPECT_EQ(validate_entity(badname).error().code, errc::invalid_argument);
}

TEST(TableEntityTest, SameContentAndContainsContent) {
  table_entity a;
  a.partition_key = "p";
  a.row_key = "r";
  a.set("x", 1).set("y", std::string("z"));
  table_entity b = a;
  b.etag = "W/\"other\"";
  b.timestamp = ticks(5);
  EXPECT_TRUE(same_content(a, b));
  b.set("extra", true);
  EXPECT_FALSE(same_content(a, b));
  EXPECT_TRUE(contains_content(b, a));
  EXPECT_FALSE(contains_content(a, b));
  b.set("x", 2);
  EXPECT_FALSE(contains_content(b, a));
}

// The typed getters: one coercion rule set; absence and a wrong type are errors, never a
// silent zero or a crash.
TEST(TableEntityGetters, ReadTheirTypeAndTheDocumentedCoercionsOnly) {
  table_entity e;
  const auto t = to_table_time(std::chrono::system_clock::time_point{1'700'000'000s});
  e.set("s", "text").set("i32", std::int32_t{-7}).set("i64", std::int64_t{1} << 40).set("d", 2.5);
  e.set("whole", 4096.0).set("digits", "123456789012").set("b", true).set("t", t);
  e.set("huge", 1e30).set("junk", "12x").set("empty", "");
  EXPECT_EQ(*e.get_string("s"), "text");
  EXPECT_EQ(*e.get_int64("i32"), -7);
  EXPECT_EQ(*e.get_int64("i64"), std::int64_t{1} << 40);
  EXPECT_EQ(*e.get_int64("whole"), 4096);
  EXPECT_EQ(*e.get_int64("digits"), 123456789012); // Azurite's untagged Int64
  EXPECT_EQ(*e.get_double("d"), 2.5);
  EXPECT_EQ(*e.get_double("i32"), -7.0);
  EXPECT_EQ(*e.get_bool("b"), true);
  EXPECT_EQ(*e.get_time("t"), std::chrono::system_clock::time_point{1'700'000'000s});
  for (const char* name : {"d", "huge", "junk", "empty", "b", "t"}) {
    auto v = e.get_int64(name);
    ASSERT_FALSE(v) << name;
    EXPECT_EQ(v.error().code, errc::bad_response) << name;
    EXPECT_NE(v.error().message.find(name), std::string::npos) << v.error().message;
  }
  EXPECT_EQ(e.get_string("i32").error().code, errc::bad_response);
  EXPECT_EQ(e.get_double("s").error().code, errc::bad_response);
  EXPECT_EQ(e.get_bool("i32").error().code, errc::bad_response);
  EXPECT_EQ(e.get_time("s").error().code, errc::bad_response);
  for (auto code : {e.get_string("nope").error().code, e.get_int64("nope").error().code,
                    e.get_double("nope").error().code, e.get_bool("nope").error().code,
                    e.get_time("nope").error().code})
    EXPECT_EQ(code, errc::not_found);
  EXPECT_EQ(e.get_int64("nope").value_or(42), 42);
}

} // namespace
} // namespace shoal::storage
