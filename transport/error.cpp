#include "transport/error.hpp"

namespace shoal::transport {

std::string_view to_string(errc c) noexcept {
  switch (c) {
  case errc::invalid_argument: return "invalid_argument";
  case errc::frame_too_large: return "frame_too_large";
  case errc::truncated: return "truncated";
  case errc::malformed: return "malformed";
  case errc::missing_field: return "missing_field";
  case errc::wrong_type: return "wrong_type";
  case errc::invalid_value: return "invalid_value";
  case errc::limit_exceeded: return "limit_exceeded";
  case errc::unsupported_version: return "unsupported_version";
  case errc::would_block: return "would_block";
  case errc::unroutable: return "unroutable";
  case errc::timeout: return "timeout";
  case errc::closed: return "closed";
  case errc::io: return "io";
  case errc::security: return "security";
  case errc::zmq: return "zmq";
  }
  return "unknown";
}

std::string error::describe() const {
  std::string out(to_string(code));
  out += ": ";
  out += message;
  if (sys_errno != 0) {
    out += " (errno ";
    out += std::to_string(sys_errno);
    out += ')';
  }
  return out;
}

} // namespace shoal::transport
