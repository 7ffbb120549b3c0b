#include "workers/config.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace shoal::workers {
namespace {

class ConfigTest : public ::testing::Test {
protected:
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("shoal-config-test-" + std::to_string(::getpid()));
  void SetUp() override {
    std::filesystem::create_directories(dir);
    ::unsetenv("SHOAL_WORK_LEASE_MS");
    ::unsetenv("AZURE_STORAGE_CONNECTION_STRING");
  }
  void TearDown() override {
    std::filesystem::remove_all(dir);
    ::unsetenv("SHOAL_WORK_LEASE_MS");
    ::unsetenv("AZURE_STORAGE_CONNECTION_STRING");
  }
  std::filesystem::path write(const std::string& text) {
    auto p = dir / "shoal.toml";
    std::ofstream(p) << text;
    return p;
  }
};

TEST_F(ConfigTest, DefaultsAreValidAndNameNoStorage) {
  auto c = load_config({});
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->work.table, "shoalwork");
  EXPECT_EQ(c->work.shards, 16u);
  EXPECT_EQ(c->work.lease_ms, 30000u);
  EXPECT_EQ(c->work.claim_batch, 100u);
  // No silent fallback to the emulator (issue 15): cmd::load decides what "none" means.
  EXPECT_EQ(c->storage.connection_string, "");
}

TEST_F(ConfigTest, FileThenEnvironmentOverride) {
  auto p = write("[work]\nlease_ms = 20000\nshards = 8\n[log]\nlevel = \"debug\"\n");
  ::setenv("SHOAL_WORK_LEASE_MS", "12000", 1);
  ::setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true;", 1);
  auto c = load_config(p);
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->work.lease_ms, 12000u);
  EXPECT_EQ(c->work.shards, 8u);
  EXPECT_EQ(c->log.level, "debug");
  EXPECT_EQ(c->storage.connection_string, "UseDevelopmentStorage=true;");
}

TEST_F(ConfigTest, UnknownKeyIsNamed) {
  auto c = load_config(write("[work]\nlease_secs = 3\n"));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::parse);
  EXPECT_NE(c.error().message.find("work.lease_secs"), std::string::npos) << c.error().message;
}

TEST_F(ConfigTest, SyntaxErrorGivesLineAndColumn) {
  auto c = load_config(write("[work]\nlease_ms = = 3\n"));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::parse);
  EXPECT_NE(c.error().message.find("shoal.toml:2:"), std::string::npos) << c.error().message;
}

TEST_F(ConfigTest, WrongTypeAndBadRangeAreRefused) {
  auto wrong = load_config(write("[work]\nshards = \"many\"\n"));
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message.find("work.shards"), std::string::npos);
  auto range = load_config(write("[work]\nclaim_batch = 101\n"));
  ASSERT_FALSE(range);
  EXPECT_EQ(range.error().code, errc::invalid_argument);
  EXPECT_NE(range.error().message.find("work.claim_batch"), std::string::npos);
  auto relation = load_config(write("[work]\nlease_ms = 5000\nlease_renew_ms = 5000\n"));
  ASSERT_FALSE(relation);
  EXPECT_NE(relation.error().message.find("lease_renew_ms"), std::string::npos);
}

TEST_F(ConfigTest, BadEnvironmentValueIsNamed) {
  ::setenv("SHOAL_WORK_LEASE_MS", "soon", 1);
  auto c = load_config({});
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("SHOAL_WORK_LEASE_MS"), std::string::npos);
}

TEST_F(ConfigTest, MissingFileIsAnIoError) {
  auto c = load_config(dir / "nope.toml");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::io);
}

} // namespace
} // namespace shoal::workers
