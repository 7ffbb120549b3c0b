#pragma once
// Supervisor ↔ worker messages of the fleet (ctl.*, work.*; spec: transport/ENVELOPE.md,
// section "Kinds: ctl.*, work.*, fleet.*"). Each is a msgpack struct carried in the body of one
// envelope whose `kind` is the struct's `kind`, encoded with actors::encode_body and decoded with
// actors::decode_body. Compatibility rule: only append fields; a decoder ignores extra trailing
// fields and fills missing trailing ones with defaults.
//
// Topology: each supervisor binds a ROUTER (ipc for its own workers: fleet.endpoint); each
// `shoal worker` connects a DEALER with routing id "{slot}" and sends ctl.hello first. Both sides
// send ctl.heartbeat every fleet.heartbeat_interval_ms and declare the peer dead after
// fleet.heartbeat_liveness intervals of silence (ZeroMQ Paranoid Pirate, zguide ch. 4). Any
// message counts as a heartbeat. `shoal status` connects a DEALER and sends ctl.status.
//
// Correctness never depends on these messages arriving: the work table's ETags and leases decide
// who owns a record (workers/claim/SCHEMA.md).

#include <msgpack.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers::fleet {

/// The work-table owner string of a worker process: "{host}/{slot}/{pid}". Unique per live
/// process (a restarted slot has a new pid), so a supervisor can release exactly what a dead
/// worker held with work_table::release_owner. Thread-safe (pure).
std::string worker_owner(std::string_view host, std::string_view slot, long pid);

/// Worker state as reported in heartbeats.
enum class worker_state : std::uint8_t { starting = 0, idle = 1, working = 2, draining = 3 };
std::string_view to_string(worker_state s) noexcept;

/// worker → supervisor, first message on a new connection (and again after the supervisor was
/// seen dead and came back).
struct hello {
  static constexpr std::string_view kind = "ctl.hello";
  std::string slot;          ///< slot name given by the supervisor ("w0", "w1", …)
  std::int64_t pid = 0;      ///< the worker's process id
  std::string host;          ///< host name
  std::string owner;         ///< work-table owner string (worker_owner)
  std::string job;           ///< "exec" | "etl"
  std::string queue;         ///< work-table queue it claims from
  std::string version;       ///< shoal version
  MSGPACK_DEFINE(slot, pid, host, owner, job, queue, version);
};

/// Both directions, every heartbeat_interval_ms. From a worker it carries its live counters.
struct heartbeat {
  static constexpr std::string_view kind = "ctl.heartbeat";
  std::uint8_t state = 0;          ///< worker_state (workers); 0 from the supervisor
  std::string current;             ///< record id being run, "" if none (first of several)
  std::uint32_t in_flight = 0;     ///< records held right now
  std::uint64_t done = 0;          ///< completed since start
  std::uint64_t failed = 0;        ///< failed attempts since start (retry or dead)
  std::uint64_t lease_lost = 0;    ///< completions refused: another owner took the record
  std::uint64_t contention = 0;    ///< claims lost to another claimer (412)
  std::uint64_t claimed = 0;       ///< records claimed since start
  double rate_per_s = 0;           ///< completions per second over the last ~10 s
  std::uint64_t assign_epoch = 0;  ///< epoch of the last ctl.assign applied
  std::uint64_t malformed = 0;     ///< frames from the supervisor the worker dropped (undecodable)
  MSGPACK_DEFINE(state, current, in_flight, done, failed, lease_lost, contention, claimed,
                 rate_per_s, assign_epoch, malformed);
};

/// supervisor → worker: the shards this worker should claim from. A newer epoch replaces an
/// older one; an empty list means "claim from every shard" (no coordinator yet).
struct assign {
  static constexpr std::string_view kind = "ctl.assign";
  std::uint64_t epoch = 0;
  std::string queue;
  std::vector<std::uint32_t> shards;
  /// true: this worker's host holds no shard (a fleet with more hosts than work.shards): claim
  /// nothing until the next ctl.assign. false with empty `shards` = every shard.
  bool none = false;
  MSGPACK_DEFINE(epoch, queue, shards, none);
};

/// supervisor → worker: records are claimable now in `queue` (shard, or every shard when
/// shard = -1); claim at once instead of waiting for the fallback poll.
struct work_available {
  static constexpr std::string_view kind = "work.available";
  std::string queue;
  std::int32_t shard = -1;
  std::uint32_t count = 0;   ///< hint: how many became claimable (0 = unknown)
  MSGPACK_DEFINE(queue, shard, count);
};

/// supervisor → worker: stop claiming, finish or release in-flight records within
/// deadline_ms, send ctl.bye, exit 0.
struct drain {
  static constexpr std::string_view kind = "ctl.drain";
  std::uint32_t deadline_ms = 0; ///< 0 = the worker's own worker.drain_timeout_ms
  std::string reason;
  MSGPACK_DEFINE(deadline_ms, reason);
};

/// worker → supervisor, last message before a clean exit.
struct bye {
  static constexpr std::string_view kind = "ctl.bye";
  std::string reason;
  std::uint64_t released = 0;  ///< in-flight records given back at drain
  std::uint64_t done = 0;
  MSGPACK_DEFINE(reason, released, done);
};

/// `shoal status` → supervisor: asks for the fleet view. The reply (same kind, corr = request
/// id) carries a UTF-8 JSON document in `json` (shape documented in workers/fleet/STATUS.md).
struct status_request {
  static constexpr std::string_view kind = "ctl.status";
  std::uint8_t detail = 1;   ///< 0 = hosts only, 1 = hosts and workers
  MSGPACK_DEFINE(detail);
};
struct status_reply {
  static constexpr std::string_view kind = "ctl.status.reply";
  std::string json;
  MSGPACK_DEFINE(json);
};

} // namespace shoal::workers::fleet
