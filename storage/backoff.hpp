#pragma once
// The one backoff policy of shoal: capped exponential backoff with symmetric jitter. Used by
// the storage pipeline between retries of a request and by the catalog after a lost race.

#include <chrono>

namespace shoal::storage {

/// What a backoff looks like. Every field has a safe default.
struct backoff_policy {
  std::chrono::milliseconds base_delay{200};   ///< the delay after the first failed attempt
  std::chrono::milliseconds max_delay{30'000}; ///< cap on any one delay, jitter included
  double jitter = 0.2;                         ///< delay × uniform[1 − jitter, 1 + jitter], 0..1
};

/// The delay after failed attempt number `attempt` (1-based): base_delay × 2^(attempt − 1) ×
/// (1 − jitter + 2 × jitter × unit), capped at max_delay, rounded to the millisecond. `unit`
/// is a uniform draw in [0, 1] (clamped; backoff_random_unit() or a test's fixed value);
/// `attempt` below 1 counts as 1, the doubling stops at 2^30. Thread-safe (pure).
/// Source: "Exponential Backoff And Jitter" (AWS Architecture Blog, 2015), the equal-spread form.
std::chrono::milliseconds backoff_delay(const backoff_policy& p, int attempt, double unit) noexcept;

/// A uniform draw in [0, 1) from a per-thread PRNG seeded from std::random_device.
/// Thread-safe (each thread its own generator).
double backoff_random_unit() noexcept;

} // namespace shoal::storage
