#include "workers/fleet/membership.hpp"

#include <mutex>

namespace shoal::workers::fleet {
namespace {

// One host alone: every shard is this host's. Used until the coordinator (coordinator.hpp)
// takes over make_membership.
class solo_membership final : public membership {
public:
  solo_membership(const config& cfg, std::string host, std::uint32_t workers, membership_hooks hooks)
      : host_(std::move(host)), workers_(workers), hooks_(std::move(hooks)) {
    assignment_.epoch = 1;
    assignment_.coordinator = host_;
    for (std::uint32_t s = 0; s < cfg.work.shards; ++s) assignment_.shards.push_back(s);
    if (hooks_.on_assignment) hooks_.on_assignment(assignment_);
  }
  void set_local_workers(std::uint32_t n) override {
    std::lock_guard lock(mu_);
    workers_ = n;
  }
  void announce_work(const std::string& queue, std::int32_t shard, std::uint32_t count) override {
    if (hooks_.on_work_available) hooks_.on_work_available(queue, shard, count);
  }
  host_assignment assignment() const override { return assignment_; }
  std::vector<host_view> hosts() const override {
    std::lock_guard lock(mu_);
    return {host_view{host_, "", workers_, assignment_.shards, true, 0}};
  }
  bool is_coordinator() const override { return true; }
  void stop() override {}

private:
  std::string host_;
  mutable std::mutex mu_;
  std::uint32_t workers_;
  membership_hooks hooks_;
  host_assignment assignment_;
};

} // namespace

result<std::unique_ptr<membership>> make_membership(const config& cfg, std::string host,
                                                    std::uint32_t local_workers, membership_hooks hooks) {
  return std::unique_ptr<membership>(
      std::make_unique<solo_membership>(cfg, std::move(host), local_workers, std::move(hooks)));
}

} // namespace shoal::workers::fleet
