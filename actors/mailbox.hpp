#pragma once
// A bounded many-producer / single-consumer mailbox with an explicit overflow policy.
//
// Producers append under one short mutex section; the consumer takes everything queued in one
// swap (batch dequeue), so the consumer pays one lock per batch, not per message, and the
// vectors' storage is recycled between the two sides (no per-message queue allocation).
// Control items (stop, restart, supervisor calls) travel in a separate unbounded lane that is
// never refused while the mailbox is open and is always drained before user mail.

#include "transport/envelope.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

namespace shoal::actors {

/// What a full mailbox does with one more message (like spdlog's async_overflow_policy).
enum class overflow_policy : std::uint8_t {
  block,       ///< the sender waits until there is room (or the receiver stops)
  drop_newest, ///< the new message is discarded and counted; the sender is told success
  reject,      ///< the new message is refused; the sender gets errc::mailbox_full (counted)
};

/// Mailbox settings, fixed at spawn.
struct mailbox_options {
  std::size_t capacity = 1024;                   ///< messages queued before the policy applies; ≥ 1
  overflow_policy policy = overflow_policy::reject; ///< what happens when `capacity` is reached
};

/// Bounded MPSC queue of envelopes plus a control lane. Thread-safe for producers; `wait`/`take`
/// are for the single consumer (the owning actor) only.
class mailbox {
public:
  /// Outcome of `push`.
  enum class push_result : std::uint8_t {
    ok,      ///< queued
    dropped, ///< full with drop_newest: discarded and counted in `dropped()`
    full,    ///< full with reject (or block when blocking is not allowed): counted in `rejected()`
    closed,  ///< the mailbox is closed; nothing queued
  };

  /// An empty open mailbox. `opts.capacity` 0 is treated as 1.
  explicit mailbox(mailbox_options opts);

  /// Queues `e` according to the overflow policy by swapping it with a recycled slot: on
  /// return `e` holds a consumed envelope (stale content, reusable capacity) or is unchanged if
  /// nothing was queued, so a producer that refills the same envelope allocates nothing in the
  /// steady state. `may_block` false turns `block` into `reject` (used when the sender is the
  /// consumer itself, or has no thread to block). Thread-safe.
  push_result push(transport::envelope& e, bool may_block = true);
  /// As above for a temporary.
  push_result push(transport::envelope&& e, bool may_block = true) { return push(e, may_block); }
  /// Queues a control item for the consumer; false when closed. Never bounded. Thread-safe.
  bool push_control(std::function<void()> fn);

  /// Consumer only: returns when a control item is queued, when `want_user` and mail is queued,
  /// when the mailbox is closed, or after `max_wait` (nullopt: no limit).
  void wait(bool want_user, std::optional<std::chrono::nanoseconds> max_wait);
  /// Consumer only: moves all queued control items into `ctl` (which must be empty) and, when
  /// `want_user`, swaps the queued mail into `user`, returning how many of `user`'s leading
  /// elements are new mail (the rest are recycled slots). The consumer leaves handled envelopes
  /// in place: they go back to the producers as recycled slots on the next take.
  std::size_t take(std::vector<transport::envelope>& user, std::vector<std::function<void()>>& ctl,
                   bool want_user);
  /// Closes the mailbox: queued mail and controls are discarded, blocked senders wake and get
  /// `closed`, later pushes fail. Idempotent. Thread-safe.
  void close();

  /// Messages queued now. Thread-safe (a snapshot).
  std::size_t size() const;
  /// Messages discarded by drop_newest since creation. Thread-safe.
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }
  /// Messages refused (reject, or block when blocking was not allowed). Thread-safe.
  std::uint64_t rejected() const noexcept { return rejected_.load(std::memory_order_relaxed); }
  /// The options given at construction.
  const mailbox_options& options() const noexcept { return opts_; }

private:
  mailbox_options opts_;
  mutable std::mutex m_;
  std::condition_variable not_empty_; // consumer waits here
  std::condition_variable not_full_;  // blocked producers wait here
  std::vector<transport::envelope> q_; // [0, n_) queued; [n_, size) recycled slots
  std::size_t n_ = 0;
  std::atomic<bool> ready_{false};       // something queued or closed: lets `wait` spin lock-free
  std::vector<std::function<void()>> ctl_;
  bool closed_ = false;
  bool consumer_waiting_ = false; // notify only when someone sleeps
  std::uint32_t producers_waiting_ = 0;
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> rejected_{0};
};

} // namespace shoal::actors
