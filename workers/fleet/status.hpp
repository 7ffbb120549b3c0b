#pragma once
// The fleet view a supervisor answers ctl.status with, and its JSON form
// (workers/fleet/STATUS.md documents the shape). Plain values: built by the supervisor,
// serialised with to_json, read back by `shoal status` with parse_status.

#include "workers/error.hpp"
#include "workers/fleet/membership.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace shoal::workers::fleet {

/// One worker slot of a supervisor.
struct worker_status {
  std::string slot;                ///< "w0", "w1", …
  std::int64_t pid = 0;            ///< 0 while no process runs (backoff, stopped)
  std::string state;               ///< starting|idle|working|draining|backoff|stopped
  std::string queue;               ///< queue it claims from ("" before its hello)
  std::string current;             ///< record being run, "" if none
  std::uint32_t in_flight = 0;     ///< records held right now
  std::uint64_t done = 0;          ///< completed by this process
  std::uint64_t failed = 0;        ///< failed attempts by this process
  std::uint64_t claimed = 0;       ///< claimed by this process
  std::uint64_t contention = 0;    ///< claims lost to other claimers (412)
  std::uint64_t lease_lost = 0;    ///< completions refused
  double rate_per_s = 0;           ///< completions per second (~10 s window)
  std::int64_t last_heartbeat_ms_ago = -1; ///< -1 = never heard from this process
  std::uint32_t restarts = 0;      ///< processes started for this slot after the first
  std::vector<std::uint32_t> shards; ///< its current ctl.assign (empty = every shard)
  std::uint64_t assign_epoch = 0;  ///< epoch of that assignment
};

/// Record counts of one queue.
struct queue_status {
  std::map<std::string, std::uint64_t> by_status; ///< "pending", "claimed", "done", "dead"
  std::uint64_t total = 0;
  std::int64_t age_ms = -1;        ///< age of these counts; -1 = never read
  std::string error;               ///< last error reading them, "" if none
};

/// The whole document.
struct fleet_status {
  std::uint32_t version = 1;       ///< shape version (STATUS.md)
  bool reachable = true;           ///< false: no supervisor answered (`shoal status` fills queues only)
  std::string error;               ///< why it is not reachable, "" otherwise
  std::string host;                ///< this supervisor's host
  std::int64_t pid = 0;            ///< supervisor process id
  std::string endpoint;            ///< its ROUTER for workers and `shoal status`
  std::int64_t uptime_ms = 0;
  std::string state;               ///< running|draining
  bool coordinator = false;        ///< this supervisor holds the coordinator lease
  std::uint32_t workers_wanted = 0; ///< fleet.workers after the last (re)load
  host_assignment assignment;      ///< this host's shards
  std::vector<host_view> hosts;    ///< every known host, this one first
  std::vector<worker_status> workers;
  std::map<std::string, queue_status> queues; ///< by queue name
};

/// Serialises `s` (UTF-8 JSON, one line). Thread-safe (pure).
std::string to_json(const fleet_status& s);

/// Parses a document written by to_json (unknown keys ignored, missing keys defaulted).
/// Errors: parse (not JSON, or a key of the wrong type).
[[nodiscard]] result<fleet_status> parse_status(std::string_view json);

/// A readable multi-line table of `s` for terminals (what `shoal status` prints).
std::string to_table(const fleet_status& s);

} // namespace shoal::workers::fleet
