#include "transport/endpoint.hpp"

#include <cctype>
#include <charconv>

namespace shoal::transport {
namespace {

result<endpoint> bad(std::string_view text, std::string_view why) {
  std::string m = "endpoint '";
  m += text;
  m += "': ";
  m += why;
  return fail(errc::invalid_argument, std::move(m));
}

bool printable(std::string_view s) {
  for (unsigned char c : s)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

// RFC 1123 host name, or dotted IPv4 (which is a special case of it), or a Linux interface name.
bool host_name(std::string_view h) {
  if (h.empty() || h.size() > 253) return false;
  for (unsigned char c : h)
    if (!(std::isalnum(c) || c == '.' || c == '-' || c == '_')) return false;
  return h.front() != '-' && h.front() != '.';
}

bool ipv6_literal(std::string_view h) {
  if (h.empty() || h.size() > 45) return false;
  bool colon = false;
  for (unsigned char c : h) {
    if (c == ':') colon = true;
    else if (!(std::isxdigit(c) || c == '.' || c == '%')) return false;
  }
  return colon;
}

} // namespace

bool endpoint::host_local() const noexcept {
  if (scheme != endpoint_scheme::tcp)
    return true;
  if (host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1")
    return true;
  // 127.0.0.0/8: "127." followed by three decimal octets.
  if (!host.starts_with("127."))
    return false;
  int dots = 0;
  int octet = -1;
  for (std::size_t i = 4; i < host.size(); ++i) {
    const char c = host[i];
    if (c == '.') {
      if (octet < 0) return false;
      ++dots;
      octet = -1;
    } else if (c >= '0' && c <= '9') {
      octet = (octet < 0 ? 0 : octet * 10) + (c - '0');
      if (octet > 255) return false;
    } else {
      return false;
    }
  }
  return dots == 2 && octet >= 0;
}

std::string endpoint::text() const {
  switch (scheme) {
  case endpoint_scheme::inproc: return "inproc://" + address;
  case endpoint_scheme::ipc: return "ipc://" + address;
  case endpoint_scheme::tcp: break;
  }
  const bool v6 = host.find(':') != std::string::npos;
  std::string out = "tcp://";
  out += v6 ? "[" + host + "]" : host;
  out += ':';
  out += port == 0 ? std::string("*") : std::to_string(port);
  return out;
}

result<endpoint> endpoint::parse(std::string_view text, endpoint_use use) {
  const auto sep = text.find("://");
  if (sep == std::string_view::npos) return bad(text, "missing \"scheme://\"");
  const std::string_view scheme = text.substr(0, sep);
  const std::string_view rest = text.substr(sep + 3);
  endpoint ep;
  ep.address.assign(rest);
  if (scheme == "inproc") {
    ep.scheme = endpoint_scheme::inproc;
    if (rest.empty()) return bad(text, "empty inproc name");
    if (rest.size() > max_inproc_name_bytes) return bad(text, "inproc name longer than 256 bytes");
    if (!printable(rest)) return bad(text, "inproc name must be printable ASCII without spaces");
    return ep;
  }
  if (scheme == "ipc") {
    ep.scheme = endpoint_scheme::ipc;
    if (rest.empty()) return bad(text, "empty ipc path");
    if (rest == "*") {
      if (use == endpoint_use::connect) return bad(text, "cannot connect to a wildcard ipc path");
      return ep;
    }
    if (rest.size() > max_ipc_path_bytes)
      return bad(text, "ipc path longer than 107 bytes (the Unix socket path limit)");
    if (rest.find('\0') != std::string_view::npos) return bad(text, "ipc path contains NUL");
    return ep;
  }
  if (scheme != "tcp")
    return bad(text, "unsupported scheme '" + std::string(scheme) + "' (inproc, ipc or tcp)");
  ep.scheme = endpoint_scheme::tcp;
  if (rest.find(';') != std::string_view::npos)
    return bad(text, "source-address form \"src;dst\" is not supported");
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos) return bad(text, "missing \":port\"");
  std::string_view host = rest.substr(0, colon);
  const std::string_view port = rest.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    if (!ipv6_literal(host)) return bad(text, "bad IPv6 literal");
  } else if (host == "*") {
    if (use == endpoint_use::connect) return bad(text, "cannot connect to host \"*\"");
  } else if (!host_name(host)) {
    return bad(text, host.empty() ? "empty host" : "bad host name (IPv6 needs [brackets])");
  }
  ep.host.assign(host);
  if (port == "*") {
    if (use == endpoint_use::connect) return bad(text, "cannot connect to port \"*\"");
    ep.port = 0;
    return ep;
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value > 65535)
    return bad(text, "port must be a number 0..65535 or \"*\"");
  if (value == 0 && use == endpoint_use::connect) return bad(text, "cannot connect to port 0");
  ep.port = static_cast<std::uint16_t>(value);
  return ep;
}

} // namespace shoal::transport
