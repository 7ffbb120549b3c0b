#include "actors/mailbox.hpp"

namespace shoal::actors {

mailbox::mailbox(mailbox_options opts) : opts_(opts) {
  if (opts_.capacity == 0)
    opts_.capacity = 1;
  // Small capacities are reserved up front so steady-state pushes never reallocate.
  q_.reserve(std::min<std::size_t>(opts_.capacity, 4096));
}

mailbox::push_result mailbox::push(transport::envelope& e, bool may_block) {
  std::unique_lock lk(m_);
  if (closed_)
    return push_result::closed;
  if (n_ >= opts_.capacity) {
    switch (opts_.policy) {
    case overflow_policy::drop_newest:
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return push_result::dropped;
    case overflow_policy::reject:
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return push_result::full;
    case overflow_policy::block:
      if (!may_block) {
        rejected_.fetch_add(1, std::memory_order_relaxed);
        return push_result::full;
      }
      ++producers_waiting_;
      not_full_.wait(lk, [&] { return closed_ || n_ < opts_.capacity; });
      --producers_waiting_;
      if (closed_)
        return push_result::closed;
      break;
    }
  }
  if (n_ < q_.size())
    std::swap(q_[n_], e); // recycle: the producer gets a consumed envelope's buffers back
  else
    q_.push_back(std::move(e));
  ++n_;
  ready_.store(true, std::memory_order_release);
  bool wake = consumer_waiting_;
  lk.unlock();
  if (wake)
    not_empty_.notify_one();
  return push_result::ok;
}

bool mailbox::push_control(std::function<void()> fn) {
  std::unique_lock lk(m_);
  if (closed_)
    return false;
  ctl_.push_back(std::move(fn));
  ready_.store(true, std::memory_order_release);
  bool wake = consumer_waiting_;
  lk.unlock();
  if (wake)
    not_empty_.notify_one();
  return true;
}

void mailbox::wait(bool want_user, std::optional<std::chrono::nanoseconds> max_wait) {
  // Spin briefly before sleeping: under load the next message is usually microseconds away,
  // and a futex sleep/wake pair costs both sides far more than that. ~2k pauses ≈ 10–30 µs.
  for (int i = 0; i < 2048; ++i) {
    if (ready_.load(std::memory_order_acquire)) {
      std::lock_guard lk(m_);
      if (closed_ || !ctl_.empty() || (want_user && n_ > 0))
        return;
      if (!want_user)
        break; // only mail is there and we don't want it: sleep
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  std::unique_lock lk(m_);
  auto ready = [&] { return closed_ || !ctl_.empty() || (want_user && n_ > 0); };
  if (ready())
    return;
  consumer_waiting_ = true;
  if (max_wait)
    not_empty_.wait_for(lk, *max_wait, ready);
  else
    not_empty_.wait(lk, ready);
  consumer_waiting_ = false;
}

std::size_t mailbox::take(std::vector<transport::envelope>& user, std::vector<std::function<void()>>& ctl,
                          bool want_user) {
  std::unique_lock lk(m_);
  if (!ctl_.empty())
    ctl.swap(ctl_);
  std::size_t n = 0;
  if (want_user && n_ > 0) {
    user.swap(q_); // q_ now holds the consumer's handled envelopes, recycled as free slots
    n = n_;
    n_ = 0;
  }
  if (n_ == 0 && ctl_.empty() && !closed_)
    ready_.store(false, std::memory_order_release);
  bool wake = n > 0 && producers_waiting_ > 0;
  lk.unlock();
  if (wake)
    not_full_.notify_all();
  return n;
}

void mailbox::close() {
  std::vector<transport::envelope> q;
  std::vector<std::function<void()>> c;
  {
    std::lock_guard lk(m_);
    if (closed_)
      return;
    closed_ = true;
    ready_.store(true, std::memory_order_release);
    q.swap(q_);
    n_ = 0;
    c.swap(ctl_);
  }
  not_full_.notify_all();
  not_empty_.notify_all();
  // q and c are destroyed here, outside the lock (their destructors may release actor refs).
}

std::size_t mailbox::size() const {
  std::lock_guard lk(m_);
  return n_;
}

} // namespace shoal::actors
