#pragma once
// A fleet of hosts in network namespaces (issue 19): a bridge and one namespace per host
// (netns.hpp), one Azurite on the bridge address shared by every host, CURVE keys for each host
// in one allow dir, and per host a `shoal supervisor` with its workers started inside its
// namespace. Optionally the daemons reach Azurite through an in-process fault proxy with no plan
// (fault_proxy.hpp), which only counts their storage requests. Used by the 4-host system test
// (tests/system/scale_it.cpp) and the scale bench (bench/scale_bench.cpp).
//
// Needs root (ip netns, ip link): skip_reason() says why it cannot run otherwise.

#include "storage/table_client.hpp"
#include "workers/child_process.hpp"
#include "workers/fleet/status.hpp"
#include "workers/claim/work_table.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::tests {

/// What the whole fleet shares.
struct netns_fleet_options {
  std::string prefix = "nf";          ///< ≤ 6 letters: names of namespaces, links, tables, the folder
  std::size_t hosts = 4;              ///< namespaces made up front; host i is {subnet}.{2+i}
  bool count_requests = false;        ///< the daemons go through a counting proxy (storage_requests())
  std::uint32_t work_lease_ms = 5'000; ///< [work] lease_ms (renewed every third of it)
  std::uint32_t shards = 16;          ///< [work] shards
};

/// How one host's supervisor runs (its configuration file).
struct netns_host_settings {
  std::uint32_t workers = 2;          ///< [fleet] workers
  std::string worker_toml;            ///< body of the [worker] section (job, queue, exec_command, …)
  std::uint32_t heartbeat_interval_ms = 200;  ///< [fleet] heartbeat_interval_ms
  std::uint32_t heartbeat_liveness = 3;       ///< [fleet] heartbeat_liveness
  std::uint32_t coordinator_lease_ms = 3'000; ///< [fleet] coordinator_lease_ms
  std::uint32_t coordinator_renew_ms = 1'000; ///< [fleet] coordinator_renew_ms
  /// true: a tcp host_endpoint with CURVE and the shared fleet table (the coordinator assigns
  /// shards to hosts). false: no host_endpoint and a fleet table of its own, so the host knows no
  /// other and its workers claim from every shard (shard assignment between hosts off).
  bool fleet = true;
};

/// The namespaces, Azurite, keys and supervisors. Owner only (not thread-safe); the destructor
/// SIGKILLs every supervisor tree, stops Azurite and removes the namespaces.
class netns_fleet {
public:
  explicit netns_fleet(netns_fleet_options o);
  ~netns_fleet();
  netns_fleet(const netns_fleet&) = delete;
  netns_fleet& operator=(const netns_fleet&) = delete;

  /// Non-empty when this machine cannot make namespaces (not root, no bridge): skip.
  const std::string& skip_reason() const noexcept { return skip_; }
  /// Non-empty when set-up failed otherwise (Azurite, keys, the work table): a failure.
  const std::string& error() const noexcept { return error_; }

  /// "h0", "h1", …: host i's name in the fleet.
  std::string host(std::size_t i) const { return "h" + std::to_string(i); }
  std::size_t size() const noexcept { return o_.hosts; }
  /// The work table (observed directly on Azurite, not through the proxy).
  workers::work_table& work() { return *work_; }
  const std::filesystem::path& dir() const noexcept { return dir_; }

  /// Starts host i's supervisor with `s` (writes its configuration first). False with error()
  /// set when it cannot be started. A host may be started again after it stopped.
  bool start(std::size_t i, const netns_host_settings& s);
  /// SIGKILL to every process of host i (supervisor and workers, as when the machine dies).
  void kill(std::size_t i);
  /// SIGTERM to host i's supervisor; its exit status (nullopt after `limit`: then killed).
  std::optional<int> terminate(std::size_t i, std::chrono::milliseconds limit);
  /// True while host i's supervisor runs.
  bool running(std::size_t i);
  /// Host i's supervisor status over its ipc endpoint; nullopt when it does not answer.
  /// `answered_at`, when given, gets the supervisor's wall clock when it sent the answer.
  std::optional<workers::fleet::fleet_status>
  status(std::size_t i, std::chrono::system_clock::time_point* answered_at = nullptr) const;
  /// The host named in the fleet table's coordinator row ("" when none), and its epoch.
  std::string coordinator() const;

  /// Storage requests the daemons sent since the proxy started (0 without count_requests).
  std::uint64_t storage_requests() const;
  /// Records of `queue` by status (pending, claimed, done, dead); empty map on a read error.
  std::map<std::string, std::uint64_t> counts(const std::string& queue) const;
  /// Enqueues `n` records "{prefix}{i:06}" with payload "x". False on error (error() says).
  bool enqueue(const std::string& queue, std::size_t n, const std::string& prefix);

  /// The last `bytes` of every supervisor log, for a failure message.
  std::string logs(std::size_t bytes = 3000) const;

private:
  std::string toml(std::size_t i, const netns_host_settings& s) const;

  struct impl;
  netns_fleet_options o_;
  std::string skip_, error_;
  std::filesystem::path dir_;
  std::unique_ptr<impl> impl_;
  std::optional<workers::work_table> work_;
};

} // namespace shoal::tests
