#pragma once
// The queues of the work table as the dashboard and the metrics show them: which queues exist,
// their counts per status and shard, the age of their oldest pending record, and counts sampled
// over the last hour (the throughput chart). One background thread reads them every
// `sample` interval; readers get the last reading without touching storage.
//
// Reads follow workers/claim/SCHEMA.md: a queue is the set of partitions `{queue}-{shard:02x}`, a record
// carries `status` and `created`. Counting goes through work_table::counts; the queue list and
// the oldest pending record are read with key-range and $select queries over the same table
// (work_table has no call for them yet).

#include "workers/error.hpp"
#include "workers/claim/work_table.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace shoal::workers::fleet {

class fleet_metrics;

/// Counts of one queue at one moment.
struct queue_sample {
  std::chrono::system_clock::time_point at;       ///< local time of the reading (chart axis)
  std::map<std::string, std::uint64_t> by_status; ///< pending, claimed, done, dead
};

/// What is known about one queue.
struct queue_info {
  std::string name;
  std::map<std::string, std::uint64_t> by_status;                         ///< pending, claimed, done, dead
  std::map<std::uint32_t, std::map<std::string, std::uint64_t>> by_shard; ///< shard → status → count
  std::uint64_t total = 0;
  std::int64_t oldest_pending_age_ms = -1; ///< server time − when the longest-waiting due pending record became claimable; -1 = none
  bool oldest_pending_partial = false;     ///< the scan stopped at its cap: the age is a lower bound
  std::vector<queue_sample> history;       ///< oldest first, at most the last hour
  std::int64_t read_ms_ago = -1;           ///< since the last good reading; -1 = never read
  std::string error;                       ///< last reading's error, "" if it succeeded
};

/// Settings of a queue_monitor.
struct queue_monitor_options {
  std::chrono::milliseconds sample{30'000};      ///< read every queue this often
  std::chrono::milliseconds history{3'600'000};  ///< keep samples this long
  std::chrono::milliseconds discover{300'000};   ///< look for new queues this often
  std::set<std::string> queues;                  ///< always shown, even before they hold a record
  std::size_t oldest_scan_max = 100'000;         ///< pending records looked at per queue and reading
  fleet::fleet_metrics* metrics = nullptr;       ///< borrowed, may be null: oldest-pending gauges
};

/// Every queue of `table` (distinct partition prefixes), found with one $top=1 query per queue:
/// after a partition `q-xx` the next query starts at `q.`, the first key past every `q-…`.
/// Errors: storage.
[[nodiscard]] result<std::vector<std::string>> discover_queues(const work_table& table);

/// Since when the longest-waiting claimable pending record of `queue` has waited: (time,
/// partial), from work_table::oldest_waiting (its tickets, at most `max_scan`; partial = true
/// when it stopped there). nullopt = none pending and due. Errors: invalid_argument (queue
/// name), storage.
[[nodiscard]] result<std::optional<std::pair<std::chrono::system_clock::time_point, bool>>>
oldest_pending(const work_table& table, std::string_view queue, std::size_t max_scan);

/// Reads the queues in the background (see the file comment). Thread-safe.
class queue_monitor {
public:
  /// Starts the thread; the first reading begins at once.
  queue_monitor(work_table table, queue_monitor_options opts);
  ~queue_monitor();
  queue_monitor(const queue_monitor&) = delete;
  queue_monitor& operator=(const queue_monitor&) = delete;

  /// The last reading of every known queue, by name.
  std::vector<queue_info> queues() const;
  /// Adds `queue` to the queues always read.
  void watch(const std::string& queue);
  /// Reads again now (after a requeue or purge), not at the next interval.
  void refresh();
  /// The table it reads (thread-safe, shared).
  const work_table& table() const noexcept { return table_; }

private:
  void loop();
  void read_all();

  work_table table_;
  queue_monitor_options opts_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, queue_info> info_;
  std::map<std::string, std::chrono::steady_clock::time_point> read_at_;
  std::chrono::steady_clock::time_point discovered_{};
  bool stop_ = false;
  bool poke_ = false;
  std::thread thread_;
};

} // namespace shoal::workers::fleet
