#pragma once
// An estimate of the storage server's clock built from response samples (the `Date` header,
// 1 s resolution, and the 100 ns datetime inside table ETags), advanced with the local
// steady clock. Leases are computed from it, never from the local wall clock, so a claimer
// whose system clock is skewed still writes correct leases (workers/claim/SCHEMA.md "Time").

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string_view>

namespace shoal::storage {

/// Bounds on the server's clock. Each sample says: the server's clock read `server_time`
/// (truncated down by up to `resolution`) at some moment between `sent` and `received`
/// (local steady time). From all samples it keeps the tightest lower bound (the estimate used
/// for leases) and upper bound (for the uncertainty). Clock rate drift is ignored.
/// Thread-safe.
class server_clock {
public:
  using steady = std::chrono::steady_clock;
  using wall = std::chrono::system_clock;

  /// `steady_now` defaults to std::chrono::steady_clock::now (tests inject a manual clock).
  explicit server_clock(std::function<steady::time_point()> steady_now = {});

  /// Adds a sample (see the class comment). `resolution` is 1 s for a `Date` header and 0 for
  /// an ETag datetime.
  void observe(wall::time_point server_time, steady::time_point sent, steady::time_point received,
               std::chrono::nanoseconds resolution);

  /// True once a sample has been observed.
  bool known() const;
  /// A lower bound of the server's time at steady instant `at`, or nullopt before any sample.
  std::optional<wall::time_point> lower_bound_at(steady::time_point at) const;
  /// An upper bound of the server's time at steady instant `at`, or nullopt before any sample.
  std::optional<wall::time_point> upper_bound_at(steady::time_point at) const;
  /// lower_bound_at(steady_now()).
  std::optional<wall::time_point> now() const { return lower_bound_at(steady_now()); }
  /// How far the true server time may be ahead of the lower bound (upper − lower); a large
  /// value (1 h) before any sample.
  std::chrono::nanoseconds uncertainty() const;
  /// The local steady clock this estimate advances with.
  steady::time_point steady_now() const { return steady_now_ ? steady_now_() : steady::now(); }

private:
  std::function<steady::time_point()> steady_now_;
  mutable std::mutex mu_;
  // server time − steady time, as durations since the respective epochs; guarded by mu_.
  std::optional<std::chrono::nanoseconds> lower_offset_;
  std::optional<std::chrono::nanoseconds> upper_offset_;
};

/// The server time inside a table entity ETag, `W/"datetime'2026-11-21T11%3A57%3A51.1914632Z'"`
/// (colons may be percent-encoded), or nullopt when it has another form. Thread-safe (pure).
std::optional<std::chrono::system_clock::time_point> etag_time(std::string_view etag);

} // namespace shoal::storage
