#include "workers/fleet/ctl_protocol.hpp"

namespace shoal::workers::fleet {

std::string worker_owner(std::string_view host, std::string_view slot, long pid) {
  std::string out;
  out.reserve(host.size() + slot.size() + 24);
  out.append(host).append("/").append(slot).append("/").append(std::to_string(pid));
  return out;
}

std::string_view to_string(worker_state s) noexcept {
  switch (s) {
  case worker_state::starting: return "starting";
  case worker_state::idle: return "idle";
  case worker_state::working: return "working";
  case worker_state::draining: return "draining";
  }
  return "unknown";
}

} // namespace shoal::workers::fleet
