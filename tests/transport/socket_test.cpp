#include "transport/socket.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

namespace shoal::transport {
namespace {

using namespace std::chrono_literals;

// Unique names per test so parallel ctest runs never collide.
std::string unique(std::string_view prefix) {
  static std::atomic<int> n{0};
  return std::string(prefix) + std::to_string(::getpid()) + "-" + std::to_string(n++);
}
std::string inproc_name() { return "inproc://" + unique("socket-test-"); }
std::string ipc_name() { return "ipc:///tmp/" + unique("shoal-socket-test-") + ".sock"; }

envelope sample(std::string kind = "test.ping") {
  envelope e;
  e.id = new_message_id();
  e.kind = std::move(kind);
  e.from = "test@socket_test@localhost";
  e.ts_ns = 123;
  e.body = {1, 2, 3, 4};
  return e;
}

template <class T> T must(result<T> r) {
  EXPECT_TRUE(r) << r.error().describe();
  if (!r) throw std::runtime_error(r.error().describe()); // aborts the test body only
  return std::move(*r);
}

// -- endpoints ----------------------------------------------------------------------------------

TEST(EndpointTest, ParsesEachSchemeAndUsageExample) {
  auto tcp = endpoint::parse("tcp://127.0.0.1:5555", endpoint_use::connect);
  ASSERT_TRUE(tcp) << tcp.error().describe();
  EXPECT_EQ(tcp->scheme, endpoint_scheme::tcp);
  EXPECT_EQ(tcp->host, "127.0.0.1");
  EXPECT_EQ(tcp->port, 5555);
  EXPECT_EQ(tcp->text(), "tcp://127.0.0.1:5555");
  auto any = endpoint::parse("tcp://*:*", endpoint_use::bind);
  ASSERT_TRUE(any);
  EXPECT_EQ(any->port, 0);
  auto v6 = endpoint::parse("tcp://[::1]:7000", endpoint_use::connect);
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->text(), "tcp://[::1]:7000");
  EXPECT_TRUE(endpoint::parse("tcp://sup-1.example.net:7000", endpoint_use::connect));
  auto ipc = endpoint::parse("ipc:///run/shoal/sup.sock", endpoint_use::bind);
  ASSERT_TRUE(ipc);
  EXPECT_EQ(ipc->scheme, endpoint_scheme::ipc);
  EXPECT_EQ(ipc->address, "/run/shoal/sup.sock");
  auto in = endpoint::parse("inproc://actors.gateway", endpoint_use::connect);
  ASSERT_TRUE(in);
  EXPECT_EQ(in->text(), "inproc://actors.gateway");
}

TEST(EndpointTest, RejectsBadEndpointsWithClearErrors) {
  const std::pair<const char*, endpoint_use> bad[] = {
      {"", endpoint_use::bind},
      {"127.0.0.1:5555", endpoint_use::connect},          // no scheme
      {"udp://127.0.0.1:5555", endpoint_use::connect},    // unsupported scheme
      {"tcp://127.0.0.1", endpoint_use::connect},         // no port
      {"tcp://:5555", endpoint_use::connect},             // no host
      {"tcp://127.0.0.1:65536", endpoint_use::bind},      // port out of range
      {"tcp://127.0.0.1:http", endpoint_use::bind},       // port not a number
      {"tcp://127.0.0.1:0", endpoint_use::connect},       // port 0 for connect
      {"tcp://127.0.0.1:*", endpoint_use::connect},       // wildcard port for connect
      {"tcp://*:5555", endpoint_use::connect},            // wildcard host for connect
      {"tcp://::1:5555", endpoint_use::connect},          // IPv6 without brackets
      {"tcp://a b:5555", endpoint_use::connect},          // space in host
      {"tcp://10.0.0.1:5555;10.0.0.2:6666", endpoint_use::connect}, // src;dst form
      {"ipc://", endpoint_use::bind},
      {"ipc://*", endpoint_use::connect},
      {"inproc://", endpoint_use::bind},
      {"inproc://has space", endpoint_use::bind},
  };
  for (const auto& [text, use] : bad) {
    auto r = endpoint::parse(text, use);
    ASSERT_FALSE(r) << "accepted '" << text << "'";
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_NE(r.error().message.find("endpoint '"), std::string::npos) << r.error().message;
  }
  auto long_ipc = endpoint::parse("ipc:///" + std::string(107, 'p'), endpoint_use::bind);
  ASSERT_FALSE(long_ipc);
  EXPECT_NE(long_ipc.error().message.find("107"), std::string::npos);
}

// -- sockets ------------------------------------------------------------------------------------

TEST(EnvelopeSocketTest, PushPullCarriesEnvelopesOverInprocIpcAndTcp) {
  zmq::context_t ctx;
  for (const std::string& where : {inproc_name(), ipc_name(), std::string("tcp://127.0.0.1:*")}) {
    auto pull = must(envelope_socket::make(ctx, zmq::socket_type::pull));
    auto push = must(envelope_socket::make(ctx, zmq::socket_type::push));
    ASSERT_TRUE(pull.bind(where)) << where;
    const std::string bound = pull.last_endpoint();
    ASSERT_FALSE(bound.empty());
    ASSERT_TRUE(push.connect(bound)) << bound;
    const envelope out = sample();
    auto sent = push.send(out);
    ASSERT_TRUE(sent) << sent.error().describe();
    auto in = pull.receive(5s);
    ASSERT_TRUE(in) << where << ": " << in.error().describe();
    EXPECT_EQ(in->env, out);
    EXPECT_EQ(push.stats().sent.load(), 1u);
    EXPECT_EQ(pull.stats().received.load(), 1u);
    EXPECT_EQ(pull.stats().bytes_received.load(), encoded_size(out));
    if (where.starts_with("ipc://")) // libzmq 4.3 leaves the socket file behind
      std::filesystem::remove(where.substr(6));
  }
}

// PUSH → PULL over inproc with high-water marks of 1: the pipe fills after a message or two.
struct hwm1_pair {
  static socket_options hwm1() {
    socket_options o;
    o.send_hwm = 1;
    o.receive_hwm = 1;
    return o;
  }
  zmq::context_t ctx;
  envelope_socket pull = must(envelope_socket::make(ctx, zmq::socket_type::pull, hwm1()));
  envelope_socket push = must(envelope_socket::make(ctx, zmq::socket_type::push, hwm1()));
  const std::string where = inproc_name();
  const bool connected = static_cast<bool>(pull.bind(where)) && static_cast<bool>(push.connect(where));
};

TEST(EnvelopeSocketTest, CountsDropsAtTheHighWaterMark) {
  hwm1_pair pair;
  ASSERT_TRUE(pair.connected);
  auto& pull = pair.pull;
  auto& push = pair.push;
  std::uint64_t ok = 0, dropped = 0;
  for (int i = 0; i < 10000 && dropped < 5; ++i) {
    auto r = push.send(sample());
    if (r) { ++ok; continue; }
    ASSERT_EQ(r.error().code, errc::would_block) << r.error().describe();
    ++dropped;
  }
  EXPECT_EQ(dropped, 5u) << "the pipe never filled";
  EXPECT_GE(ok, 1u);
  EXPECT_EQ(push.stats().dropped_hwm.load(), dropped);
  EXPECT_EQ(push.stats().sent.load(), ok);
  std::uint64_t got = 0;
  while (pull.receive(0ms)) ++got;
  EXPECT_EQ(got, ok); // every accepted envelope arrives; only the counted ones were dropped
}

TEST(EnvelopeSocketTest, WaitingSendAppliesBackpressureInsteadOfDropping) {
  hwm1_pair pair;
  ASSERT_TRUE(pair.connected);
  auto& pull = pair.pull;
  auto& push = pair.push;
  std::uint64_t ok = 0;
  while (push.send(sample())) ++ok;
  ASSERT_EQ(push.stats().dropped_hwm.load(), 1u);
  // Still full: a bounded wait gives up and counts one more drop.
  const auto t0 = std::chrono::steady_clock::now();
  auto r = push.send(sample(), 40ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::would_block);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 35ms);
  EXPECT_EQ(push.stats().dropped_hwm.load(), 2u);
  // Room appears once the receiver reads; the waiting send then goes through.
  ASSERT_TRUE(pull.receive(1s));
  auto later = push.send(sample(), 5s);
  ASSERT_TRUE(later) << later.error().describe();
  EXPECT_EQ(push.stats().sent.load(), ok + 1);
  EXPECT_EQ(push.stats().dropped_hwm.load(), 2u);
}

TEST(EnvelopeSocketTest, CountsUnroutableSendsAtARouterAndRepliesToKnownPeers) {
  zmq::context_t ctx;
  auto router = must(envelope_socket::make(ctx, zmq::socket_type::router));
  socket_options dopts;
  dopts.routing_id = "worker-1";
  auto dealer = must(envelope_socket::make(ctx, zmq::socket_type::dealer, dopts));
  ASSERT_TRUE(router.bind("tcp://127.0.0.1:*"));
  ASSERT_TRUE(dealer.connect(router.last_endpoint()));

  const std::string ghost = "nobody";
  auto r = router.send(std::span(reinterpret_cast<const std::uint8_t*>(ghost.data()), ghost.size()), sample());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unroutable);
  EXPECT_EQ(router.stats().unroutable.load(), 1u);
  EXPECT_EQ(router.stats().sent.load(), 0u);

  ASSERT_TRUE(dealer.send(sample("ctl.hello")));
  auto hello = router.receive(5s);
  ASSERT_TRUE(hello) << hello.error().describe();
  EXPECT_EQ(std::string(hello->routing_id.begin(), hello->routing_id.end()), "worker-1");
  EXPECT_EQ(hello->env.kind, "ctl.hello");
  ASSERT_TRUE(router.send(hello->routing_id, sample("ctl.assign")));
  auto assign = dealer.receive(5s);
  ASSERT_TRUE(assign) << assign.error().describe();
  EXPECT_EQ(assign->env.kind, "ctl.assign");
  // A ROUTER send without a routing id is a caller error, not a drop.
  auto no_id = router.send(sample());
  ASSERT_FALSE(no_id);
  EXPECT_EQ(no_id.error().code, errc::invalid_argument);
}

TEST(EnvelopeSocketTest, CountsAndSkipsUndecodableFrames) {
  zmq::context_t ctx;
  auto pull = must(envelope_socket::make(ctx, zmq::socket_type::pull));
  const std::string where = inproc_name();
  ASSERT_TRUE(pull.bind(where));
  zmq::socket_t raw(ctx, zmq::socket_type::push);
  raw.connect(where);
  raw.send(zmq::str_buffer("\xc1garbage"), zmq::send_flags::none);
  raw.send(zmq::str_buffer("part1"), zmq::send_flags::sndmore);
  raw.send(zmq::str_buffer("part2"), zmq::send_flags::none);
  auto good = encode(sample("after.garbage"));
  ASSERT_TRUE(good);
  raw.send(zmq::buffer(*good), zmq::send_flags::none);

  auto first = pull.receive(5s);
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().code, errc::malformed);
  auto second = pull.receive(5s);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, errc::malformed); // multipart
  EXPECT_EQ(pull.stats().decode_errors.load(), 2u);
  auto third = pull.receive(5s);
  ASSERT_TRUE(third) << third.error().describe();
  EXPECT_EQ(third->env.kind, "after.garbage");
  EXPECT_EQ(pull.stats().received.load(), 1u);
  raw.set(zmq::sockopt::linger, 0);
}

TEST(EnvelopeSocketTest, RefusesInvalidEnvelopesBeforeSending) {
  zmq::context_t ctx;
  auto push = must(envelope_socket::make(ctx, zmq::socket_type::push));
  envelope e = sample();
  e.kind.assign(65, 'k');
  auto r = push.send(e);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_value);
  EXPECT_EQ(push.stats().encode_errors.load(), 1u);
}

TEST(EnvelopeSocketTest, ReceiveTimesOutWhenNothingArrives) {
  zmq::context_t ctx;
  auto pull = must(envelope_socket::make(ctx, zmq::socket_type::pull));
  ASSERT_TRUE(pull.bind(inproc_name()));
  const auto t0 = std::chrono::steady_clock::now();
  auto r = pull.receive(30ms);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 25ms);
}

TEST(EnvelopeSocketTest, AppliesHeartbeatReconnectLingerAndHwmOptions) {
  zmq::context_t ctx;
  socket_options opts;
  opts.linger = std::chrono::minutes(10); // clamped to max_linger
  opts.send_hwm = 123;
  opts.receive_hwm = 456;
  opts.heartbeat_interval = 1000ms;
  opts.heartbeat_timeout = 3000ms;
  opts.heartbeat_ttl = 5000ms;
  opts.reconnect_interval = 250ms;
  opts.reconnect_interval_max = 8000ms;
  opts.limits.max_frame_bytes = 4096;
  auto s = must(envelope_socket::make(ctx, zmq::socket_type::dealer, opts));
  auto get = [&](int option) {
    int v = -2;
    std::size_t len = sizeof v;
    EXPECT_EQ(zmq_getsockopt(s.raw().handle(), option, &v, &len), 0) << option;
    return v;
  };
  EXPECT_EQ(get(ZMQ_LINGER), 60000);
  EXPECT_EQ(s.options().linger, max_linger);
  EXPECT_EQ(get(ZMQ_SNDHWM), 123);
  EXPECT_EQ(get(ZMQ_RCVHWM), 456);
  EXPECT_EQ(get(ZMQ_HEARTBEAT_IVL), 1000);
  EXPECT_EQ(get(ZMQ_HEARTBEAT_TIMEOUT), 3000);
  EXPECT_EQ(get(ZMQ_HEARTBEAT_TTL), 5000);
  EXPECT_EQ(get(ZMQ_RECONNECT_IVL), 250);
  EXPECT_EQ(get(ZMQ_RECONNECT_IVL_MAX), 8000);
  std::int64_t maxmsg = 0;
  std::size_t len = sizeof maxmsg;
  ASSERT_EQ(zmq_getsockopt(s.raw().handle(), ZMQ_MAXMSGSIZE, &maxmsg, &len), 0);
  EXPECT_EQ(maxmsg, 4096);
  // Defaults: linger bounded at 1 s, not libzmq's "forever".
  auto d = must(envelope_socket::make(ctx, zmq::socket_type::push));
  int linger = 0;
  len = sizeof linger;
  ASSERT_EQ(zmq_getsockopt(d.raw().handle(), ZMQ_LINGER, &linger, &len), 0);
  EXPECT_EQ(linger, 1000);
}

TEST(EnvelopeSocketTest, RejectsBadOptionsAndEndpoints) {
  zmq::context_t ctx;
  socket_options opts;
  opts.send_hwm = -1;
  auto s = envelope_socket::make(ctx, zmq::socket_type::push, opts);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::invalid_argument);
  opts = {};
  opts.routing_id = std::string(256, 'r');
  EXPECT_FALSE(envelope_socket::make(ctx, zmq::socket_type::dealer, opts));
  auto push = must(envelope_socket::make(ctx, zmq::socket_type::push));
  auto b = push.bind("tcp://127.0.0.1");
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, errc::invalid_argument);
  auto c = push.connect("tcp://127.0.0.1:*");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::invalid_argument);
  // A valid endpoint that libzmq refuses comes back as a zmq error with errno.
  auto pull = must(envelope_socket::make(ctx, zmq::socket_type::pull));
  ASSERT_TRUE(pull.bind("tcp://127.0.0.1:*"));
  auto again = push.bind(pull.last_endpoint());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::zmq);
  EXPECT_EQ(again.error().sys_errno, EADDRINUSE);
}

} // namespace
} // namespace shoal::transport
