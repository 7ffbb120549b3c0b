#pragma once
// What `shoal run` prints when it ends: the summary that verifies itself (records read = rows
// loaded + already loaded + quarantined, no duplicate message ids), the stage times, and what the
// run cost in storage requests and CPU seconds (from the stats files of its processes). Only
// workers/cmd/run*.cpp use this.

#include "workers/cmd/run_progress.hpp"
#include "workers/process_stats.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace shoal::cmd::run_detail {

/// The storage requests and CPU seconds of a run's processes, and the observer's own (this
/// process: the display's queue reads).
struct run_cost {
  std::uint64_t requests = 0;                        ///< every child's, retries included
  std::map<std::string, std::uint64_t> by_resource;  ///< "shoalwork", "shoal (blob)", …
  std::map<std::string, std::uint64_t> by_op;        ///< "table batch", "blob put", …
  double per_blob = 0, per_1000_records = 0;
  std::map<std::string, std::pair<double, int>> cpu; ///< command → (CPU s, processes)
  std::uint64_t observer_requests = 0;               ///< shoal run's own (not in `requests`)
  double observer_cpu_s = 0;
};

/// Sums `children` (read_process_stats of the run's stats folder) and reads this process's own
/// counters. `blobs`, `records`: the divisors of the per-blob and per-1,000-record figures (0:
/// left at 0). Thread-safe.
run_cost run_cost_of(const std::vector<workers::process_stats>& children, std::int64_t blobs,
                     std::size_t records);

/// Everything the summary shows. Times in seconds.
struct run_report {
  std::string dataset;           ///< --dataset as given
  std::string table;             ///< the SQL table loaded
  std::string etl_mode;          ///< "fleet" | "rounds"
  std::string partition_depth;   ///< "day" | "hour" | "month": how blob folders are counted
  unsigned workers = 0;
  std::size_t records_in = 0;
  ledger_totals totals;          ///< this run's blobs in the ETL ledger
  std::optional<std::int64_t> table_rows, duplicate_ids; ///< nullopt: the SQL query failed
  double persistor_start_s = 0, send_s = 0, etl_s = 0, end_to_end_s = 0, wall_s = 0;
  std::string stop_note;         ///< how the fleet stopped ("" = no fleet)
  std::string persistor_note;    ///< the persistor's exit when it was not clean
  std::string failure;           ///< why the run did not finish ("" = it finished)
  run_cost cost;
  std::optional<double> emulator_cpu_s; ///< the Azurite this run started, if it started one
  bool counts_ok = false;        ///< records read = loaded + already loaded + quarantined
  bool ok = false;               ///< counts_ok, no duplicate ids, no failure, the fleet stopped
};

/// Prints `r` to stdout (the failure, if any, to stderr first), then, with `json`, one JSON
/// line of the same figures. Single caller.
void print_summary(const run_report& r, bool json);

} // namespace shoal::cmd::run_detail
