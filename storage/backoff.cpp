// The backoff policy (storage/backoff.hpp): the formula and its per-thread random source.
#include "storage/backoff.hpp"

#include <algorithm>
#include <cmath>
#include <random>

namespace shoal::storage {

std::chrono::milliseconds backoff_delay(const backoff_policy& p, int attempt, double unit) noexcept {
  const double exp = std::ldexp(1.0, std::clamp(attempt - 1, 0, 30));
  const double jitter = std::clamp(p.jitter, 0.0, 1.0);
  const double factor = 1.0 - jitter + 2.0 * jitter * std::clamp(unit, 0.0, 1.0);
  const double ms = static_cast<double>(p.base_delay.count()) * exp * factor;
  const double cap = static_cast<double>(p.max_delay.count());
  return std::chrono::milliseconds{std::llround(std::max(0.0, std::min(ms, cap)))};
}

double backoff_random_unit() noexcept {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(gen);
}

} // namespace shoal::storage
