// The [web] keys (workers/config.hpp): defaults, environment overrides, range checks.

#include "workers/config.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

namespace shoal::workers {
namespace {

TEST(WebConfig, IsOffAndLoopbackByDefault) {
  config c;
  EXPECT_EQ(c.web.port, 0u);
  EXPECT_EQ(c.web.address, "127.0.0.1");
  EXPECT_TRUE(c.web.token_file.empty());
  EXPECT_TRUE(validate(c));
}

TEST(WebConfig, EnvironmentSetsThePortAndBadValuesAreNamed) {
  ::setenv("SHOAL_WEB_PORT", "8080", 1);
  auto c = load_config({});
  ::unsetenv("SHOAL_WEB_PORT");
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->web.port, 8080u);

  config bad;
  bad.web.port = 70000;
  auto r = validate(bad);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("web.port"), std::string::npos) << r.error().message;
  bad = config{};
  bad.web.refresh_ms = 10;
  ASSERT_FALSE(validate(bad));
  bad = config{};
  bad.web.sample_ms = 0;
  ASSERT_FALSE(validate(bad));
  bad = config{};
  bad.web.address.clear();
  ASSERT_FALSE(validate(bad));
}

} // namespace
} // namespace shoal::workers
