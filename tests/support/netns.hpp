#pragma once
// Hosts of a test in network namespaces (needs root): a bridge in the root namespace with
// address {subnet}.1/24, and one namespace per host with {subnet}.{n} on a veth pair plugged
// into it. Used by tests/system/multihost_it.cpp and the chaos scenarios (tests/system/chaos).

#include <string>
#include <vector>

namespace shoal::tests {

/// Runs `cmd` with /bin/sh, its output discarded. True when it exits 0. Thread-safe.
bool sh(const std::string& cmd);

/// The bridge, the namespaces and the veth pairs; all removed by the destructor (every process
/// left in a namespace is killed first), whatever happened. Owner only.
struct test_network {
  std::string bridge;                   ///< e.g. "shbr1234"; empty when it could not be made
  std::string subnet;                   ///< "10.213.N": the bridge is .1, hosts .2, .3, …
  std::vector<std::string> namespaces;  ///< in the order added
  std::vector<std::string> root_links;  ///< the root ends of the veth pairs

  test_network() = default;
  test_network(const test_network&) = delete;
  test_network& operator=(const test_network&) = delete;
  ~test_network();

  /// Makes bridge `name` with {subnet}.1/24, up. False on any failure (not root, no bridge
  /// support): the caller skips its test.
  bool create_bridge(const std::string& name, const std::string& subnet_prefix);
  /// Adds namespace `ns` with address {subnet}.{host} on the bridge; `tag` names its veth ends
  /// (tag+"r", tag+"n"; ≤ 13 characters). False on any failure.
  bool add(const std::string& ns, const std::string& tag, int host);

  /// From inside namespace `ns`, packets to `address` are dropped silently (a blackhole route,
  /// so nothing tells the sender: as when a link or a switch fails). True on success.
  static bool cut(const std::string& ns, const std::string& address);
  /// Removes what cut() added. True on success.
  static bool heal(const std::string& ns, const std::string& address);
};

} // namespace shoal::tests
