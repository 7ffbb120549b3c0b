// The PostgreSQL sink against the exactly-once checks (sink_checks.hpp), on the server the
// `postgres` CTest fixture starts (tests/support/postgres_launcher.sh). Each test starts from
// empty tables. Run by hand: $SHOAL_TEST_PG_URL=postgresql://… overrides the fixture's URL file.

#include "tests/workers/etl/sink_checks.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
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
    url_ = pg_url();
    ASSERT_FALSE(url_.empty()) << "no PostgreSQL: the `postgres` fixture did not run (" SHOAL_TEST_PG_URL_FILE ")";
    auto s = open_postgres_sink(url_);
    ASSERT_TRUE(s) << s.error().message;
    ASSERT_TRUE((*s)->execute("DROP TABLE IF EXISTS flights, shoal_etl_ledger, shoal_etl_messages, "
                              "shoal_etl_quarantine, shoal_etl_records"));
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
TEST_F(PostgresSinkTest, TwoWorkersRacingOnOneBlobLoadItOnce) { tests::etl::check_two_workers_racing_load_once(factory()); }
TEST_F(PostgresSinkTest, FailedLoadRollsBackEverything) { tests::etl::check_failed_load_rolls_back(factory()); }

TEST_F(PostgresSinkTest, BadUrlIsAnIoError) {
  auto s = open_postgres_sink("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::io);
}

} // namespace
} // namespace shoal::workers::etl
