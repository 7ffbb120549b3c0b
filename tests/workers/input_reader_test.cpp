// Unit tests of reading input (workers/cmd/input_reader.hpp): a JSON array without a DOM — what
// `shoal send` sends per element and how `shoal run` counts records, against nlohmann's
// reading — CSV records, and input_reader, the one reader of `shoal send` and `shoal records`.

#include "workers/cmd/input_reader.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <sstream>
#include <tuple>
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

// Every item of `text` read as `f`: "number|text|fields joined by '|'|problem".
std::vector<std::string> read_all(const std::string& text, input_format f) {
  std::istringstream in(text);
  auto r = input_reader::open(in, f, "t");
  EXPECT_TRUE(r) << (r ? "" : r.error().message);
  std::vector<std::string> out;
  if (!r)
    return out;
  while (auto item = r->next()) {
    std::string row = std::to_string(item->number) + "|" + item->text + "|";
    for (const auto& field : item->fields)
      row += "[" + field + "]";
    out.push_back(row + "|" + item->problem);
  }
  return out;
}

TEST(InputReader, ACsvQuotedFieldMaySpanLines) {
  // RFC 4180 §2.6: a quoted field holds line breaks as they stand; numbers are first lines.
  const std::string text = "id,payload\n1,\"two\nlines\"\n\n2,\"a \"\"quote\"\"\nand\r\nthree\"\r\n3,plain\n";
  std::istringstream in(text);
  auto r = input_reader::open(in, input_format::csv, "t");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header(), (std::vector<std::string>{"id", "payload"}));
  EXPECT_EQ(read_all(text, input_format::csv),
            (std::vector<std::string>{"2|1,\"two\nlines\"|[1][two\nlines]|",
                                      "5|2,\"a \"\"quote\"\"\nand\r\nthree\"\r|[2][a \"quote\"\nand\r\nthree]|",
                                      "8|3,plain|[3][plain]|"}));
}

TEST(InputReader, ACsvQuoteLeftOpenIsAProblemNamingTheRecordsFirstLine) {
  const auto rows = read_all("a,b\n1,2\n3,\"never\nclosed\n4,5\n", input_format::csv);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], "2|1,2|[1][2]|");
  EXPECT_EQ(rows[1], "3|3,\"never\nclosed\n4,5||line 3: unclosed quote");
}

TEST(InputReader, RefusesACsvWithoutAHeaderAndAJsonThatIsNotOneArray) {
  for (const auto& [text, f, what] : std::vector<std::tuple<std::string, input_format, std::string>>{
           {"", input_format::csv, "empty CSV"},
           {"\n \n", input_format::csv, "empty CSV"},
           {"\"a,b\n", input_format::csv, "unclosed quote"},
           {"{\"a\": 1}", input_format::json, "is not a JSON array"},
           {"[1, 2", input_format::json, "is not a JSON array"},
           {"[1] [2]", input_format::json, "is not a JSON array"}}) {
    std::istringstream in(text);
    auto r = input_reader::open(in, f, "in.x");
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(r.error().code, errc::parse) << text;
    EXPECT_NE(r.error().message.find("in.x"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(what), std::string::npos) << r.error().message;
  }
  std::string deep = "[" + std::string(200, '[') + std::string(200, ']') + "]";
  std::istringstream in(deep);
  auto r = input_reader::open(in, input_format::json, "deep.json");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_NE(r.error().message.find("nests deeper than 128 levels"), std::string::npos) << r.error().message;
}

TEST(InputReader, JsonElementsAndNdjsonLinesAreNumberedAndBlankLinesSkipped) {
  EXPECT_EQ(read_all(" [ \"a\" , {\"b\": [1, 2]},\n3 ]", input_format::json),
            (std::vector<std::string>{"1|\"a\"||", "2|{\"b\": [1, 2]}||", "3|3||"}));
  EXPECT_EQ(read_all("[]", input_format::json), (std::vector<std::string>{}));
  EXPECT_EQ(read_all("{\"a\":1}\r\n\n  \nnot json\n", input_format::ndjson),
            (std::vector<std::string>{"1|{\"a\":1}||", "4|not json||"}));
}

TEST(InputReader, ChoosesTheFormatByNameExtensionOrFirstByte) {
  struct c {
    std::string requested, path, text;
    input_format want;
  };
  for (const auto& k : std::vector<c>{{"csv", "x.json", "[", input_format::csv},
                                      {"json", "x.csv", "a", input_format::json},
                                      {"ndjson", "", "[", input_format::ndjson},
                                      {"auto", "x.csv", "[1]", input_format::csv},
                                      {"auto", "x.jsonl", "[1]", input_format::ndjson},
                                      {"auto", "x.ndjson", "[1]", input_format::ndjson},
                                      {"auto", "x.json", "{}", input_format::json},
                                      {"auto", "x.txt", " \n\t[1]", input_format::json},
                                      {"auto", "", "{\"a\":1}", input_format::ndjson},
                                      {"auto", "", "", input_format::ndjson}}) {
    std::istringstream in(k.text);
    auto f = choose_input_format(k.requested, k.path, in);
    ASSERT_TRUE(f) << k.requested << " " << k.path;
    EXPECT_EQ(*f, k.want) << k.requested << " " << k.path << " " << k.text;
  }
  std::istringstream in("[]");
  auto bad = choose_input_format("xml", "x.xml", in);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_NE(bad.error().message.find("auto, json, ndjson or csv"), std::string::npos) << bad.error().message;
}

} // namespace
} // namespace shoal::workers
