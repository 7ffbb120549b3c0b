// The SQLite sink against the exactly-once checks (sink_checks.hpp), on a fresh file per test.

#include "tests/workers/etl/sink_checks.hpp"

#include <gtest/gtest.h>

#include <filesystem>

namespace shoal::workers::etl {
namespace {

class SqliteSinkTest : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("shoal-etl-sqlite-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  tests::etl::sink_factory factory() {
    return [path = (dir_ / "etl.db").string()]() -> std::unique_ptr<sql_sink> {
      auto s = open_sqlite_sink({.path = path, .busy_timeout_ms = 30'000, .synchronous = "NORMAL"});
      EXPECT_TRUE(s) << s.error().message;
      return s ? std::move(*s) : nullptr;
    };
  }
  std::filesystem::path dir_;
};

TEST_F(SqliteSinkTest, LoadsTenThousandRecordsQuarantiningThe37Invalid) {
  tests::etl::check_ten_thousand_with_37_invalid(factory());
}
TEST_F(SqliteSinkTest, ReloadAfterCommitIsANoOp) { tests::etl::check_reload_after_commit_is_a_no_op(factory()); }
TEST_F(SqliteSinkTest, ResentMessageLandsOnce) { tests::etl::check_resent_message_lands_once(factory()); }
TEST_F(SqliteSinkTest, ResentMessageLandsOnceWithLedgerKeys) {
  tests::etl::check_resent_message_lands_once(factory(), true);
}
TEST_F(SqliteSinkTest, TwoWorkersRacingOnOneBlobLoadItOnce) { tests::etl::check_two_workers_racing_load_once(factory()); }
TEST_F(SqliteSinkTest, FailedLoadRollsBackEverything) { tests::etl::check_failed_load_rolls_back(factory()); }

TEST_F(SqliteSinkTest, LoadManyLoadsSeveralBlobsInOneTransactionEachByItsLedgerRow) {
  tests::etl::check_load_many_is_one_transaction(factory());
}

TEST_F(SqliteSinkTest, UsesWalAndRewritesPlaceholdersForPostgres) {
  auto s = factory()();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->engine(), "sqlite");
  auto [sql, n] = to_dollar_placeholders("INSERT INTO t VALUES (?, '?', ?)");
  EXPECT_EQ(sql, "INSERT INTO t VALUES ($1, '?', $2)");
  EXPECT_EQ(n, 2u);
}

} // namespace
} // namespace shoal::workers::etl
