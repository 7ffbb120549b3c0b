#include "workers/dev_storage.hpp"

#include <gtest/gtest.h>

namespace shoal::workers {
namespace {

TEST(DevStorageTest, RecognisesTheDevelopmentStorageShortcut) {
  EXPECT_TRUE(is_development_storage("UseDevelopmentStorage=true"));
  EXPECT_TRUE(is_development_storage("UseDevelopmentStorage=true;"));
  EXPECT_TRUE(is_development_storage(" usedevelopmentstorage = TRUE ; "));
  EXPECT_FALSE(is_development_storage("UseDevelopmentStorage=false"));
  EXPECT_FALSE(is_development_storage(
      "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://myproxy"));
  EXPECT_FALSE(is_development_storage("AccountName=a;AccountKey=b"));
}

TEST(DevStorageTest, PassesOtherConnectionStringsThroughWithoutStartingAnything) {
  const std::string cs = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;";
  auto s = ensure_storage(cs, "/nonexistent/workspace");
  ASSERT_TRUE(s) << s.error().describe();
  EXPECT_EQ(s->connection_string, cs);
  EXPECT_FALSE(s->started.has_value());
}

TEST(DevStorageTest, MissingAzuriteIsAClearError) {
  ::setenv("SHOAL_AZURITE", "/nonexistent/azurite", 1);
  auto exe = default_azurite_executable();
  ::unsetenv("SHOAL_AZURITE");
  EXPECT_EQ(exe, "/nonexistent/azurite");
  azurite_options opts;
  opts.executable = exe;
  opts.workspace = "/tmp";
  auto p = azurite_process::start(opts);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, errc::not_found);
  EXPECT_NE(p.error().message.find("deploy/setup.sh"), std::string::npos);
}

} // namespace
} // namespace shoal::workers
