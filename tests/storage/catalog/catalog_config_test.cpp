// The [catalog] section of the configuration (workers/config.hpp), tested with the catalog.

#include "workers/config.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace shoal::workers {
namespace {

class CatalogConfigTest : public ::testing::Test {
protected:
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("shoal-catalog-config-test-" + std::to_string(::getpid()));
  void SetUp() override {
    std::filesystem::create_directories(dir);
    ::unsetenv("SHOAL_CATALOG_TABLE");
  }
  void TearDown() override {
    std::filesystem::remove_all(dir);
    ::unsetenv("SHOAL_CATALOG_TABLE");
  }
  std::filesystem::path write(const std::string& text) {
    auto p = dir / "shoal.toml";
    std::ofstream(p) << text;
    return p;
  }
};

TEST_F(CatalogConfigTest, DefaultsNameTheBlobCatalog) {
  auto c = load_config({});
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->catalog.table, "shoalcatalog");
  EXPECT_EQ(c->catalog.wal_retention_ms, 86'400'000u);
  EXPECT_EQ(c->catalog.stall_timeout_ms, 60'000u);
}

TEST_F(CatalogConfigTest, FileAndEnvironmentOverride) {
  auto p = write("[catalog]\ntable = \"blobs2026\"\nwal_retention_ms = 5000\nstall_timeout_ms = 2000\n");
  auto c = load_config(p);
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->catalog.table, "blobs2026");
  EXPECT_EQ(c->catalog.wal_retention_ms, 5000u);
  EXPECT_EQ(c->catalog.stall_timeout_ms, 2000u);
  ::setenv("SHOAL_CATALOG_TABLE", "fromenv", 1);
  c = load_config(p);
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->catalog.table, "fromenv");
}

TEST_F(CatalogConfigTest, RejectsBadValuesAndUnknownKeys) {
  for (const char* text : {"[catalog]\ntable = \"a-b\"\n", "[catalog]\ntable = \"1abc\"\n",
                           "[catalog]\ntable = \"ab\"\n", "[catalog]\nstall_timeout_ms = 10\n"}) {
    auto c = load_config(write(text));
    ASSERT_FALSE(c) << text;
    EXPECT_EQ(c.error().code, errc::invalid_argument) << text;
  }
  auto c = load_config(write("[catalog]\nretention = 5\n"));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::parse);
  EXPECT_NE(c.error().message.find("catalog.retention"), std::string::npos) << c.error().message;
}

} // namespace
} // namespace shoal::workers
