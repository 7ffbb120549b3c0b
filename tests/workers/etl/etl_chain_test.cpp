// The ETL chain of stage actors (workers/etl/etl_chain.hpp) without storage: blobs given in
// memory, a SQLite file per test. Covers: the four stages in order with the same results as
// run_pipeline, a parse error with its position, a stage that throws or loses its SQL
// connection (the blob fails with a clear error, the supervisor restarts the stage with a new
// connection, the next blob loads), and the chain giving up when the stage cannot restart.

#include "tests/workers/etl/etl_test_data.hpp"
#include "workers/etl/etl_chain.hpp"
#include "workers/etl/orchestrator.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <stdexcept>

namespace shoal::workers::etl {
namespace {

/// A sink that delegates to SQLite but fails its next load: by throwing, or with errc::io (as a
/// lost connection does).
class faulty_sink final : public sql_sink {
public:
  enum class fault { none, throw_once, io_once };
  faulty_sink(std::unique_ptr<sql_sink> inner, fault f) : inner_(std::move(inner)), fault_(f) {}
  std::string_view engine() const noexcept override { return inner_->engine(); }
  result<void> prepare(std::string_view ddl) override { return inner_->prepare(ddl); }
  result<load_outcome> load(const load_batch& b) override {
    auto f = std::exchange(fault_, fault::none);
    if (f == fault::throw_once) throw std::runtime_error("sink exploded");
    if (f == fault::io_once) return fail(errc::io, "server closed the connection unexpectedly");
    return inner_->load(b);
  }
  result<std::optional<ledger_entry>> ledger(std::string_view blob) override { return inner_->ledger(blob); }
  result<std::int64_t> scalar(std::string_view sql) override { return inner_->scalar(sql); }
  result<void> execute(std::string_view sql) override { return inner_->execute(sql); }

private:
  std::unique_ptr<sql_sink> inner_;
  fault fault_;
};

class EtlChainTest : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("shoal-etl-chain-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    flights_ = tests::etl::flights_dataset();
    ASSERT_FALSE(flights_.name.empty());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  result<std::unique_ptr<sql_sink>> open(const std::string& file = "etl.db") {
    return open_sqlite_sink({.path = (dir_ / file).string(), .busy_timeout_ms = 30'000, .synchronous = "NORMAL"});
  }
  std::int64_t count(const std::string& sql) {
    auto s = open();
    EXPECT_TRUE(s) << s.error().message;
    auto r = (*s)->scalar(sql);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : -1;
  }
  /// A chain whose first sink fails with `f`; reopening counts in opened_ (the first open too).
  std::unique_ptr<etl_chain> chain(faulty_sink::fault f, std::uint32_t max_restarts = 5, bool reopen_fails = false) {
    etl_chain_options o;
    o.open_sink = [this, reopen_fails]() -> result<std::unique_ptr<sql_sink>> {
      ++opened_;
      if (reopen_fails) return fail(errc::io, "could not connect to server");
      return open();
    };
    o.max_restarts = max_restarts;
    auto first = open();
    EXPECT_TRUE(first) << first.error().message;
    ++opened_;
    auto c = etl_chain::start(std::move(o), std::make_unique<faulty_sink>(std::move(*first), f));
    EXPECT_TRUE(c) << c.error().describe();
    return c ? std::move(*c) : nullptr;
  }

  std::filesystem::path dir_;
  dataset flights_;
  std::atomic<int> opened_{0};
};

TEST_F(EtlChainTest, RunsABlobThroughTheFourStagesLikeRunPipeline) {
  const std::string body = tests::etl::flights_blob(blob_format::persistor_v1, 10'000, 37);
  const std::string name = "flights/2026/11/21/12/host-p1-00000001.json";
  auto c = chain(faulty_sink::fault::none);
  ASSERT_TRUE(c);
  auto out = c->run_in_memory(flights_, name, body, "chain");
  ASSERT_TRUE(out) << out.error().describe();
  EXPECT_EQ(out->load.inserted, 9963u);
  EXPECT_EQ(out->load.quarantined, 37u);
  ASSERT_EQ(out->steps.size(), 4u);
  const char* names[] = {"extract", "validate", "transform", "load"};
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(out->steps[i].step, names[i]);
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 9963);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_quarantine"), 37);

  // The same step functions called directly give the same per-step counts.
  auto other = open("direct.db");
  ASSERT_TRUE(other);
  auto direct = run_pipeline(flights_, name, body, **other, "direct");
  ASSERT_TRUE(direct) << direct.error().describe();
  ASSERT_EQ(direct->steps.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(direct->steps[i].records_in, out->steps[i].records_in) << names[i];
    EXPECT_EQ(direct->steps[i].records_out, out->steps[i].records_out) << names[i];
    EXPECT_EQ(direct->steps[i].quarantined, out->steps[i].quarantined) << names[i];
  }
  // Loading it again: the ledger holds it.
  auto again = c->run_in_memory(flights_, name, body, "chain");
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_TRUE(again->load.already_loaded);
  EXPECT_EQ(c->restarts(), 0u);
}

TEST_F(EtlChainTest, UnparsableBlobFailsWithItsPositionAndTheChainGoesOn) {
  auto c = chain(faulty_sink::fault::none);
  ASSERT_TRUE(c);
  auto bad = c->run_in_memory(flights_, "flights/bad.json", "{\"DATA\":\"{}\",\"METADATA\":{\"message_id\":\"1\"}}\n\n{oops}\n");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::parse);
  EXPECT_NE(bad.error().message.find("line 3"), std::string::npos) << bad.error().message;
  auto good = c->run_in_memory(flights_, "flights/good.json", tests::etl::flights_blob(blob_format::ndjson, 100, 0));
  ASSERT_TRUE(good) << good.error().describe();
  EXPECT_EQ(good->load.inserted, 100u);
  EXPECT_EQ(c->restarts(), 0u); // a bad blob is not a broken stage
}

TEST_F(EtlChainTest, ThrowingStageFailsTheBlobAndIsRestarted) {
  auto c = chain(faulty_sink::fault::throw_once);
  ASSERT_TRUE(c);
  const std::string body = tests::etl::flights_blob(blob_format::persistor_v1, 500, 2);
  auto first = c->run_in_memory(flights_, "flights/a.json", body);
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code, errc::io);
  EXPECT_NE(first.error().message.find("ETL stage load failed"), std::string::npos) << first.error().message;
  EXPECT_NE(first.error().message.find("sink exploded"), std::string::npos) << first.error().message;
  // The supervisor restarted the load stage with a new connection; the retry loads the blob.
  auto retry = c->run_in_memory(flights_, "flights/a.json", body);
  ASSERT_TRUE(retry) << retry.error().describe();
  EXPECT_EQ(retry->load.inserted, 498u);
  EXPECT_EQ(c->restarts(), 1u);
  EXPECT_EQ(opened_.load(), 2);
  EXPECT_FALSE(c->broken());
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 498);
}

TEST_F(EtlChainTest, LostSqlConnectionFailsTheBlobAndReconnects) {
  auto c = chain(faulty_sink::fault::io_once);
  ASSERT_TRUE(c);
  const std::string body = tests::etl::flights_blob(blob_format::ndjson, 300, 3);
  auto first = c->run_in_memory(flights_, "flights/b.json", body);
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code, errc::io);
  EXPECT_NE(first.error().message.find("new connection"), std::string::npos) << first.error().message;
  auto retry = c->run_in_memory(flights_, "flights/b.json", body);
  ASSERT_TRUE(retry) << retry.error().describe();
  EXPECT_EQ(retry->load.inserted, 297u);
  EXPECT_EQ(c->restarts(), 1u);
  EXPECT_EQ(opened_.load(), 2);
}

TEST_F(EtlChainTest, GivesUpWhenTheStageCannotBeRestarted) {
  auto c = chain(faulty_sink::fault::io_once, 1, true); // reconnecting fails: the restart fails too
  ASSERT_TRUE(c);
  const std::string body = tests::etl::flights_blob(blob_format::ndjson, 50, 0);
  auto first = c->run_in_memory(flights_, "flights/c.json", body);
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code, errc::io);
  // The next blob waits in the load stage's mailbox until the supervisor gives up, then fails.
  auto next = c->run_in_memory(flights_, "flights/d.json", body);
  ASSERT_FALSE(next);
  EXPECT_EQ(next.error().code, errc::io);
  EXPECT_TRUE(c->broken());
  auto after = c->run_in_memory(flights_, "flights/e.json", body);
  ASSERT_FALSE(after);
  EXPECT_NE(after.error().message.find("gave up"), std::string::npos) << after.error().message;
}

} // namespace
} // namespace shoal::workers::etl
