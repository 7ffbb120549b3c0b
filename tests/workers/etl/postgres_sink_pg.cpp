// The PostgreSQL sink against the exactly-once checks (sink_checks.hpp), on the server the
// `postgres` CTest fixture starts (tests/support/postgres_launcher.sh). Each test starts from
// empty tables. Run by hand: $SHOAL_TEST_PG_URL=postgresql://… overrides the fixture's URL file.

#include "tests/workers/etl/sink_checks.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <unistd.h>
#include <fstream>

namespace shoal::workers::etl {
namespace {

std::string pg_url() {
  if (const char* u = std::getenv("SHOAL_TEST_PG_URL"); u && *u) return u;
  std::ifstream in(SHOAL_TEST_PG_URL_FILE);
  std::string url;
  std::getline(in, url);
  return url;
}

class PostgresSinkTest : public ::testing::Test {
protected:
  void SetUp() override {
    const std::string base = pg_url();
    ASSERT_FALSE(base.empty()) << "no PostgreSQL: the `postgres` fixture did not run (" SHOAL_TEST_PG_URL_FILE ")";
    // CTest runs these tests in parallel processes: each gets its own schema (search_path).
    std::string schema = "t" + std::to_string(::getpid()) + "_";
    for (char ch : std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()))
      schema += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto admin = open_postgres_sink(base);
    ASSERT_TRUE(admin) << admin.error().message;
    ASSERT_TRUE((*admin)->execute("DROP SCHEMA IF EXISTS " + schema + " CASCADE; CREATE SCHEMA " + schema));
    url_ = base + (base.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + schema;
  }
  tests::etl::sink_factory factory() {
    return [url = url_]() -> std::unique_ptr<sql_sink> {
      auto s = open_postgres_sink(url);
      EXPECT_TRUE(s) << s.error().message;
      return s ? std::move(*s) : nullptr;
    };
  }
  std::string url_;
};

TEST_F(PostgresSinkTest, LoadsTenThousandRecordsQuarantiningThe37Invalid) {
  tests::etl::check_ten_thousand_with_37_invalid(factory());
}
TEST_F(PostgresSinkTest, ReloadAfterCommitIsANoOp) { tests::etl::check_reload_after_commit_is_a_no_op(factory()); }
TEST_F(PostgresSinkTest, ResentMessageLandsOnce) { tests::etl::check_resent_message_lands_once(factory()); }
TEST_F(PostgresSinkTest, ResentMessageLandsOnceWithLedgerKeys) {
  tests::etl::check_resent_message_lands_once(factory(), true);
}
TEST_F(PostgresSinkTest, TwoWorkersRacingOnOneBlobLoadItOnce) { tests::etl::check_two_workers_racing_load_once(factory()); }
TEST_F(PostgresSinkTest, FailedLoadRollsBackEverything) { tests::etl::check_failed_load_rolls_back(factory()); }
TEST_F(PostgresSinkTest, LoadManyLoadsSeveralBlobsInOneTransactionEachByItsLedgerRow) {
  tests::etl::check_load_many_is_one_transaction(factory());
}

TEST_F(PostgresSinkTest, BadUrlIsAnIoError) {
  auto s = open_postgres_sink("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::io);
}

} // namespace
} // namespace shoal::workers::etl
