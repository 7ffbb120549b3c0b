#pragma once
// Shards × hosts → which host claims from which shard (issue 5 item 4). A pure function, so the
// coordinator's decision is deterministic, testable, and the same on whichever supervisor holds
// the coordinator lease.
//
// The rule: every shard goes to exactly one host with a non-zero weight; each host's count is
// its quota — shards × weight / total weight, rounded by largest remainder (ties by host name) —
// so the split is exact, not statistical. Shards stay where they were (`previous`) while their
// host is present and within its quota; only the rest move, so a host that joins takes exactly
// its quota from the others and a host that leaves gives only its own shards away. Shards that
// must move go by rendezvous (highest random weight) order, so even without a previous
// assignment the result depends only on the host names, weights and shard count.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace shoal::workers::fleet {

/// One host taking part in an assignment.
struct assignment_host {
  std::string host;          ///< unique name
  std::uint32_t weight = 1;  ///< its worker processes; 0 = gets no shard (unless every weight is 0)
};

/// Shard lists per host: sorted, disjoint, together exactly 0 .. shards-1 (when any host exists).
using shard_map = std::map<std::string, std::vector<std::uint32_t>, std::less<>>;

/// Assigns shards 0 .. `shards`-1 to `hosts`. `previous` is the last assignment (hosts no longer
/// listed and shards ≥ `shards` in it are ignored). When every weight is 0 all hosts count as
/// weight 1. Returns an entry for every host (possibly empty); an empty map when `hosts` is
/// empty. Duplicate host names count once (the first). Thread-safe (pure); O(shards × hosts ×
/// log).
shard_map assign_shards(std::uint32_t shards, const std::vector<assignment_host>& hosts,
                        const shard_map& previous = {});

/// The quota of each host in assign_shards: how many shards it gets. Thread-safe (pure).
std::map<std::string, std::uint32_t, std::less<>> shard_quotas(std::uint32_t shards,
                                                               const std::vector<assignment_host>& hosts);

/// How many shards have a different owner in `b` than in `a` (a shard absent from one side
/// counts as moved). Thread-safe (pure).
std::uint32_t moved_shards(const shard_map& a, const shard_map& b);

} // namespace shoal::workers::fleet
