#pragma once
// Fleet membership as seen by one supervisor (issue 5 item 4): which shards of the work table
// this host's workers should claim from, and who else is in the fleet. The supervisor owns one
// `membership` and splits the host's shards among its own workers (ctl.assign).
//
// make_membership() chooses the implementation from the configuration. Shard assignment is an
// optimisation so claimers rarely race: correctness never depends on it (ETags and leases in the
// work table decide who owns a record).

#include "workers/config.hpp"
#include "workers/error.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace shoal::workers::fleet {

/// The shards a host should claim from, as decided by the coordinator.
struct host_assignment {
  std::uint64_t epoch = 0;             ///< increases with every change; newer replaces older
  std::vector<std::uint32_t> shards;   ///< sorted, each < work.shards; empty = none right now
  std::string coordinator;             ///< host name of the coordinator that decided it
};

/// One host of the fleet, for `shoal status`.
struct host_view {
  std::string host;
  std::string endpoint;                 ///< its tcp ROUTER for other supervisors ("" = single host)
  std::uint32_t workers = 0;            ///< its worker processes
  std::vector<std::uint32_t> shards;    ///< its current assignment
  bool coordinator = false;             ///< holds the coordinator lease
  std::int64_t last_seen_ms_ago = 0;    ///< since its last heartbeat (0 for this host)
};

/// Callbacks from a membership to its supervisor. Called on the membership's own thread; must
/// not block for long.
struct membership_hooks {
  /// The host's shards changed (called once at start, then on every change).
  std::function<void(const host_assignment&)> on_assignment;
  /// Another host announced work in `queue`/`shard` (-1 = any) for this host's workers.
  std::function<void(const std::string& queue, std::int32_t shard, std::uint32_t count)> on_work_available;
};

/// Fleet membership of one supervisor. Thread-safe: every method may be called from any thread.
class membership {
public:
  virtual ~membership() = default;
  /// Tells the fleet how many worker processes this host runs now (after SIGHUP).
  virtual void set_local_workers(std::uint32_t n) = 0;
  /// Forwards a wake-up for `queue`/`shard` to whichever host owns that shard (this one included:
  /// then on_work_available is called locally).
  virtual void announce_work(const std::string& queue, std::int32_t shard, std::uint32_t count) = 0;
  /// The last assignment of this host.
  virtual host_assignment assignment() const = 0;
  /// Every known host (this one first).
  virtual std::vector<host_view> hosts() const = 0;
  /// True while this supervisor holds the coordinator lease.
  virtual bool is_coordinator() const = 0;
  /// Leaves the fleet: gives up the coordinator lease if held (so another supervisor takes it
  /// over at once instead of after coordinator_lease_ms) and stops its threads. Idempotent.
  virtual void stop() = 0;
};

/// Starts the membership of host `host` running `local_workers` workers, per `cfg.fleet`.
/// Errors: invalid_argument (bad endpoints or key files), storage (the fleet table), transport.
[[nodiscard]] result<std::unique_ptr<membership>> make_membership(const config& cfg, std::string host,
                                                                  std::uint32_t local_workers,
                                                                  membership_hooks hooks);

} // namespace shoal::workers::fleet
