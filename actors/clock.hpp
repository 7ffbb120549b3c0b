#pragma once
// The time source of an actor system. Timers, request deadlines and supervisor restart
// intensity all read it, so tests can inject a manual clock and never sleep.

#include <atomic>
#include <chrono>

namespace shoal::actors {

/// Durations in the runtime are nanoseconds.
using duration = std::chrono::nanoseconds;
/// A point on the (monotonic) runtime clock, in nanoseconds.
using time_point = std::chrono::time_point<std::chrono::steady_clock, duration>;

/// Monotonic time source. Implementations are thread-safe.
class clock {
public:
  virtual ~clock() = default;
  /// The current time. Never goes backwards. Thread-safe.
  virtual time_point now() const noexcept = 0;
};

/// `std::chrono::steady_clock`: the default for real systems.
class steady_clock_source final : public clock {
public:
  /// steady_clock::now(). Thread-safe.
  time_point now() const noexcept override { return std::chrono::steady_clock::now(); }
};

/// A clock that only moves when told to: for deterministic tests. Starts at 0 ns.
class manual_clock final : public clock {
public:
  /// The time set by the last `advance`/`set`. Thread-safe.
  time_point now() const noexcept override { return time_point(duration(ns_.load(std::memory_order_acquire))); }
  /// Moves the clock forward by `d` (negative values are ignored). Thread-safe.
  void advance(duration d) noexcept {
    if (d.count() > 0)
      ns_.fetch_add(d.count(), std::memory_order_acq_rel);
  }
  /// Sets the clock to `t` if that is later than now (the clock never goes back). Thread-safe.
  void set(time_point t) noexcept {
    auto v = t.time_since_epoch().count();
    auto cur = ns_.load(std::memory_order_acquire);
    while (v > cur && !ns_.compare_exchange_weak(cur, v, std::memory_order_acq_rel)) {
    }
  }

private:
  std::atomic<std::int64_t> ns_{0}; // nanoseconds since the manual epoch
};

} // namespace shoal::actors
