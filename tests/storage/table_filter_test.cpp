// The $filter builder: typed literals are escaped, combinators parenthesise, limits enforced.

#include "storage/table_filter.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace shoal::storage {
namespace {

TEST(TableFilterTest, BuildsATypedFilterWithoutStringConcatenation) {
  auto f = table_filter::eq("status", "pending") &&
           (table_filter::lt("lease_until", table_time(table_time::duration(0)) + std::chrono::seconds(1'704'164'645)) ||
            !table_filter::eq("done", true));
  ASSERT_TRUE(f.validate()) << f.validate().error().describe();
  EXPECT_EQ(f.str(), "(status eq 'pending') and ((lease_until lt datetime'2024-01-02T03:04:05.0000000Z') or "
                     "(not (done eq true)))");
  EXPECT_EQ(f.comparisons(), 3u);
}

TEST(TableFilterTest, EscapesEveryLiteralForm) {
  EXPECT_EQ(table_filter::eq("name", "O'Brien").str(), "name eq 'O''Brien'");
  EXPECT_EQ(table_filter::eq("name", "''").str(), "name eq ''''''");
  EXPECT_EQ(table_filter::eq("name", "a) or (1 eq 1").str(), "name eq 'a) or (1 eq 1'");
  EXPECT_EQ(table_filter::ge("n", 42).str(), "n ge 42");
  EXPECT_EQ(table_filter::ge("n", -7).str(), "n ge -7");
  EXPECT_EQ(table_filter::gt("n", std::int64_t{42}).str(), "n gt 42L");
  EXPECT_EQ(table_filter::lt("n", 1.5).str(), "n lt 1.5");
  EXPECT_EQ(table_filter::lt("n", 2.0).str(), "n lt 2.0");
  EXPECT_EQ(table_filter::lt("n", 1e300).str(), "n lt 1.0e+300");
  EXPECT_EQ(table_filter::ne("b", false).str(), "b ne false");
  EXPECT_EQ(table_filter::le("t", table_time(table_time::duration(1))).str(),
            "t le datetime'1970-01-01T00:00:00.0000001Z'");
  EXPECT_EQ(table_filter::eq("g", *table_guid::parse("C9DA6455-213D-42C9-9A79-3E9149A57833")).str(),
            "g eq guid'c9da6455-213d-42c9-9a79-3e9149a57833'");
  EXPECT_EQ(table_filter::eq("bin", table_binary{std::string("\x00\x1b\xff", 3)}).str(), "bin eq X'001bff'");
  EXPECT_EQ(table_filter::partition("p'1").str(), "PartitionKey eq 'p''1'");
  EXPECT_EQ(table_filter::compare("RowKey", filter_op::gt, "x").str(), "RowKey gt 'x'");
}

TEST(TableFilterTest, EmptyFiltersDisappearInCombinations) {
  table_filter none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ((none && table_filter::eq("a", 1)).str(), "a eq 1");
  EXPECT_EQ((table_filter::eq("a", 1) || none).str(), "a eq 1");
  EXPECT_TRUE((!none).empty());
  EXPECT_TRUE(none.validate());
}

TEST(TableFilterTest, StartsWithIsARange) {
  EXPECT_EQ(table_filter::starts_with("RowKey", "abc").str(), "(RowKey ge 'abc') and (RowKey lt 'abd')");
  EXPECT_EQ(table_filter::starts_with("RowKey", "it'").str(), "(RowKey ge 'it''') and (RowKey lt 'it(')");
  EXPECT_TRUE(table_filter::starts_with("RowKey", "").empty());
}

TEST(TableFilterTest, EnforcesFifteenComparisons) {
  table_filter f;
  for (int i = 0; i < 15; ++i)
    f = f || table_filter::eq("n", i);
  EXPECT_EQ(f.comparisons(), 15u);
  EXPECT_TRUE(f.validate());
  f = f || table_filter::eq("n", 15);
  auto r = f.validate();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("15"), std::string::npos) << r.error().message;
}

TEST(TableFilterTest, InvalidPartsMakeTheWholeFilterInvalid) {
  auto nan = table_filter::eq("x", std::numeric_limits<double>::quiet_NaN());
  EXPECT_FALSE(nan.validate());
  EXPECT_FALSE((table_filter::eq("a", 1) && nan).validate());
  EXPECT_FALSE((!(nan || table_filter::eq("a", 1))).validate());
  auto injected = table_filter::eq("a eq 1 or b", 1);
  auto r = injected.validate();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("property name"), std::string::npos) << r.error().message;
  EXPECT_FALSE(table_filter::literal(std::numeric_limits<double>::infinity()));
}

} // namespace
} // namespace shoal::storage
