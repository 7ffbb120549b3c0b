#pragma once
// Hands the supervisor's fleet view (workers/fleet/status.hpp) to the dashboard's HTTP threads.
// The supervisor's slots belong to its event loop, so the loop builds the view and publishes it
// here; a page asks for it and, when the last view is too old, waits a little for the loop to
// publish a fresh one. No view is built while nobody looks.

#include "workers/fleet/status.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>

namespace shoal::workers::fleet {

/// A mailbox of one fleet view. Thread-safe: the owner (the supervisor's loop) calls wanted()
/// and publish(); any thread calls get().
class fleet_feed {
public:
  using clock = std::chrono::steady_clock;

  /// The last view if it is at most `max_age` old; otherwise asks the owner for a fresh one and
  /// waits up to `wait` for it, returning whatever is there then (nullopt before the first).
  std::optional<fleet::fleet_status> get(std::chrono::milliseconds max_age, std::chrono::milliseconds wait);

  /// Owner: true when a reader asked for a fresh view since the last publish. Cheap (one lock).
  bool wanted() const;

  /// Owner: replaces the view and wakes the readers.
  void publish(fleet::fleet_status s);

private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<fleet::fleet_status> view_;
  clock::time_point at_{};
  std::uint64_t asked_ = 0;     // requests for a fresh view
  std::uint64_t answered_ = 0;  // value of asked_ at the last publish
};

} // namespace shoal::workers::fleet
