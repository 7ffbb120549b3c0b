#pragma once
// Counters of the work table and its claimers (issue 4 item 6): monotonic, lock-free, read by
// the supervisor's metrics exporter later. One instance is shared by every copy of a work_table.

#include <atomic>
#include <cstdint>

namespace shoal::workers {

/// A point-in-time copy of claim_counters. Plain values.
struct claim_counters_snapshot {
  std::uint64_t enqueued = 0;         ///< records inserted by enqueue
  std::uint64_t enqueue_existing = 0; ///< enqueued ids that were already present (left as they were)
  std::uint64_t claim_requests = 0;   ///< claim write requests sent (transactions + single merges)
  std::uint64_t claims = 0;           ///< records claimed
  std::uint64_t contention = 0;       ///< claims lost to another claimer (412 on a claim merge)
  std::uint64_t completions = 0;      ///< records marked done by this process
  std::uint64_t lease_lost = 0;       ///< complete/renew/fail/release refused: another owner or gen
  std::uint64_t renewals = 0;         ///< leases extended
  std::uint64_t renew_failures = 0;   ///< renew attempts that failed (storage error, not lease_lost)
  std::uint64_t local_expiries = 0;   ///< leases a lease_keeper gave up because renewals failed
  std::uint64_t failures = 0;         ///< records put back to pending after a failure
  std::uint64_t dead_letters = 0;     ///< records marked dead after max_attempts
  std::uint64_t releases = 0;         ///< claims given back with release
  std::uint64_t claim_queries = 0;    ///< ticket queries sent by claim (one per partition visited)
  std::uint64_t claim_query_entities = 0; ///< entities those queries returned (tickets due and claimable)
  std::uint64_t complete_requests = 0; ///< requests sent to complete records (transactions + single writes)
  std::uint64_t swept = 0;            ///< done records removed by sweep
  std::uint64_t migrated = 0;         ///< layout-1 records given a ticket by migrate
};

/// The live counters, one per field of claim_counters_snapshot (same names, same meaning).
/// All members are relaxed atomics: thread-safe, never blocking.
struct claim_counters {
  std::atomic<std::uint64_t> enqueued{0};
  std::atomic<std::uint64_t> enqueue_existing{0};
  std::atomic<std::uint64_t> claim_requests{0};
  std::atomic<std::uint64_t> claims{0};
  std::atomic<std::uint64_t> contention{0};
  std::atomic<std::uint64_t> completions{0};
  std::atomic<std::uint64_t> lease_lost{0};
  std::atomic<std::uint64_t> renewals{0};
  std::atomic<std::uint64_t> renew_failures{0};
  std::atomic<std::uint64_t> local_expiries{0};
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> dead_letters{0};
  std::atomic<std::uint64_t> releases{0};
  std::atomic<std::uint64_t> claim_queries{0};
  std::atomic<std::uint64_t> claim_query_entities{0};
  std::atomic<std::uint64_t> complete_requests{0};
  std::atomic<std::uint64_t> swept{0};
  std::atomic<std::uint64_t> migrated{0};

  /// Adds `n` to `c` (relaxed).
  static void add(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
  }
  /// A consistent-enough copy (each counter read once, relaxed).
  claim_counters_snapshot snapshot() const noexcept {
    auto r = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    return {r(enqueued),    r(enqueue_existing), r(claim_requests), r(claims),
            r(contention),  r(completions),      r(lease_lost),     r(renewals),
            r(renew_failures), r(local_expiries), r(failures),      r(dead_letters),
            r(releases),    r(claim_queries),    r(claim_query_entities),
            r(complete_requests), r(swept),      r(migrated)};
  }
};

} // namespace shoal::workers
