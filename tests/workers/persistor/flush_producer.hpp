#pragma once
// A push producer of the persistor tests (persistor_it.cpp, push_flush_it.cpp): a DEALER that
// sends persist.record envelopes to open day partitions, persist.flush envelopes, and collects
// the ids the persistor acks (transport/ENVELOPE.md "persist.*"). Not thread-safe.

#include "transport/socket.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <string>

namespace shoal::tests {

struct flush_producer {
  zmq::context_t ctx{1};
  std::optional<transport::envelope_socket> sock;
  std::set<std::string> acked; ///< hex ids of the acked records and flushes

  explicit flush_producer(const std::string& endpoint) {
    transport::socket_options so;
    so.linger = std::chrono::milliseconds(0);
    so.send_hwm = 100'000;
    auto s = transport::envelope_socket::make(ctx, zmq::socket_type::dealer, so);
    EXPECT_TRUE(s);
    sock.emplace(std::move(*s));
    EXPECT_TRUE(sock->connect(endpoint));
  }
  /// The id of record number `k` (its 8 bytes, little-endian, then zeros).
  static transport::message_id id_of(std::uint64_t k) {
    transport::message_id id{};
    std::memcpy(id.data(), &k, sizeof k);
    return id;
  }
  /// Sends records first .. first+n-1 to `dest`, their event times spread over `days` days of
  /// February 2001 (one open batch per day partition).
  void send(const std::string& dest, std::uint64_t first, std::size_t n, std::size_t days) {
    transport::envelope env;
    env.kind = "persist.record";
    env.from = "flushit@1@h";
    env.hdr["dest"] = dest;
    env.body = {'{', '}'};
    for (std::size_t i = 0; i < n; ++i) {
      env.id = id_of(first + i);
      env.ts_ns = 1;
      char ts[48];
      std::snprintf(ts, sizeof ts, "2001-02-%02uT10:00:00Z", static_cast<unsigned>(1 + i % days % 28));
      env.hdr["event_time"] = ts;
      ASSERT_TRUE(sock->send(env, std::chrono::milliseconds(1000)));
    }
  }
  /// Sends one persist.flush with a fresh id; that id.
  transport::message_id flush() {
    transport::envelope env;
    env.kind = "persist.flush";
    env.from = "flushit@1@h";
    env.id = transport::new_message_id();
    env.ts_ns = 1;
    EXPECT_TRUE(sock->send(env, std::chrono::milliseconds(1000)));
    return env.id;
  }
  /// Takes the acks delivered within `wait` (or until `until`, a hex id, is acked). (Waits in the
  /// socket's receive, consuming as it goes, so not with tests/support/eventually.hpp.)
  void drain(std::chrono::milliseconds wait, const std::string& until = {}) {
    const auto end = std::chrono::steady_clock::now() + wait;
    transport::envelope in;
    while (std::chrono::steady_clock::now() < end && (until.empty() || !acked.contains(until))) {
      if (!sock->receive(in, std::chrono::milliseconds(20)) || in.kind != "persist.ack")
        continue;
      for (std::size_t off = 0; off + 16 <= in.body.size(); off += 16) {
        transport::message_id id{};
        std::memcpy(id.data(), in.body.data() + off, 16);
        acked.insert(transport::to_hex(id));
      }
    }
  }
};

} // namespace shoal::tests
