#include "tests/support/netns.hpp"

#include <cstdlib>

namespace shoal::tests {

bool sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

test_network::~test_network() {
  for (const auto& ns : namespaces) {
    sh("ip netns pids " + ns + " | xargs -r kill -9");
    sh("ip netns del " + ns);
  }
  for (const auto& l : root_links) sh("ip link del " + l);
  if (!bridge.empty()) sh("ip link del " + bridge);
}

bool test_network::create_bridge(const std::string& name, const std::string& subnet_prefix) {
  if (!sh("ip link add " + name + " type bridge")) return false;
  bridge = name;
  subnet = subnet_prefix;
  return sh("ip addr add " + subnet + ".1/24 dev " + bridge) && sh("ip link set " + bridge + " up");
}

bool test_network::add(const std::string& ns, const std::string& tag, int host) {
  const std::string root_end = tag + "r", ns_end = tag + "n";
  if (!sh("ip netns add " + ns)) return false;
  namespaces.push_back(ns);
  if (!sh("ip link add " + root_end + " type veth peer name " + ns_end)) return false;
  root_links.push_back(root_end);
  return sh("ip link set " + ns_end + " netns " + ns) && sh("ip link set " + root_end + " master " + bridge) &&
         sh("ip link set " + root_end + " up") && sh("ip netns exec " + ns + " ip link set lo up") &&
         sh("ip netns exec " + ns + " ip addr add " + subnet + "." + std::to_string(host) + "/24 dev " + ns_end) &&
         sh("ip netns exec " + ns + " ip link set " + ns_end + " up");
}

bool test_network::cut(const std::string& ns, const std::string& address) {
  return sh("ip netns exec " + ns + " ip route add blackhole " + address + "/32");
}

bool test_network::heal(const std::string& ns, const std::string& address) {
  return sh("ip netns exec " + ns + " ip route del blackhole " + address + "/32");
}

} // namespace shoal::tests
