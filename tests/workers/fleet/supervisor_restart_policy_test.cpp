#include "workers/fleet/restart_policy.hpp"

#include <gtest/gtest.h>

namespace shoal::workers::fleet {
namespace {

using std::chrono::milliseconds;
using tp = restart_policy::time_point;

restart_policy_options small() {
  restart_policy_options o;
  o.intensity = 3;
  o.period = milliseconds(10'000);
  o.backoff = milliseconds(30'000);
  o.first_delay = milliseconds(100);
  o.max_delay = milliseconds(350);
  return o;
}

TEST(RestartPolicyTest, DelaysDoubleThenBackOffPastTheIntensity) {
  restart_policy p(small());
  const tp t0{};
  EXPECT_EQ(p.on_exit(t0), milliseconds(100));
  EXPECT_FALSE(p.backed_off());
  EXPECT_EQ(p.on_exit(t0 + milliseconds(1000)), milliseconds(200));
  EXPECT_EQ(p.on_exit(t0 + milliseconds(2000)), milliseconds(350)); // 400 capped
  EXPECT_EQ(p.recent(t0 + milliseconds(2000)), 3u);
  // A fourth exit within the period: the slot backs off.
  EXPECT_EQ(p.on_exit(t0 + milliseconds(3000)), milliseconds(30'000));
  EXPECT_TRUE(p.backed_off());
  // After the backoff the window starts afresh.
  EXPECT_EQ(p.recent(t0 + milliseconds(3000)), 0u);
  EXPECT_EQ(p.on_exit(t0 + milliseconds(40'000)), milliseconds(100));
  EXPECT_FALSE(p.backed_off());
}

TEST(RestartPolicyTest, RestartsOlderThanThePeriodNoLongerCount) {
  restart_policy p(small());
  const tp t0{};
  (void)p.on_exit(t0);
  (void)p.on_exit(t0 + milliseconds(1000));
  (void)p.on_exit(t0 + milliseconds(2000));
  // 10.5 s later the first two have left the window: this is the second restart in it.
  EXPECT_EQ(p.on_exit(t0 + milliseconds(11'500)), milliseconds(200));
  EXPECT_FALSE(p.backed_off());
  EXPECT_EQ(p.recent(t0 + milliseconds(11'500)), 2u);
}

TEST(RestartPolicyTest, ZeroIntensityAlwaysBacksOff) {
  auto o = small();
  o.intensity = 0;
  restart_policy p(o);
  EXPECT_EQ(p.on_exit(tp{}), milliseconds(30'000));
  EXPECT_TRUE(p.backed_off());
}

TEST(RestartPolicyTest, NewOptionsApplyToTheNextExit) {
  restart_policy p(small());
  (void)p.on_exit(tp{});
  auto o = small();
  o.intensity = 1;
  o.backoff = milliseconds(5000);
  p.set_options(o);
  EXPECT_EQ(p.on_exit(tp{} + milliseconds(10)), milliseconds(5000));
  EXPECT_TRUE(p.backed_off());
}

} // namespace
} // namespace shoal::workers::fleet
