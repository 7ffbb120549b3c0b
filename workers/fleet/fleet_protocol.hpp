#pragma once
// Supervisor ↔ supervisor messages of the fleet (issue 5 items 4 and 5; spec: transport/ENVELOPE.md
// "Kinds: fleet.* (supervisor to supervisor)"). Each is a msgpack struct in the body of one
// envelope whose `kind` is the struct's `kind` (actors::encode_body / decode_body). Only append
// fields: a decoder ignores extra trailing fields and fills missing ones with defaults.
//
// Topology: every supervisor with a `fleet.host_endpoint` binds a tcp ROUTER there (CURVE server,
// ZAP allow-list). The one holding the coordinator lease (fleet_table.hpp) serves it; the others
// connect one DEALER each (CURVE client, the coordinator's public key from the lease row), send
// fleet.join and then fleet.heartbeat every fleet.heartbeat_interval_ms. The coordinator sends
// fleet.assign to each member on every change and every heartbeat interval (its heartbeat).
// Either side declares the other dead after fleet.heartbeat_liveness silent intervals.

#include <msgpack.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers::fleet {

/// member → coordinator: "I am here" (first message on a link, and after a silence).
/// fleet.heartbeat has the same body.
struct fleet_join {
  static constexpr std::string_view kind = "fleet.join";
  std::string host;                  ///< member's host name
  std::string instance;              ///< member's process instance (random per start)
  std::string endpoint;              ///< member's host_endpoint ("" = none)
  std::string public_key;            ///< member's CURVE public key (Z85)
  std::uint32_t workers = 0;         ///< its worker processes (its weight in the assignment)
  std::uint64_t epoch = 0;           ///< epoch of the assignment it holds (0 = none)
  std::vector<std::uint32_t> shards; ///< the shards it holds (so a new coordinator keeps them)
  std::string version;               ///< shoal version
  MSGPACK_DEFINE(host, instance, endpoint, public_key, workers, epoch, shards, version);
};

/// member → coordinator, every heartbeat interval: fleet_join's body under this kind.
inline constexpr std::string_view fleet_heartbeat_kind = "fleet.heartbeat";

/// One host in fleet.assign's view of the fleet.
struct fleet_host_entry {
  std::string host;
  std::string endpoint;
  std::uint32_t workers = 0;
  std::vector<std::uint32_t> shards;
  std::int64_t last_seen_ms_ago = 0; ///< at the coordinator
  MSGPACK_DEFINE(host, endpoint, workers, shards, last_seen_ms_ago);
};

/// coordinator → member: its shards, on every change and every heartbeat interval.
struct fleet_assign {
  static constexpr std::string_view kind = "fleet.assign";
  std::uint64_t epoch = 0;              ///< (lease epoch << 32) | change counter: newer replaces older
  std::string coordinator;              ///< coordinator's host name
  std::vector<std::uint32_t> shards;    ///< the recipient's shards, sorted
  std::vector<fleet_host_entry> hosts;  ///< every host, coordinator first
  MSGPACK_DEFINE(epoch, coordinator, shards, hosts);
};

/// Either direction: records are claimable in `queue`/`shard`. member → coordinator when the
/// shard is another host's; coordinator → the owning member.
struct fleet_work {
  static constexpr std::string_view kind = "fleet.work";
  std::string queue;
  std::int32_t shard = -1;
  std::uint32_t count = 0;
  std::string origin;                   ///< host that announced it
  MSGPACK_DEFINE(queue, shard, count, origin);
};

/// member → coordinator: leaving now (clean stop). coordinator → members: resigned the lease
/// (clean stop): try to take it at once.
struct fleet_leave {
  static constexpr std::string_view kind = "fleet.leave";
  std::string host;
  std::string reason;
  MSGPACK_DEFINE(host, reason);
};

} // namespace shoal::workers::fleet
