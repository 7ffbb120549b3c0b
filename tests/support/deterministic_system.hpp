#pragma once
// A single-threaded actor system on a manual clock, for tests that never sleep (STYLE.md §2.4).
// Nothing runs until the test says so: `run_until_idle()` delivers every queued message and
// fires every due timer; `advance(d)` moves the clock forward timer by timer, running the
// system at each step, so timers and request deadlines fire in time order.

#include "actors/supervisor.hpp"
#include "actors/system.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

namespace shoal::tests {

/// Manual execution + manual_clock. Owner only (the test thread).
class deterministic_system {
public:
  /// An empty system named `process@host` whose clock starts at 0.
  explicit deterministic_system(std::string process = "test", std::string host = "localhost");

  /// Spawns `T(cfg, args...)` with a generated name; an init failure fails the test and
  /// returns an empty ref.
  template <class T, class... A> actors::actor_ref spawn(A&&... args) {
    auto r = sys_.spawn<T>(actors::spawn_options{}, std::forward<A>(args)...);
    if (!r) {
      ADD_FAILURE() << "spawn failed: " << r.error().message;
      return {};
    }
    return *r;
  }
  /// Spawns with explicit options (name, mailbox); returns the error instead of failing.
  template <class T, class... A> actors::result<actors::actor_ref> try_spawn(actors::spawn_options opts, A&&... args) {
    return sys_.spawn<T>(std::move(opts), std::forward<A>(args)...);
  }
  /// Queues `m` for `to` (from "$client"); a send error fails the test.
  template <class M> void send(const actors::actor_ref& to, const M& m) {
    auto r = sys_.tell(to, m);
    if (!r)
      ADD_FAILURE() << "send failed: " << r.error().message;
  }
  /// Queues `m` for `to` and returns the error, if any.
  template <class M> actors::result<void> try_send(const actors::actor_ref& to, const M& m) { return sys_.tell(to, m); }
  /// Queues a request; read the reply after `run_until_idle()` (or errc::timeout after
  /// `advance(timeout)`).
  template <class R, class M>
  actors::pending_reply<R> request(const actors::actor_ref& to, const M& m,
                                   actors::duration timeout = std::chrono::seconds(5)) {
    return sys_.request<R>(to, m, timeout);
  }

  /// Runs until no mailbox holds anything and no timer is due; returns the steps taken.
  std::size_t run_until_idle() { return sys_.run_until_idle(); }
  /// Moves the clock forward by `d`, stopping at each due timer/deadline on the way.
  void advance(actors::duration d);
  /// The current manual time.
  actors::time_point now() const { return clock_->now(); }

  /// The underlying system (manual execution).
  actors::actor_system& sys() { return sys_; }
  /// The manual clock.
  actors::manual_clock& clock() { return *clock_; }

private:
  std::shared_ptr<actors::manual_clock> clock_;
  actors::actor_system sys_;
};

} // namespace shoal::tests
