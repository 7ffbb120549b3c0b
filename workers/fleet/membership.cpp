#include "workers/fleet/membership.hpp"

#include "workers/fleet/fleet_membership.hpp"

namespace shoal::workers::fleet {

// Always the coordinator-backed membership (fleet_membership.hpp), even on one host: the host then
// holds the coordinator lease itself and gets every shard, so a second host can join later
// without a restart, and `shoal status` shows the same view either way. There is no separate
// "solo" mode: it would be a second code path that the multi-host tests never exercise.
result<std::unique_ptr<membership>> make_membership(const config& cfg, std::string host,
                                                    std::uint32_t local_workers, membership_hooks hooks) {
  return start_fleet_membership(cfg, std::move(host), local_workers, std::move(hooks));
}

} // namespace shoal::workers::fleet
