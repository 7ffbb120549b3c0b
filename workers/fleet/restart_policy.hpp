#pragma once
// Restart intensity of one supervisor slot (Erlang/OTP supervisors: at most `intensity`
// restarts within `period`; defaults: README "Configuration", fleet.restart_*). Pure: time comes in as an argument, so the
// policy is tested without a clock.

#include <chrono>
#include <cstdint>
#include <deque>

namespace shoal::workers::fleet {

/// Settings of a restart_policy. Every field has a safe default (fleet.restart_* in README "Configuration").
struct restart_policy_options {
  std::uint32_t intensity = 5;                 ///< restarts allowed within `period` …
  std::chrono::milliseconds period{60'000};    ///< … the sliding window
  std::chrono::milliseconds backoff{30'000};   ///< pause once the intensity is exceeded
  std::chrono::milliseconds first_delay{100};  ///< delay before the first restart in a window
  std::chrono::milliseconds max_delay{5'000};  ///< cap of the doubling delay between restarts
};

/// Decides how long a slot waits before its worker is started again. Each exit in the window
/// doubles the delay (first_delay, 2·first_delay, … ≤ max_delay); the exit that would be
/// restart number intensity + 1 within `period` gets `backoff` instead, and the window starts
/// afresh after it. Owner only (no locks).
class restart_policy {
public:
  using time_point = std::chrono::steady_clock::time_point;

  explicit restart_policy(restart_policy_options opts = {}) : opts_(opts) {}

  /// Records that the slot's worker exited at `now` and returns the delay before the next
  /// start. `backed_off()` tells whether this delay is the intensity backoff.
  std::chrono::milliseconds on_exit(time_point now);
  /// True when the last on_exit returned the intensity backoff.
  bool backed_off() const noexcept { return backed_off_; }
  /// Restarts counted in the window as of `now`.
  std::uint32_t recent(time_point now);
  /// Replaces the options (SIGHUP); the history is kept.
  void set_options(restart_policy_options opts) noexcept { opts_ = opts; }
  const restart_policy_options& options() const noexcept { return opts_; }

private:
  void expire(time_point now);
  restart_policy_options opts_;
  std::deque<time_point> restarts_; // restart times inside the window, oldest first
  bool backed_off_ = false;
};

} // namespace shoal::workers::fleet
