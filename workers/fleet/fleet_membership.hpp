#pragma once
// The fleet membership of one supervisor with the coordinator behind it (issue 5 items 4 and 5).
//
// Every supervisor runs the same code. A lease thread writes this host's row of the fleet table
// and tries to hold the coordinator lease every `coordinator_renew_ms` (fleet_table.hpp). A
// messaging thread serves the role that results:
//  - holder (the coordinator): on its tcp ROUTER (`host_endpoint`, CURVE + ZAP allow-list) it
//    takes fleet.join / fleet.heartbeat from the other supervisors, assigns the shards of the
//    work table over itself and them weighted by worker count (assignment.hpp), sends
//    fleet.assign on every change and every heartbeat interval, drops a member after
//    `heartbeat_liveness` silent intervals and rebalances at once, and forwards fleet.work to
//    the shard's owner. On taking the lease it rebuilds the host list from the fresh host rows
//    and from the joins it receives; the shards members report keep their owner.
//  - member: it connects a DEALER (CURVE client) to the endpoint written in the lease row, joins,
//    heartbeats, and applies fleet.assign. When the coordinator dies the lease expires and one
//    of the members takes it; after a clean stop the holder releases it and tells its members,
//    who take it over at once.
// There is no "join this endpoint" setting: every host reads the same fleet table, whose lease
// row names the coordinator's endpoint and public key.
// A single host is its own coordinator and gets every shard. Correctness never depends on any
// of this: ETags in the work table decide who owns a record.
//
// Security: a tcp host_endpoint requires curve_secret_key and curve_allow_dir (no insecure
// mode): only hosts whose *.pub is in the allow dir are admitted; others are refused at the
// CURVE handshake and, if refused while starting, make_membership fails with a message naming
// the key to add.

#include "storage/table_client.hpp"
#include "workers/config.hpp"
#include "workers/fleet/membership.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>

namespace shoal::workers::fleet {

/// What a fleet membership needs beyond the configuration (tests override these).
struct fleet_membership_options {
  /// The fleet table client; nullopt = built from cfg.storage and cfg.fleet.table.
  std::optional<storage::table_client> table;
  /// How long make_membership waits for the first fleet.assign as a member before it goes on
  /// with every shard (and keeps trying); 0 = 2 × liveness × heartbeat interval, at least 2 s.
  std::chrono::milliseconds first_assign_wait{0};
};

/// Starts the membership (see the file comment). The tcp endpoint actually bound (port 0
/// resolved) is what other supervisors are told. Errors: invalid_argument (tcp host_endpoint
/// without keys, unreadable or mismatched keys, empty allow dir), io (key files), storage (the
/// fleet table), conflict (refused by the coordinator: this host's key is not in its allow list).
/// The returned object is thread-safe.
[[nodiscard]] result<std::unique_ptr<membership>> start_fleet_membership(const config& cfg, std::string host,
                                                                         std::uint32_t local_workers,
                                                                         membership_hooks hooks,
                                                                         fleet_membership_options opts = {});

/// Reads every `*.pub` file in `dir` (sorted by name) and returns the allow-list text
/// (one key per line with the file name as comment). Errors: io (no such folder), invalid_argument
/// (a .pub file without a valid key). Thread-safe.
[[nodiscard]] result<std::string> allow_list_from_dir(const std::string& dir);

} // namespace shoal::workers::fleet
