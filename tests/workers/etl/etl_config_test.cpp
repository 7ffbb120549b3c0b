// The [etl] section of shoal.toml: keys, defaults, validation, unknown keys.

#include "workers/config.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

namespace shoal::workers {
namespace {

class EtlConfigTest : public ::testing::Test {
protected:
  void TearDown() override { std::filesystem::remove(path_); }
  result<config> load(const std::string& text) {
    std::ofstream(path_) << text;
    return load_config(path_);
  }
  std::filesystem::path path_ = std::filesystem::temp_directory_path() / ("shoal-etl-cfg-" + std::to_string(::getpid()) + ".toml");
};

TEST_F(EtlConfigTest, DefaultsAndOverrides) {
  auto d = load("");
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ(d->etl.queue, "etl");
  EXPECT_EQ(d->etl.sqlite_path, "./shoal.db");
  EXPECT_EQ(d->etl.runs_table, "shoalruns");
  EXPECT_TRUE(d->etl.postgres_url.empty());
  auto c = load("[etl]\nqueue = \"loads\"\ndatasets_dir = \"/etc/shoal/datasets\"\n"
                "postgres_url = \"postgresql://shoal@127.0.0.1:5432/shoal\"\nclaim_max = 4\n");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->etl.queue, "loads");
  EXPECT_EQ(c->etl.datasets_dir, "/etc/shoal/datasets");
  EXPECT_EQ(c->etl.claim_max, 4u);
}

TEST_F(EtlConfigTest, RejectsUnknownKeysAndBadValues) {
  auto unknown = load("[etl]\nsqlite = \"x.db\"\n");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, errc::parse);
  EXPECT_NE(unknown.error().message.find("etl.sqlite"), std::string::npos);
  auto url = load("[etl]\npostgres_url = \"mysql://x\"\n");
  ASSERT_FALSE(url);
  EXPECT_NE(url.error().message.find("etl.postgres_url"), std::string::npos);
  auto queue = load("[etl]\nqueue = \"a-b\"\n");
  ASSERT_FALSE(queue);
  EXPECT_NE(queue.error().message.find("etl.queue"), std::string::npos);
}

} // namespace
} // namespace shoal::workers
