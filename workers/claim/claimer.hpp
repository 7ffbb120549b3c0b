#pragma once
// Keeping claims alive: a lease_keeper holds the records a worker claimed, renews their leases
// in the background (one transaction per partition), and declares a record lost BEFORE its
// lease can expire on the server when renewals keep failing (a storage outage) — the worker
// polls handle::lost() (a pure clock check, never blocked by I/O) or gets the on_lost callback.
// See workers/claim/SCHEMA.md "Lease safety".

#include "workers/claim/work_table.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace shoal::workers {

/// Settings of a lease_keeper.
struct lease_keeper_options {
  std::chrono::milliseconds renew_interval{10'000}; ///< renew a lease this long after the last renewal
  std::chrono::milliseconds retry_interval{250};    ///< retry a failed renewal this often
};

/// Holds claimed records and renews their leases. Thread-safe: the worker threads call
/// complete/fail/release while the keeper's thread (start()) or any thread (renew_due())
/// renews; every write of one record is serialised by that record's mutex, so the ETag of a
/// claim is never used by two writes at once.
class lease_keeper {
  struct state;

public:
  /// Called (from the renewing thread) once per record that is lost: lease_lost from the
  /// service, or the local deadline passed while renewals failed.
  using lost_fn = std::function<void(const claimed_record&, const error&)>;

  /// A held record. Cheap to copy; shares the keeper's state of the record.
  class handle {
  public:
    handle() = default;
    /// The record id.
    const std::string& id() const noexcept;
    /// The payload, resolved at claim time.
    const std::string& payload() const noexcept;
    /// A copy of the claim as it is now (ETag and lease after the last renewal).
    claimed_record record() const;
    /// True once the record must no longer be worked on: lease_lost from the service, or the
    /// local steady clock passed the lease deadline (renewals failed). Never blocks on I/O.
    bool lost() const noexcept;
    /// The local steady deadline of the lease as the last claim/renewal left it (an atomic
    /// read: no lock, no copy of the record).
    std::chrono::steady_clock::time_point deadline() const noexcept;
    /// The record's PartitionKey (immutable).
    const std::string& partition_key() const noexcept;
    /// False for a default-constructed handle.
    explicit operator bool() const noexcept { return s_ != nullptr; }

  private:
    friend class lease_keeper;
    explicit handle(std::shared_ptr<state> s) : s_(std::move(s)) {}
    std::shared_ptr<state> s_;
  };

  /// A keeper writing through `table`. `on_lost` may be empty.
  lease_keeper(work_table table, lease_keeper_options opts, lost_fn on_lost = {});
  /// Stops the renewing thread; held records are NOT released (call release_all first to drain).
  ~lease_keeper();
  lease_keeper(const lease_keeper&) = delete;
  lease_keeper& operator=(const lease_keeper&) = delete;

  /// Starts holding (and renewing) `r`.
  handle hold(claimed_record r);
  /// Starts holding each of `records`.
  std::vector<handle> hold(std::vector<claimed_record> records);

  /// Completes the record and stops holding it. A record already declared lost may still be
  /// completed: the conditional write decides (it succeeds if nobody re-claimed it).
  /// Errors: those of work_table::complete (lease_lost: the completion was refused),
  /// invalid_argument (already completed, failed or released).
  [[nodiscard]] result<void> complete(const handle& h);
  /// Completes many (one transaction per partition); one result per handle.
  std::vector<result<void>> complete_many(std::span<const handle> hs);
  /// work_table::fail, then stops holding it.
  [[nodiscard]] result<record_status> fail(const handle& h, std::string_view error_text);
  /// work_table::release, then stops holding it.
  [[nodiscard]] result<void> release(const handle& h, bool count_attempt = false);
  /// Releases every held record (drain). Returns how many were released.
  std::size_t release_all();

  /// Renews every lease that is due now, and marks records whose deadline passed as lost.
  /// Called by the keeper's thread; tests may call it directly.
  void renew_due();
  /// Starts the renewing thread (idempotent).
  void start();
  /// Stops the renewing thread (idempotent).
  void stop();
  /// Number of records held.
  std::size_t held() const;

private:
  void finish(const std::shared_ptr<state>& s);
  void mark_lost(const std::shared_ptr<state>& s, const error& e);
  std::chrono::steady_clock::time_point now() const;

  work_table table_;
  lease_keeper_options opts_;
  lost_fn on_lost_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<state>> held_; // guarded by mu_
  std::condition_variable cv_;
  bool running_ = false;                     // guarded by mu_
  std::thread thread_;
};

// -- drain: the simplest claim loop ----------------------------------------------------------------

/// Settings of drain().
struct drain_options {
  std::size_t batch = 100;                    ///< records per claim call
  std::chrono::milliseconds idle_poll{50};    ///< wait when nothing is claimable but records are open
  /// Stop after this long without an open record or progress; 0 = until the queue has no
  /// pending or claimed record.
  std::chrono::milliseconds max_idle{0};
};

/// What drain() did.
struct drain_stats {
  std::size_t claimed = 0;    ///< records claimed
  std::size_t completed = 0;  ///< records this loop completed
  std::size_t lease_lost = 0; ///< completions refused (another owner took the record)
  std::size_t errors = 0;     ///< other failed completions (the record stays claimed, then expires)
};

/// Claims records of `queue` from `shards` as `owner` and completes them (one transaction per
/// partition) until the queue has no pending or claimed record; `on_completed` is called for
/// each record this loop completed, from a helper thread (one call at a time): the completion
/// of one batch overlaps the claim of the next. No processing happens in between: this is the
/// claim path of a worker without its work, used by tests and bench/claim_bench.
/// Errors: those of work_table::claim and has_open. Owner only.
[[nodiscard]] result<drain_stats> drain(const work_table& table, std::string_view queue,
                                        std::span<const std::uint32_t> shards, std::string_view owner,
                                        const drain_options& opts,
                                        const std::function<void(const claimed_record&)>& on_completed);

} // namespace shoal::workers
