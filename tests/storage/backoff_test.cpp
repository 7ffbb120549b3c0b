// Unit tests of the one backoff policy (storage/backoff.hpp), used by the pipeline's retries
// and the catalog's lost races.

#include "storage/backoff.hpp"

#include <gtest/gtest.h>

namespace shoal::storage {
namespace {

using std::chrono::milliseconds;

TEST(BackoffTest, DoublesPerAttemptAroundTheBase) {
  const backoff_policy p{milliseconds{200}, milliseconds{30'000}, 0.2};
  EXPECT_EQ(backoff_delay(p, 1, 0.5), milliseconds{200});
  EXPECT_EQ(backoff_delay(p, 2, 0.5), milliseconds{400});
  EXPECT_EQ(backoff_delay(p, 3, 0.5), milliseconds{800});
  EXPECT_EQ(backoff_delay(p, 1, 0.0), milliseconds{160}); // −20 %
  EXPECT_EQ(backoff_delay(p, 1, 1.0), milliseconds{240}); // +20 %
}

TEST(BackoffTest, TheCapBoundsTheDelayJitterIncluded) {
  const backoff_policy p{milliseconds{2}, milliseconds{200}, 0.5};
  EXPECT_EQ(backoff_delay(p, 7, 0.5), milliseconds{128});
  EXPECT_EQ(backoff_delay(p, 8, 0.5), milliseconds{200});
  EXPECT_EQ(backoff_delay(p, 8, 1.0), milliseconds{200});
  EXPECT_EQ(backoff_delay(p, 1'000'000, 1.0), milliseconds{200}); // no overflow
}

TEST(BackoffTest, OutOfRangeInputsAreClamped) {
  const backoff_policy p{milliseconds{100}, milliseconds{10'000}, 3.0}; // jitter > 1 → 1
  EXPECT_EQ(backoff_delay(p, 0, 0.5), milliseconds{100});   // attempt < 1 counts as 1
  EXPECT_EQ(backoff_delay(p, -5, -1.0), milliseconds{0});   // unit < 0 → 0, jitter 1 → ×0
  EXPECT_EQ(backoff_delay(p, 1, 7.0), milliseconds{200});   // unit > 1 → 1, jitter 1 → ×2
}

TEST(BackoffTest, TheRandomUnitStaysInItsRange) {
  for (int i = 0; i < 1000; ++i) {
    const double u = backoff_random_unit();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

} // namespace
} // namespace shoal::storage
