#pragma once
// Gateways carry envelopes between actor systems in different processes, on this host (ipc) or
// on others (tcp, with CURVE). Each gateway binds one ROUTER that peers connect to, and connects
// one DEALER to each configured peer's ROUTER: data to a peer goes out on our DEALER, data from
// it arrives on our ROUTER, and `actor_system::deliver` hands it to the named actor. Replies to
// cross-process requests travel the same way back, so both processes list each other as peers.
//
// Liveness: every `heartbeat_interval` the gateway pings each peer over its DEALER; the peer's
// ROUTER answers with a pong. A peer is `up` from its first pong (or any envelope from it) and
// `down` after `heartbeat_liveness` intervals without one (killed, frozen, or refused by ZAP).
// Sends to a peer that is not up fail at once with errc::peer_down. Transitions are
// reported through `on_peer_event` and readable with `peers()`/`peer_state_of()`. libzmq
// reconnects in the background with exponential backoff between `reconnect_min` and
// `reconnect_max`; a restarted peer on the same endpoint comes back `up` by itself.
//
//   auto gw = actors::gateway::start(sys, {.bind = "ipc:///run/shoal/p.sock",
//                                          .peers = {{.process = "q", .host = "h1",
//                                                     .endpoint = "ipc:///run/shoal/q.sock"}}});
//   sys.tell(actors::address{"echo", "q", "h1"}, msg);   // goes through the gateway

#include "actors/error.hpp"
#include "actors/system.hpp"
#include "transport/curve.hpp"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::actors {

/// What a gateway currently believes about a peer.
enum class peer_state : std::uint8_t {
  unknown = 0, ///< never heard from (just configured)
  up = 1,      ///< answered a heartbeat within the liveness window
  down = 2,    ///< was up (or never came up) and missed `heartbeat_liveness` heartbeats
};

/// One peer process.
struct peer_options {
  std::string process;                  ///< the peer's process name (address middle part)
  std::string host;                     ///< the peer's host name (address last part)
  std::string endpoint;                 ///< its gateway ROUTER, "ipc://…" or "tcp://host:port"
  std::optional<std::string> server_public_key{}; ///< CURVE: the peer's public key (Z85); tcp between hosts
};

/// A peer's state as reported by `on_peer_event` and `peers()`.
struct peer_info {
  std::string process;   ///< peer process name
  std::string host;      ///< peer host name
  std::string endpoint;  ///< what we connect to
  peer_state state = peer_state::unknown;
  std::uint64_t sent = 0;     ///< envelopes handed to the DEALER for this peer
  std::uint64_t dropped = 0;  ///< envelopes refused (peer down, HWM, encode error)
  std::uint64_t ups = 0;      ///< how many times it came up
  std::uint64_t downs = 0;    ///< how many times it went down
};

/// Gateway settings. CURVE is on when `curve` is set: our ROUTER becomes a CURVE server with
/// these keys and a ZAP handler admitting only keys listed in `zap_allow_list`; our DEALERs
/// present the same keys as clients to peers that have `server_public_key`.
struct gateway_options {
  std::string bind;                                   ///< our ROUTER endpoint ("tcp://127.0.0.1:0" picks a port)
  std::vector<peer_options> peers{};                  ///< peers to connect to (more via add_peer)
  std::optional<transport::curve_key_pair> curve{};   ///< our long-term CURVE keys; nullopt: no CURVE
  std::filesystem::path zap_allow_list{};             ///< client public keys admitted (required with curve)
  std::chrono::milliseconds heartbeat_interval{200};  ///< ping period per peer
  int heartbeat_liveness = 3;                         ///< missed pings before `down`
  std::chrono::milliseconds reconnect_min{100};       ///< first reconnect delay (ZMQ_RECONNECT_IVL)
  std::chrono::milliseconds reconnect_max{5000};      ///< backoff cap (ZMQ_RECONNECT_IVL_MAX)
  int send_hwm = 10000;                               ///< queued envelopes per peer before drops
  /// Called on the gateway thread at every up/down transition. Must not block or throw.
  std::function<void(const peer_info&)> on_peer_event{};
};

/// Counters of a gateway. Snapshots; thread-safe.
struct gateway_stats {
  std::uint64_t sent = 0;          ///< envelopes sent to peers
  std::uint64_t received = 0;      ///< envelopes received from peers and delivered
  std::uint64_t undeliverable = 0; ///< received envelopes no local actor took (not found, full, …)
  std::uint64_t dropped = 0;       ///< outgoing envelopes refused (peer down/unknown, HWM, encode)
  std::uint64_t decode_errors = 0; ///< frames received that were not valid envelopes
};

/// A running gateway: an I/O thread owning a ZeroMQ context, the ROUTER and one DEALER per peer.
/// Installs itself as the system's remote router on start and removes itself on stop. All public
/// members are thread-safe. Lifetime: borrows the actor_system; stop (or destroy) the gateway
/// before the system. Incoming mail for an actor whose mailbox policy is `block` blocks the I/O
/// thread while that mailbox is full (backpressure to the peer; heartbeats wait too).
class gateway {
public:
  /// Binds, connects to the peers, starts the thread and installs the router; returns once the
  /// ROUTER is bound. Errors: invalid_argument (bad options/endpoint), transport (bind, CURVE or
  /// ZAP setup failed).
  [[nodiscard]] static result<std::unique_ptr<gateway>> start(actor_system& sys, gateway_options opts);
  /// Stops (see stop()).
  ~gateway();
  gateway(const gateway&) = delete;
  gateway& operator=(const gateway&) = delete;

  /// Removes the router from the system, stops the thread and closes the sockets. Idempotent.
  void stop();
  /// The endpoint actually bound (resolved port for tcp ":0").
  std::string bound_endpoint() const;
  /// Connects to one more peer. Errors: invalid_argument (duplicate or malformed), transport.
  result<void> add_peer(peer_options peer);
  /// Every peer and its state.
  std::vector<peer_info> peers() const;
  /// The state of peer `process@host`; unknown if not configured.
  peer_state peer_state_of(std::string_view process, std::string_view host) const;
  /// Counters.
  gateway_stats stats() const;

private:
  struct impl;
  explicit gateway(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// "unknown" | "up" | "down".
std::string_view to_string(peer_state s) noexcept;

} // namespace shoal::actors
