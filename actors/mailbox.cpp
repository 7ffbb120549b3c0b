#include "actors/mailbox.hpp"

namespace shoal::actors {

mailbox::mailbox(mailbox_options opts) : opts_(opts) {
  if (opts_.capacity == 0)
    opts_.capacity = 1;
  // Small capacities are reserved up front so steady-state pushes never reallocate.
  q_.reserve(std::min<std::size_t>(opts_.capacity, 4096));
}

mailbox::push_result mailbox::push(transport::envelope&& e, bool may_block) {
  std::unique_lock lk(m_);
  if (closed_)
    return push_result::closed;
  if (q_.size() >= opts_.capacity) {
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
      not_full_.wait(lk, [&] { return closed_ || q_.size() < opts_.capacity; });
      --producers_waiting_;
      if (closed_)
        return push_result::closed;
      break;
    }
  }
  q_.push_back(std::move(e));
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
  bool wake = consumer_waiting_;
  lk.unlock();
  if (wake)
    not_empty_.notify_one();
  return true;
}

void mailbox::wait(bool want_user, std::optional<std::chrono::nanoseconds> max_wait) {
  std::unique_lock lk(m_);
  auto ready = [&] { return closed_ || !ctl_.empty() || (want_user && !q_.empty()); };
  if (ready())
    return;
  consumer_waiting_ = true;
  if (max_wait)
    not_empty_.wait_for(lk, *max_wait, ready);
  else
    not_empty_.wait(lk, ready);
  consumer_waiting_ = false;
}

bool mailbox::take(std::vector<transport::envelope>& user, std::vector<std::function<void()>>& ctl,
                   bool want_user) {
  std::unique_lock lk(m_);
  bool any = false;
  if (!ctl_.empty()) {
    ctl.swap(ctl_);
    ctl_.clear();
    any = true;
  }
  bool freed = false;
  if (want_user && !q_.empty()) {
    user.clear();
    user.swap(q_); // q_ now has the consumer's old (empty, reserved) storage
    any = true;
    freed = true;
  }
  bool wake = freed && producers_waiting_ > 0;
  lk.unlock();
  if (wake)
    not_full_.notify_all();
  return any;
}

void mailbox::close() {
  std::vector<transport::envelope> q;
  std::vector<std::function<void()>> c;
  {
    std::lock_guard lk(m_);
    if (closed_)
      return;
    closed_ = true;
    q.swap(q_);
    c.swap(ctl_);
  }
  not_full_.notify_all();
  not_empty_.notify_all();
  // q and c are destroyed here, outside the lock (their destructors may release actor refs).
}

std::size_t mailbox::size() const {
  std::lock_guard lk(m_);
  return q_.size();
}

} // namespace shoal::actors
