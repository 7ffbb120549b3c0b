#pragma once
// A loopback TCP port for a server a test starts, picked where nothing else takes it meanwhile.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <mutex>
#include <random>

namespace shoal::tests {

/// A TCP port on 127.0.0.1 that was free when this returned, for a server started right after
/// (bound and released: a test tool, not a reservation). Picked at random in 20000–32767, below
/// Linux's ephemeral range (net.ipv4.ip_local_port_range, 32768–60999 by default): a port the
/// kernel hands out and we release can be taken at once as the local port of any outgoing
/// connection (the suite's tests open thousands to Azurite), which made a dashboard fail to
/// listen once; a port below the range is taken only by another explicit bind. Falls back to a
/// kernel-chosen port if 200 tries find none. Thread-safe.
inline int free_port() {
  static std::mutex m;
  static std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(::getpid()));
  auto try_bind = [](std::uint16_t port) -> int {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    int got = -1;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      socklen_t len = sizeof a;
      if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
        got = ntohs(a.sin_port);
    }
    ::close(fd);
    return got;
  };
  for (int i = 0; i < 200; ++i) {
    std::uint16_t port = 0;
    {
      std::lock_guard lk(m);
      port = static_cast<std::uint16_t>(std::uniform_int_distribution<int>(20000, 32767)(rng));
    }
    if (const int p = try_bind(port); p > 0)
      return p;
  }
  return try_bind(0);
}

} // namespace shoal::tests
