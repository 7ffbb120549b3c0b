#pragma once
// ZeroMQ endpoint strings ("inproc://name", "ipc:///path", "tcp://host:port"), checked before
// they reach libzmq so a typo is a clear error value instead of an errno.

#include "transport/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::transport {

/// The transports shoal uses (ZeroMQ RFC 37/ZMTP runs over tcp and ipc; inproc is in-memory).
enum class endpoint_scheme : std::uint8_t { inproc = 1, ipc = 2, tcp = 3 };

/// What the endpoint will be used for: wildcards ("*", port 0) are only meaningful for bind.
enum class endpoint_use : std::uint8_t { bind = 1, connect = 2 };

/// Longest ipc path libzmq accepts on Linux, in bytes (sizeof(sockaddr_un::sun_path) - 1).
inline constexpr std::size_t max_ipc_path_bytes = 107;
/// Longest inproc name we accept, in bytes.
inline constexpr std::size_t max_inproc_name_bytes = 256;

/// A parsed, validated endpoint.
struct endpoint {
  endpoint_scheme scheme = endpoint_scheme::inproc; ///< transport
  std::string address;  ///< inproc name, ipc path (or "*"), or tcp "host:port" as written
  std::string host;     ///< tcp only: host name, IPv4, "[IPv6]" without brackets, "*" or interface
  std::uint16_t port = 0; ///< tcp only: 0 means "any free port" (bind only; "*" is read as 0)

  /// The canonical text, "scheme://address", as libzmq expects it.
  std::string text() const;

  /// Whether traffic on this endpoint stays on this host: inproc, ipc, and tcp on a loopback
  /// address (127.0.0.0/8, ::1, "localhost"). A wildcard ("*", 0.0.0.0, ::), an interface name
  /// or any other host is not: such a link needs CURVE (ENVELOPE.md §7). Thread-safe (pure).
  bool host_local() const noexcept;

  /// Parses and validates `text` for `use`. Rules: inproc names are 1..256 printable ASCII
  /// bytes; ipc paths are 1..107 bytes without NUL ("*" only for bind); tcp needs host and
  /// port, the port 1..65535 for connect and 0..65535 or "*" for bind, the host a DNS name,
  /// IPv4, bracketed IPv6, or "*" (bind only). libzmq's "source;destination" form is refused.
  /// Errors: invalid_argument, with a message naming the rule broken. Thread-safe (pure).
  [[nodiscard]] static result<endpoint> parse(std::string_view text, endpoint_use use);
};

} // namespace shoal::transport
