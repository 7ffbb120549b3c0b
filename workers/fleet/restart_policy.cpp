#include "workers/fleet/restart_policy.hpp"

#include <algorithm>

namespace shoal::workers::fleet {

void restart_policy::expire(time_point now) {
  while (!restarts_.empty() && now - restarts_.front() >= opts_.period)
    restarts_.pop_front();
}

std::uint32_t restart_policy::recent(time_point now) {
  expire(now);
  return static_cast<std::uint32_t>(restarts_.size());
}

std::chrono::milliseconds restart_policy::on_exit(time_point now) {
  expire(now);
  if (restarts_.size() >= opts_.intensity) {
    // Too many: pause the slot, then start counting again (OTP would give up; a worker fleet
    // keeps trying, slowly, so a storage outage does not need an operator to recover).
    restarts_.clear();
    backed_off_ = true;
    return opts_.backoff;
  }
  backed_off_ = false;
  const auto n = restarts_.size();
  restarts_.push_back(now);
  auto delay = opts_.first_delay;
  for (std::size_t i = 0; i < n && delay < opts_.max_delay; ++i)
    delay *= 2;
  return std::min(delay, opts_.max_delay);
}

} // namespace shoal::workers::fleet
