// Unit tests of reading input (workers/persistor/json_input.hpp): a JSON array without a DOM — what
// `shoal send` sends per element and how `shoal run` counts records, against nlohmann's
// reading — and CSV lines.

#include "workers/persistor/json_input.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace shoal::workers {
namespace {

std::vector<std::string> elements(const std::string& text) {
  std::vector<std::string> out;
  json_array_cursor c(text);
  while (auto e = c.next()) {
    std::string m;
    append_minified(m, *e);
    out.push_back(m);
  }
  EXPECT_EQ(c.count(), out.size());
  return out;
}

TEST(JsonInputTest, CutsAnArrayIntoItsElementsAsNlohmannDumpsThem) {
  const std::string text = R"( [ {"a": 1, "b": [1, 2, {"c": "x, ]}"}]},
    "s p a c e", 12.5 , true, null, [], {} ,
    {"date":"2001/01/01 00:47","delay":66,"t":0.0}, "esc \" ] , \\" ]
)";
  ASSERT_TRUE(is_json_array(text));
  const auto got = elements(text);
  const auto j = nlohmann::json::parse(text);
  ASSERT_EQ(got.size(), j.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(nlohmann::json::parse(got[i]), j[i]) << got[i];
    EXPECT_EQ(got[i], j[i].dump()) << "element " << i;
  }
  EXPECT_TRUE(elements("[]").empty());
  EXPECT_TRUE(elements(" [ ] ").empty());
}

TEST(JsonInputTest, RefusesWhatIsNotOneJsonArray) {
  for (const std::string bad : {"", "{}", "1", "[1,", "[1] [2]", "[1,]", "[\"\xff\"]", "\xef\xbb\xbf[1]", "[{\"a\":}]"})
    EXPECT_FALSE(is_json_array(bad)) << bad;
  EXPECT_TRUE(is_json_array("\n[1, {\"a\": [2]}]\n"));
}

TEST(JsonInputTest, MinifiesOnlyOutsideStrings) {
  std::string out;
  append_minified(out, "{ \"a b\" : [ 1 ,\t\"c\\\" d\" ]\r\n}");
  EXPECT_EQ(out, "{\"a b\":[1,\"c\\\" d\"]}");
}

// csv_fields: RFC 4180 §2 within a line, the splitter of both `shoal send` and `shoal records`.
TEST(CsvFields, SplitsQuotedAndPlainFieldsPerRfc4180) {
  using v = std::vector<std::string>;
  EXPECT_EQ(*csv_fields("a,b,c", 1), (v{"a", "b", "c"}));
  EXPECT_EQ(*csv_fields("", 1), (v{""}));
  EXPECT_EQ(*csv_fields("a,,", 1), (v{"a", "", ""}));
  EXPECT_EQ(*csv_fields(R"("x,y","say ""hi""",z)", 1), (v{"x,y", "say \"hi\"", "z"}));
  EXPECT_EQ(*csv_fields("a,\"\"\r", 1), (v{"a", ""}));         // CRLF line, empty quoted field
  EXPECT_EQ(*csv_fields("\"a\rb\",c", 1), (v{"a\rb", "c"}));   // '\r' inside quotes is kept
}

TEST(CsvFields, AnUnclosedQuoteIsAnErrorNamingItsLine) {
  for (const char* bad : {"\"abc", "a,\"b,c", "a,\"b\"\"", "\""}) {
    auto f = csv_fields(bad, 42);
    ASSERT_FALSE(f) << bad;
    EXPECT_EQ(f.error().code, errc::parse);
    EXPECT_NE(f.error().message.find("line 42"), std::string::npos) << f.error().message;
    EXPECT_NE(f.error().message.find("unclosed quote"), std::string::npos) << f.error().message;
  }
}

} // namespace
} // namespace shoal::workers
