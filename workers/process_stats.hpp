#pragma once
// What each `shoal` process cost, for `shoal run`'s summary (issue 14): its CPU time and the
// storage requests it sent, by kind and table/container (storage::process_request_counts).
//
// `shoal run` sets $SHOAL_RUN_STATS_DIR in the environment of the processes it starts (the
// supervisor passes it on to its workers); each `shoal` process then writes
// `{dir}/{command}-{pid}.json` when its command returns, and `shoal run` adds them up after its
// children exited. A process killed with SIGKILL writes nothing (the summary says how many
// files it found per command).
//
// File shape: {"command": "worker", "pid": 123, "cpu_user_s": 1.2, "cpu_system_s": 0.3,
//   "requests": [{"service": "table", "op": "batch", "resource": "shoalwork", "count": 12}, …]}

#include "storage/pipeline.hpp"

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers {

/// The environment variable naming the folder of the stats files.
inline constexpr const char* stats_dir_env = "SHOAL_RUN_STATS_DIR";

/// One process's stats, as written at its exit.
struct process_stats {
  std::string command;   ///< the subcommand: "send", "persistor", "worker", "supervisor", …
  long pid = 0;
  double cpu_s = 0;      ///< user + system CPU seconds of all its threads (getrusage RUSAGE_SELF)
  std::vector<storage::request_count> requests; ///< its storage requests
};

/// This process's stats now (CPU so far, requests so far), named `command`.
process_stats current_process_stats(std::string_view command);

/// When $SHOAL_RUN_STATS_DIR is set, writes this process's stats to
/// `{dir}/{command}-{pid}.json` (through a temporary file and a rename, so a reader never sees
/// half a file). Errors are logged to stderr and otherwise ignored: stats never fail a command.
void write_process_stats(std::string_view command);

/// Every stats file in `dir` (files that do not parse are skipped). Not thread-safe with
/// writers to the same folder only in that a file written meanwhile may be missed.
std::vector<process_stats> read_process_stats(const std::filesystem::path& dir);

/// User + system CPU seconds of process `pid` so far (/proc/{pid}/stat), or nullopt when it is
/// gone or unreadable. For a process that is not our child (the Azurite we started).
std::optional<double> process_cpu_seconds(pid_t pid);

} // namespace shoal::workers
