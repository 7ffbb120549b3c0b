#include "workers/fleet/fleet_feed.hpp"

namespace shoal::workers::fleet {

std::optional<fleet::fleet_status> fleet_feed::get(std::chrono::milliseconds max_age, std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  if (view_ && clock::now() - at_ <= max_age)
    return view_;
  const std::uint64_t ticket = ++asked_;
  cv_.wait_for(lock, wait, [&] { return answered_ >= ticket; });
  return view_;
}

bool fleet_feed::wanted() const {
  std::lock_guard lock(mu_);
  return asked_ > answered_;
}

void fleet_feed::publish(fleet::fleet_status s) {
  {
    std::lock_guard lock(mu_);
    view_ = std::move(s);
    at_ = clock::now();
    answered_ = asked_;
  }
  cv_.notify_all();
}

} // namespace shoal::workers::fleet
