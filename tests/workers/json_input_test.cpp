// Unit tests of reading a JSON array without a DOM (workers/json_input.hpp): what `shoal send`
// sends per element and how `shoal run` counts records, against nlohmann's reading.

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

} // namespace
} // namespace shoal::workers
