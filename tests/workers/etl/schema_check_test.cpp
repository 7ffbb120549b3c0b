// Unit tests of the compiled schema checker (workers/etl/schema_check.hpp) in front of
// valijson: every record gets the same verdict and the same quarantine reason with and
// without it, the shipped flights schema compiles, and the checker never accepts what valijson
// rejects (patterns, formats, bounds, lengths, types, required, enum, additionalProperties).

#include "tests/workers/etl/etl_test_data.hpp"
#include "workers/etl/dataset.hpp"
#include "workers/etl/schema_check.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

namespace shoal::workers::etl {
namespace {

using nlohmann::json;

// Verdict and reason of one payload under `d` ("" = accepted).
std::string verdict(const dataset& d, const std::string& payload) {
  std::string body = write_blob(blob_format::persistor_v1, {{"m1", "2026-11-21T12:00:00Z", payload}});
  auto ex = extract_records(body);
  EXPECT_TRUE(ex);
  std::vector<quarantine_row> q;
  auto valid = validate_records(d, *ex, q);
  if (valid.size() == 1) return "";
  return q.empty() ? "?" : q[0].step + ": " + q[0].reason;
}

class SchemaCheckTest : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("shoal-schema-check-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // A dataset with `schema` (one text column from the message id).
  dataset with_schema(const json& schema) {
    std::ofstream(dir_ / "s.json") << schema.dump();
    std::ofstream(dir_ / "d.toml") << "name = \"t\"\nschema_file = \"s.json\"\ninsert = \"INSERT INTO t VALUES (?)\"\n"
                                      "[[fields]]\ncolumn = \"id\"\nsource = \"$message_id\"\n";
    auto d = load_dataset(dir_ / "d.toml");
    EXPECT_TRUE(d) << d.error().message;
    return d ? *d : dataset{};
  }

  // Checks every value under both validators: same verdict and reason; and, for `exact`, the
  // compiled checker accepts exactly what valijson accepts (no slow path for valid records).
  void same_verdicts(const json& schema, const std::vector<json>& values, bool exact = true) {
    dataset fast = with_schema(schema);
    ASSERT_TRUE(has_compiled_schema(fast)) << schema.dump();
    dataset slow = fast;
    slow.fast_schema = false;
    auto checker = schema_check::compile(schema);
    ASSERT_TRUE(checker);
    for (const json& v : values) {
      const std::string payload = v.dump();
      const std::string a = verdict(fast, payload), b = verdict(slow, payload);
      EXPECT_EQ(a, b) << schema.dump() << " on " << payload;
      if (checker->accepts(v)) {
        EXPECT_EQ(b, "") << "checker accepted what valijson rejects: " << schema.dump() << " on " << payload;
      } else if (exact) {
        EXPECT_NE(b, "") << "valijson accepts, the checker does not: " << schema.dump() << " on " << payload;
      }
    }
  }

  std::filesystem::path dir_;
};

TEST_F(SchemaCheckTest, TheFlightsBlobGetsTheSameVerdictsAndReasonsUnderBothValidators) {
  dataset fast = tests::etl::flights_dataset();
  ASSERT_TRUE(has_compiled_schema(fast));
  dataset slow = fast;
  slow.fast_schema = false;
  std::string body = tests::etl::flights_blob(blob_format::persistor_v1, 10'000, 37);
  auto ex = extract_records(body);
  ASSERT_TRUE(ex) << ex.error().message;
  std::vector<quarantine_row> qf, qs;
  auto vf = validate_records(fast, *ex, qf);
  auto vs = validate_records(slow, *ex, qs);
  ASSERT_EQ(vf.size(), vs.size());
  for (std::size_t i = 0; i < vf.size(); ++i) EXPECT_EQ(vf[i].record->index, vs[i].record->index);
  ASSERT_EQ(qf.size(), qs.size());
  for (std::size_t i = 0; i < qf.size(); ++i) {
    EXPECT_EQ(qf[i].index, qs[i].index);
    EXPECT_EQ(qf[i].step, qs[i].step);
    EXPECT_EQ(qf[i].reason, qs[i].reason);
  }
  auto rows = transform_records(fast, "flights/x.json", vf, qf);
  EXPECT_EQ(rows.size(), 9963u);
  EXPECT_EQ(qf.size(), 37u);

  // The checker itself accepts every record valijson accepts (the fast path is taken).
  std::ifstream in(tests::source_dir() + "/deploy/datasets/flights.schema.json");
  auto checker = schema_check::compile(json::parse(in));
  ASSERT_TRUE(checker);
  for (const auto& v : vs) EXPECT_TRUE(checker->accepts(v.payload)) << v.record->payload;
}

TEST_F(SchemaCheckTest, FlightFieldMutationsAgreeWithValijson) {
  std::ifstream in(tests::source_dir() + "/deploy/datasets/flights.schema.json");
  const json schema = json::parse(in);
  const json base = json::parse(R"({"date":"2001/01/01 00:47","delay":66,"distance":1750,"origin":"DTW","destination":"LAS"})");
  const std::vector<json> numbers{-1441, -1440, -1, 0, 1, 10000, 10001, 1.0, 1.5, -1440.5, 1e300, "5", nullptr, true,
                                  json::array(), json::object(), 18446744073709551615ull};
  const std::vector<json> codes{"DTW", "DT", "DTWX", "", "dtw", "D\u00e4W", "DT\u00e4", std::string("D\0W", 3), 3, nullptr};
  const std::vector<json> dates{"2001/01/01 00:47", "2001/1/01 00:47", "x2001/01/01 00:47", "2001/01/01 00:47 ",
                                "2001/01/01 00:4a", "2001/01/01T00:47", "2001/01/01 00:47\n", "", "9999/99/99 99:99", 5};
  std::vector<json> values{base, json::array(), "flight", 5, nullptr};
  for (const char* k : {"delay", "distance"})
    for (const auto& n : numbers) {
      json v = base;
      v[k] = n;
      values.push_back(v);
    }
  for (const char* k : {"origin", "destination"})
    for (const auto& c : codes) {
      json v = base;
      v[k] = c;
      values.push_back(v);
    }
  for (const auto& d : dates) {
    json v = base;
    v["date"] = d;
    values.push_back(v);
  }
  for (const char* k : {"date", "delay", "distance", "origin", "destination"}) {
    json v = base;
    v.erase(k);
    values.push_back(v);
  }
  json extra = base;
  extra["extra"] = {1, 2};
  values.push_back(extra);
  // Non-ASCII strings make the checker unsure (valijson decides): not exact there.
  same_verdicts(schema, values, /*exact=*/false);
  std::vector<json> ascii;
  for (const auto& v : values) {
    const std::string s = v.dump(-1, ' ', true);
    // Unsigned values above INT64_MAX wrap inside valijson's adapter: unsure too.
    if (s.find("\\u") == std::string::npos && s.find("18446744073709551615") == std::string::npos) ascii.push_back(v);
  }
  same_verdicts(schema, ascii, /*exact=*/true);
}

TEST_F(SchemaCheckTest, OtherKeywordsOfTheSubsetAgreeWithValijson) {
  const json schema = json::parse(R"({
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "t", "type": "object",
    "required": ["kind", "at"], "additionalProperties": false,
    "properties": {
      "kind": {"enum": ["a", "b"]},
      "at": {"type": "string", "format": "date-time"},
      "day": {"type": "string", "format": "date"},
      "clock": {"type": "string", "format": "time"},
      "n": {"type": ["integer", "null"], "exclusiveMinimum": 0, "exclusiveMaximum": 10},
      "x": {"type": "number", "minimum": -1.5, "maximum": 2.5},
      "tag": {"type": "string", "pattern": "^(ab|cd)+$"},
      "code": {"type": "string", "pattern": "[A-F0-9]{2,4}-\\d?x*"},
      "any": {"pattern": "^z"},
      "nested": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string", "minLength": 1}}}
    }})");
  const json base = json::parse(R"({"kind":"a","at":"2026-11-21T12:00:00Z"})");
  std::vector<json> values{base, json::object(), json::array(), "x"};
  auto with = [&](const char* k, json v) {
    json o = base;
    o[k] = std::move(v);
    values.push_back(o);
  };
  for (json v : {json("a"), json("b"), json("c"), json(1), json(nullptr)}) with("kind", v);
  for (json v : {json("2026-11-21T12:00:00Z"), json("2026-11-21t12:00:00z"), json("2026-11-21T12:00:00.5+02:00"),
                 json("2026-02-30T12:00:00Z"), json("2026-02-29T23:59:60Z"), json("2026-04-31T12:00:00Z"),
                 json("2026-13-01T12:00:00Z"), json("2026-11-21 12:00:00Z"), json("2026-11-21T24:00:00Z"),
                 json("2026-11-21T12:00:00"), json("12026-11-21T12:00:00-23:59"),
                 json("2026-11-21T12:00:00.Z"), json(5)})
    with("at", v);
  for (json v : {json("2026-11-21"), json("2026-02-29"), json("2026-02-30"), json("2026-11-21x"), json("26-1-1")}) with("day", v);
  for (json v : {json("12:00:00Z"), json("23:59:60+01:00"), json("24:00:00Z"), json("12:00:00")}) with("clock", v);
  for (json v : {json(0), json(1), json(9), json(10), json(nullptr), json(5.0), json("5")}) with("n", v);
  for (json v : {json(-1.5), json(-1.6), json(2.5), json(2.6), json(0), json(true)}) with("x", v);
  for (json v : {json("ab"), json("abcd"), json("abc"), json(""), json("cdab")}) with("tag", v);
  for (json v : {json("A1-"), json("zzA1-x"), json("A-"), json("ABCDE-7xx"), json("a1-"), json("FF-9")}) with("code", v);
  for (json v : {json("zed"), json("ed"), json(7)}) with("any", v);
  for (json v : {json::parse(R"({"id":"x"})"), json::parse(R"({"id":""})"), json::parse(R"({})"), json(1)}) with("nested", v);
  with("unknown", 1);
  same_verdicts(schema, values);
  // valijson's date-time regex takes '|' as an offset sign ("[\\+|\\-]"): the checker is unsure
  // there and leaves it to valijson, so the verdict is still the same.
  json bar = base;
  bar["at"] = "2026-11-21T12:00:00|02:00";
  same_verdicts(schema, {bar}, /*exact=*/false);
}

TEST_F(SchemaCheckTest, PatternsAgreeWithStdRegexSearch) {
  const std::vector<std::string> patterns{"^[0-9]{4}/[0-9]{2}$", "a+b*c?", "^x.y$", "[^a-c]{2,}", "\\.\\-$",
                                          "^[-a]{1,2}$", "^\\w+@\\d$", "b{0}c", "^a{2,3}$", "^$"};
  const std::vector<std::string> subjects{"", "2001/01", "2001/1", "x2001/01", "abc", "ac", "bbb", "xzy", "x\ny",
                                          "dd", ".-", "a.-", "-", "--a", "foo@1", "foo@", "c", "aa", "aaaa"};
  for (const auto& p : patterns) {
    auto checker = schema_check::compile(json{{"type", "string"}, {"pattern", p}});
    ASSERT_TRUE(checker) << p;
    const std::regex re(p);
    for (const auto& s : subjects) EXPECT_EQ(checker->accepts(json(s)), std::regex_search(s, re)) << p << " on " << s;
  }
}

TEST_F(SchemaCheckTest, SchemasOutsideTheSubsetStayWithValijson) {
  for (const char* s : {R"({"$ref": "#/definitions/x", "definitions": {"x": {}}})", R"({"items": {"type": "string"}})",
                        R"({"oneOf": [{"type": "string"}]})", R"({"properties": {"a": {"allOf": []}}})",
                        R"({"enum": [1, 2]})", R"({"type": "float"})", R"({"additionalProperties": {"type": "string"}})", "true"})
    EXPECT_FALSE(schema_check::compile(json::parse(s))) << s;
  // Such a dataset still validates, with valijson alone.
  dataset d = with_schema(json::parse(R"({"items": {"type": "string"}})"));
  EXPECT_FALSE(has_compiled_schema(d));
  EXPECT_EQ(verdict(d, R"(["a"])"), "");
  EXPECT_NE(verdict(d, R"([1])"), "");
}

} // namespace
} // namespace shoal::workers::etl
