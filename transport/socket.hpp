#pragma once
// ZeroMQ sockets that carry envelopes: one envelope per frame (ENVELOPE.md §7), a ROUTER's
// routing frame in front. Every send is non-blocking; every message that does not make it
// (high-water mark, unroutable, undecodable) is counted in socket_stats, never dropped silently.

#include "transport/codec.hpp"
#include "transport/endpoint.hpp"
#include "transport/envelope.hpp"
#include "transport/error.hpp"

#include <zmq.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::transport {

/// Largest linger accepted, so a close never waits forever (libzmq's default is -1 = forever).
inline constexpr std::chrono::milliseconds max_linger{60'000};

/// Socket settings applied by `envelope_socket::make` before any bind/connect.
/// Every field has a safe default; libzmq option names are given for reference (zmq_setsockopt).
struct socket_options {
  /// How long close() may keep unsent messages (ZMQ_LINGER). Clamped to 0..max_linger.
  std::chrono::milliseconds linger{1000};
  int send_hwm = 1000;    ///< queued outgoing messages per peer before sends drop (ZMQ_SNDHWM)
  int receive_hwm = 1000; ///< queued incoming messages per peer (ZMQ_RCVHWM)
  /// ZMTP PING interval (ZMQ_HEARTBEAT_IVL, RFC 37 §PING); 0 disables heartbeats.
  std::chrono::milliseconds heartbeat_interval{0};
  /// Time without any traffic after a PING before the peer is dropped (ZMQ_HEARTBEAT_TIMEOUT);
  /// 0 means "same as the interval".
  std::chrono::milliseconds heartbeat_timeout{0};
  /// TTL we ask the peer to apply to us (ZMQ_HEARTBEAT_TTL, whole deciseconds, ≤ 6553.5 s).
  std::chrono::milliseconds heartbeat_ttl{0};
  /// First reconnect delay (ZMQ_RECONNECT_IVL); -1 ms disables reconnecting.
  std::chrono::milliseconds reconnect_interval{100};
  /// Reconnect backoff cap: the delay doubles up to this (ZMQ_RECONNECT_IVL_MAX); 0 = no backoff.
  std::chrono::milliseconds reconnect_interval_max{0};
  /// ROUTER only: fail sends to unknown peers with `unroutable` (ZMQ_ROUTER_MANDATORY) instead of
  /// libzmq's default of dropping them silently.
  bool router_mandatory = true;
  /// Queue messages only to completed connections (ZMQ_IMMEDIATE); sends then count a drop
  /// while no peer is connected instead of queueing for a future one.
  bool immediate = false;
  /// DEALER/ROUTER identity presented to ROUTER peers (ZMQ_ROUTING_ID), 1..255 bytes.
  std::optional<std::string> routing_id;
  /// Frame bounds for decode and encode; `limits.max_frame_bytes` is also set as ZMQ_MAXMSGSIZE
  /// so libzmq disconnects a peer sending a larger frame before buffering it.
  decode_limits limits;
};

/// Counters of one socket. Written only by the owner thread, readable from any thread (relaxed
/// atomics: each counter is exact, a set of them is not a consistent snapshot). Cache-line
/// aligned so two sockets' counters never share a line across threads.
struct alignas(64) socket_stats {
  std::atomic<std::uint64_t> sent{0};          ///< envelopes handed to libzmq
  std::atomic<std::uint64_t> received{0};      ///< envelopes received and decoded
  std::atomic<std::uint64_t> dropped_hwm{0};   ///< sends refused with would_block (HWM or no peer)
  std::atomic<std::uint64_t> unroutable{0};    ///< ROUTER sends to an unknown routing id
  std::atomic<std::uint64_t> decode_errors{0}; ///< frames received but rejected by decode
  std::atomic<std::uint64_t> encode_errors{0}; ///< envelopes refused by validate before sending
  std::atomic<std::uint64_t> send_errors{0};   ///< other send failures (closed, zmq)
  std::atomic<std::uint64_t> bytes_sent{0};    ///< encoded bytes handed to libzmq
  std::atomic<std::uint64_t> bytes_received{0};///< encoded bytes of decoded envelopes
};

/// An envelope received on a socket, with the ROUTER routing id it came from.
struct incoming {
  envelope env;                         ///< the decoded envelope
  std::vector<std::uint8_t> routing_id; ///< ROUTER only: the peer's routing id; else empty
};

/// A ZeroMQ socket that sends and receives envelopes. Supported types: PUSH/PULL, DEALER/ROUTER,
/// PAIR, PUB/SUB (SUB subscribes to everything). Owner only: like any ZeroMQ socket, use it from
/// one thread at a time; `stats()` may be read from any thread. Movable, not copyable.
class envelope_socket {
public:
  /// Creates a socket of `type` in `ctx` and applies `opts`. `ctx` must outlive the socket.
  /// Errors: invalid_argument (option out of range), closed (context terminated), zmq.
  [[nodiscard]] static result<envelope_socket> make(zmq::context_t& ctx, zmq::socket_type type,
                                                    const socket_options& opts = {});

  // -- wiring ---------------------------------------------------------------------------------

  /// Validates `endpoint` (endpoint::parse, use bind) and binds. For "tcp://host:0" or ":*" the
  /// chosen port is in `last_endpoint()`. Errors: invalid_argument, zmq (e.g. EADDRINUSE).
  [[nodiscard]] result<void> bind(std::string_view endpoint);
  /// Validates `endpoint` (use connect) and connects; libzmq reconnects in the background per
  /// socket_options. Errors: invalid_argument, zmq.
  [[nodiscard]] result<void> connect(std::string_view endpoint);
  /// The endpoint last bound, with the resolved port ("tcp://127.0.0.1:41234"); empty if none.
  std::string last_endpoint() const;

  // -- messaging ------------------------------------------------------------------------------

  /// Encodes `env` straight into a ZeroMQ message and sends it without blocking (non-ROUTER
  /// types). Errors: invalid_value/… from validate (counted in encode_errors), would_block (HWM
  /// reached or no peer: counted in dropped_hwm, the envelope is dropped), closed, zmq.
  [[nodiscard]] result<void> send(const envelope& env);
  /// ROUTER: sends `env` to the peer with `routing_id`, without blocking. Errors: as `send`, plus
  /// unroutable (no such peer, counted in stats().unroutable).
  [[nodiscard]] result<void> send(std::span<const std::uint8_t> routing_id, const envelope& env);
  /// As `send(env)`, but when the high-water mark is reached it waits up to `wait` for room
  /// (zmq_poll POLLOUT) before giving up: backpressure for producers that must not drop. Only a
  /// send still refused after `wait` counts in dropped_hwm. Errors: as `send`.
  [[nodiscard]] result<void> send(const envelope& env, std::chrono::milliseconds wait);
  /// ROUTER form of the waiting send. Errors: as `send(routing_id, env)`.
  [[nodiscard]] result<void> send(std::span<const std::uint8_t> routing_id, const envelope& env,
                                  std::chrono::milliseconds wait);
  /// Sends an already encoded frame (e.g. one being forwarded), unchanged and unchecked; pass
  /// `routing_id` on a ROUTER. Errors and counters as `send`.
  [[nodiscard]] result<void> send_encoded(std::span<const std::uint8_t> frame,
                                          std::span<const std::uint8_t> routing_id = {});

  /// Waits up to `timeout` (0 = just look) for one frame and decodes it into `out`, reusing
  /// its buffers; on a ROUTER the sender's routing id goes to `*routing_id` when given.
  /// Errors: timeout; any decode error (frame consumed, counted in decode_errors: call again for
  /// the next one); malformed for a multipart message of the wrong shape; closed; zmq.
  [[nodiscard]] result<void> receive(envelope& out, std::chrono::milliseconds timeout,
                                     std::vector<std::uint8_t>* routing_id = nullptr);
  /// Convenience form of `receive` returning a fresh `incoming`.
  [[nodiscard]] result<incoming> receive(std::chrono::milliseconds timeout);
  /// The ZAP "User-Id" of the connection the last received frame came from (zmq_msg_gets, RFC
  /// 27): with shoal's ZAP handler, the peer's CURVE public key in Z85 (curve.hpp). Empty when
  /// no ZAP handler admitted the peer (plain links) or nothing was received yet. Valid until
  /// the next receive. Owner only.
  std::string_view peer_user_id() const noexcept;

  // -- access ---------------------------------------------------------------------------------

  /// The underlying cppzmq socket, for zmq::poll/zmq::poller_t or extra options (e.g. CURVE via
  /// curve.hpp, before bind/connect). Do not send or receive on it directly while using the
  /// envelope methods.
  zmq::socket_t& raw() noexcept { return socket_; }
  /// This socket's counters.
  const socket_stats& stats() const noexcept { return *stats_; }
  /// Shared handle on the counters, for a monitor that may outlive the socket.
  std::shared_ptr<const socket_stats> stats_handle() const noexcept { return stats_; }
  /// The socket type given to `make`.
  zmq::socket_type type() const noexcept { return type_; }
  /// The options given to `make` (after clamping).
  const socket_options& options() const noexcept { return opts_; }

private:
  envelope_socket(zmq::socket_t s, zmq::socket_type type, socket_options opts);
  result<void> send_frames(std::span<const std::uint8_t> routing_id, zmq::message_t& frame,
                           std::chrono::milliseconds wait);

  zmq::socket_t socket_;
  zmq::socket_type type_;
  socket_options opts_;
  std::shared_ptr<socket_stats> stats_;
  zmq::message_t rx_;   // reused receive frame
};

} // namespace shoal::transport
