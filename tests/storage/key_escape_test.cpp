// storage::escape_table_key, the one key escaping of the catalog and the work table. The escaped
// form is stored in tables, so these vectors (taken from the catalog and claim tests written
// against the two former copies) pin it byte for byte.

#include "storage/key_escape.hpp"

#include "storage/catalog.hpp"
#include "storage/table_entity.hpp"
#include "workers/claim/key_escape.hpp" // the work table's front end must agree byte for byte

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace shoal::storage {
namespace {

// (raw, escaped) pairs from tests/storage/catalog/catalog_test.cpp and
// tests/workers/claim/claim_test.cpp, plus the edges of each escaped range.
const std::vector<std::pair<std::string, std::string>> vectors = {
    {"flights/2001/01/05/x.json", "flights%2F2001%2F01%2F05%2Fx.json"},
    {"a%b#c?d\\e", "a%25b%23c%3Fd%5Ce"},
    {std::string("t\x01\x7f", 3), "t%01%7F"},
    {"\xC2\x85", "%C2%85"},
    {"caf\xC3\xA9 ok", "caf\xC3\xA9 ok"},
    {"a/b\\c#d?e%f", "a%2Fb%5Cc%23d%3Fe%25f"},
    {std::string("x\x01\x1f\x7f", 4) + "\xc2\x85" + "\xc3\xa9", "x%01%1F%7F%C2%85\xc3\xa9"},
    {"plain-id_1.json", "plain-id_1.json"},
    {std::string("\x00", 1), "%00"},
    {" ~", " ~"},
    {"\xC2\x80\xC2\x9F", "%C2%80%C2%9F"},
    {"\xC2\xA0", "\xC2\xA0"}, // U+00A0 is allowed in keys
    {"\xE2\x82\xAC", "\xE2\x82\xAC"},
};

TEST(KeyEscapeTest, EscapesTheCharactersKeysCannotHoldAsBefore) {
  for (const auto& [raw, escaped] : vectors) {
    EXPECT_EQ(escape_table_key(raw), escaped) << "raw: " << raw;
    auto back = unescape_table_key(escaped);
    ASSERT_TRUE(back) << back.error().describe();
    EXPECT_EQ(*back, raw);
  }
}

TEST(KeyEscapeTest, CatalogAndWorkTableProduceTheSameKeys) {
  for (const auto& [raw, escaped] : vectors) {
    EXPECT_EQ(catalog::escape_key(raw), escaped) << "raw: " << raw;
    auto w = workers::escape_key(raw);
    ASSERT_TRUE(w) << w.error().describe();
    EXPECT_EQ(*w, escaped) << "raw: " << raw;
  }
  // Every one- and two-byte input that is a valid record id: the same key from both front ends.
  for (int a = 0; a < 256; ++a)
    for (int b = -1; b < 256; ++b) {
      std::string raw(1, static_cast<char>(a));
      if (b >= 0)
        raw += static_cast<char>(b);
      auto w = workers::escape_key(raw);
      if (w) {
        EXPECT_EQ(*w, catalog::escape_key(raw)) << a << ' ' << b;
      }
      EXPECT_TRUE(validate_key(escape_table_key(raw), "RowKey") || !w) << a << ' ' << b;
    }
}

TEST(KeyEscapeTest, IsTotalOnAnyBytes) {
  EXPECT_EQ(escape_table_key(""), "");
  EXPECT_EQ(escape_table_key("\xff/"), "\xff%2F"); // invalid UTF-8 is copied, not refused
  EXPECT_EQ(escape_table_key("\xC2"), "\xC2");     // a lone lead byte at the end
}

TEST(KeyEscapeTest, UnescapeRefusesBrokenEscapes) {
  EXPECT_EQ(*unescape_table_key("%2f%2F"), "//"); // either hex case
  for (const char* bad : {"bad%2", "bad%zz", "%", "%%41", "x%4g"}) {
    auto r = unescape_table_key(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
  }
}

} // namespace
} // namespace shoal::storage
