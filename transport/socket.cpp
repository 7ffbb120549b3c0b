#include "transport/socket.hpp"

#include <algorithm>
#include <cerrno>

// Sends and receives go through libzmq's C calls on the cppzmq handle so that every errno
// becomes an error value (cppzmq throws zmq::error_t for anything but EAGAIN).

namespace shoal::transport {
namespace {

// Counters have a single writer (the socket's owner thread), so a relaxed load + store is
// enough and avoids a locked read-modify-write on every message; readers on other threads
// still see whole values (std::atomic).
inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

error zmq_failure(std::string_view what, int e) {
  errc code = errc::zmq;
  if (e == EAGAIN) code = errc::would_block;
  else if (e == EHOSTUNREACH) code = errc::unroutable;
  else if (e == ETERM || e == ENOTSOCK) code = errc::closed;
  std::string m(what);
  m += ": ";
  m += zmq_strerror(e);
  return error{code, e, std::move(m)};
}

result<void> set_int(void* s, int option, int value, const char* name) {
  if (zmq_setsockopt(s, option, &value, sizeof value) != 0) {
    const int e = zmq_errno();
    return unexpected_error(zmq_failure(std::string("setting ") + name, e));
  }
  return {};
}

int ms(std::chrono::milliseconds d) {
  return static_cast<int>(std::clamp<std::int64_t>(d.count(), INT32_MIN, INT32_MAX));
}

result<void> check_options(const socket_options& o) {
  auto bad = [](std::string m) { return fail(errc::invalid_argument, std::move(m)); };
  if (o.send_hwm < 0 || o.receive_hwm < 0) return bad("high-water marks must be ≥ 0");
  if (o.heartbeat_interval.count() < 0 || o.heartbeat_timeout.count() < 0 ||
      o.heartbeat_ttl.count() < 0)
    return bad("heartbeat times must be ≥ 0");
  if (o.heartbeat_ttl.count() > 6'553'500) return bad("heartbeat_ttl must be ≤ 6553500 ms");
  if (o.heartbeat_interval.count() > INT32_MAX || o.heartbeat_timeout.count() > INT32_MAX)
    return bad("heartbeat times must fit in an int of ms");
  if (o.reconnect_interval.count() < -1) return bad("reconnect_interval must be ≥ -1 ms");
  if (o.reconnect_interval_max.count() < 0) return bad("reconnect_interval_max must be ≥ 0");
  if (o.routing_id && (o.routing_id->empty() || o.routing_id->size() > 255))
    return bad("routing_id must be 1..255 bytes");
  if (o.limits.max_frame_bytes == 0) return bad("limits.max_frame_bytes must be > 0");
  return {};
}

} // namespace

envelope_socket::envelope_socket(zmq::socket_t s, zmq::socket_type type, socket_options opts)
    : socket_(std::move(s)), type_(type), opts_(std::move(opts)),
      stats_(std::make_shared<socket_stats>()) {}

result<envelope_socket> envelope_socket::make(zmq::context_t& ctx, zmq::socket_type type,
                                              const socket_options& in) {
  if (auto r = check_options(in); !r) return unexpected_error(std::move(r).error());
  socket_options opts = in;
  opts.linger = std::clamp(opts.linger, std::chrono::milliseconds{0}, max_linger);
  opts.limits.max_frame_bytes = std::min(opts.limits.max_frame_bytes, hard_max_frame_bytes);
  zmq::socket_t s;
  try {
    s = zmq::socket_t(ctx, type);
  } catch (const zmq::error_t& e) {
    return unexpected_error(zmq_failure("creating socket", e.num()));
  }
  void* h = s.handle();
  // Fixed order; each failure names its option.
  for (auto r : {set_int(h, ZMQ_LINGER, ms(opts.linger), "ZMQ_LINGER"),
                 set_int(h, ZMQ_SNDHWM, opts.send_hwm, "ZMQ_SNDHWM"),
                 set_int(h, ZMQ_RCVHWM, opts.receive_hwm, "ZMQ_RCVHWM"),
                 set_int(h, ZMQ_HEARTBEAT_IVL, ms(opts.heartbeat_interval), "ZMQ_HEARTBEAT_IVL"),
                 set_int(h, ZMQ_RECONNECT_IVL, ms(opts.reconnect_interval), "ZMQ_RECONNECT_IVL"),
                 set_int(h, ZMQ_RECONNECT_IVL_MAX, ms(opts.reconnect_interval_max),
                         "ZMQ_RECONNECT_IVL_MAX"),
                 set_int(h, ZMQ_IMMEDIATE, opts.immediate ? 1 : 0, "ZMQ_IMMEDIATE")})
    if (!r) return unexpected_error(std::move(r).error());
  // libzmq's "timeout 0" is "not set" (it then uses the interval); only pass explicit values.
  if (opts.heartbeat_timeout.count() > 0)
    if (auto r = set_int(h, ZMQ_HEARTBEAT_TIMEOUT, ms(opts.heartbeat_timeout), "ZMQ_HEARTBEAT_TIMEOUT"); !r)
      return unexpected_error(std::move(r).error());
  if (opts.heartbeat_ttl.count() > 0)
    if (auto r = set_int(h, ZMQ_HEARTBEAT_TTL, ms(opts.heartbeat_ttl), "ZMQ_HEARTBEAT_TTL"); !r)
      return unexpected_error(std::move(r).error());
  // Frames above the limit are refused by libzmq itself (the peer is disconnected).
  const std::int64_t max_msg = static_cast<std::int64_t>(opts.limits.max_frame_bytes);
  if (zmq_setsockopt(h, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0)
    return unexpected_error(zmq_failure("setting ZMQ_MAXMSGSIZE", zmq_errno()));
  if (type == zmq::socket_type::router && opts.router_mandatory)
    if (auto r = set_int(h, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY"); !r)
      return unexpected_error(std::move(r).error());
  if (opts.routing_id &&
      zmq_setsockopt(h, ZMQ_ROUTING_ID, opts.routing_id->data(), opts.routing_id->size()) != 0)
    return unexpected_error(zmq_failure("setting ZMQ_ROUTING_ID", zmq_errno()));
  if (type == zmq::socket_type::sub && zmq_setsockopt(h, ZMQ_SUBSCRIBE, "", 0) != 0)
    return unexpected_error(zmq_failure("subscribing", zmq_errno()));
  return envelope_socket(std::move(s), type, std::move(opts));
}

// -- wiring -------------------------------------------------------------------------------------

result<void> envelope_socket::bind(std::string_view text) {
  auto ep = endpoint::parse(text, endpoint_use::bind);
  if (!ep) return unexpected_error(std::move(ep).error());
  if (zmq_bind(socket_.handle(), ep->text().c_str()) != 0)
    return unexpected_error(zmq_failure("binding " + ep->text(), zmq_errno()));
  return {};
}

result<void> envelope_socket::connect(std::string_view text) {
  auto ep = endpoint::parse(text, endpoint_use::connect);
  if (!ep) return unexpected_error(std::move(ep).error());
  if (zmq_connect(socket_.handle(), ep->text().c_str()) != 0)
    return unexpected_error(zmq_failure("connecting " + ep->text(), zmq_errno()));
  return {};
}

std::string envelope_socket::last_endpoint() const {
  char buf[512];
  std::size_t len = sizeof buf;
  if (zmq_getsockopt(const_cast<zmq::socket_t&>(socket_).handle(), ZMQ_LAST_ENDPOINT, buf, &len) != 0 || len == 0)
    return {};
  return std::string(buf, len - 1); // len counts the terminating NUL
}

// -- messaging ----------------------------------------------------------------------------------

result<void> envelope_socket::send_frames(std::span<const std::uint8_t> routing_id,
                                          zmq::message_t& frame, std::chrono::milliseconds wait) {
  const bool router = type_ == zmq::socket_type::router;
  if (router != !routing_id.empty()) {
    bump(stats_->send_errors);
    return fail(errc::invalid_argument, router ? "a ROUTER send needs a routing id"
                                               : "only a ROUTER send takes a routing id");
  }
  const std::size_t bytes = frame.size();
  void* h = socket_.handle();
  auto failed = [this](const char* what, int e) -> result<void> {
    error err = zmq_failure(what, e);
    auto& counter = err.code == errc::would_block ? stats_->dropped_hwm
                    : err.code == errc::unroutable ? stats_->unroutable
                                                   : stats_->send_errors;
    bump(counter);
    return unexpected_error(std::move(err));
  };
  // With ROUTER_MANDATORY an unknown peer fails the routing frame with EHOSTUNREACH and a full
  // one with EAGAIN; once the routing frame is accepted the rest of the message always is
  // (multipart messages are atomic). A refused zmq_msg_send leaves `frame` intact for a retry.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  for (;;) {
    const int rc = router ? zmq_send(h, routing_id.data(), routing_id.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT)
                          : zmq_msg_send(frame.handle(), h, ZMQ_DONTWAIT);
    if (rc >= 0) break;
    const int e = zmq_errno();
    if (e == EINTR) continue;
    if (e != EAGAIN || wait.count() <= 0) return failed(router ? "sending routing id" : "sending envelope", e);
    if (!deadline) deadline = std::chrono::steady_clock::now() + wait;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return failed("sending envelope", EAGAIN);
    zmq_pollitem_t item{h, 0, ZMQ_POLLOUT, 0};
    if (zmq_poll(&item, 1, static_cast<long>(left.count())) < 0 && zmq_errno() != EINTR)
      return failed("polling for send", zmq_errno());
  }
  if (router) {
    while (zmq_msg_send(frame.handle(), h, ZMQ_DONTWAIT) < 0) {
      if (zmq_errno() == EINTR) continue;
      return failed("sending envelope", zmq_errno());
    }
  }
  bump(stats_->sent);
  bump(stats_->bytes_sent, bytes);
  return {};
}

result<void> envelope_socket::send(std::span<const std::uint8_t> routing_id, const envelope& env,
                                   std::chrono::milliseconds wait) {
  // Validate and size in one pass, then encode in place in the message libzmq will own: one
  // allocation, no extra copy.
  auto size = detail::validated_size(env, opts_.limits);
  if (!size) {
    bump(stats_->encode_errors);
    return unexpected_error(std::move(size).error());
  }
  zmq::message_t frame(*size);
  detail::encode_validated(env, std::span<std::uint8_t>(frame.data<std::uint8_t>(), *size));
  return send_frames(routing_id, frame, wait);
}

result<void> envelope_socket::send(std::span<const std::uint8_t> routing_id, const envelope& env) {
  return send(routing_id, env, std::chrono::milliseconds{0});
}

result<void> envelope_socket::send(const envelope& env, std::chrono::milliseconds wait) {
  return send({}, env, wait);
}

result<void> envelope_socket::send(const envelope& env) { return send({}, env, std::chrono::milliseconds{0}); }

result<void> envelope_socket::send_encoded(std::span<const std::uint8_t> bytes,
                                           std::span<const std::uint8_t> routing_id) {
  zmq::message_t frame(bytes.data(), bytes.size());
  return send_frames(routing_id, frame, std::chrono::milliseconds{0});
}

result<void> envelope_socket::receive(envelope& out, std::chrono::milliseconds timeout,
                                      std::vector<std::uint8_t>* routing_id) {
  void* h = socket_.handle();
  // The clock is read only once nothing is waiting: a busy receive loop never pays for it.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  for (;;) {
    if (zmq_msg_recv(rx_.handle(), h, ZMQ_DONTWAIT) >= 0) break;
    const int e = zmq_errno();
    if (e == EINTR) continue;
    if (e != EAGAIN) return unexpected_error(zmq_failure("receiving", e));
    if (!deadline) deadline = std::chrono::steady_clock::now() + timeout;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(
        *deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return fail(errc::timeout, "nothing received within the timeout");
    zmq_pollitem_t item{h, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, static_cast<long>(left.count())) < 0 && zmq_errno() != EINTR)
      return unexpected_error(zmq_failure("polling", zmq_errno()));
  }
  // Any remaining parts of a multipart message arrive with the first (atomic delivery).
  auto drain = [&] {
    while (rx_.more())
      if (zmq_msg_recv(rx_.handle(), h, 0) < 0) break;
  };
  auto reject = [&](errc code, std::string msg) -> result<void> {
    bump(stats_->decode_errors);
    return fail(code, std::move(msg));
  };
  if (type_ == zmq::socket_type::router) {
    if (!rx_.more()) return reject(errc::malformed, "ROUTER message without an envelope frame");
    if (routing_id)
      routing_id->assign(rx_.data<std::uint8_t>(), rx_.data<std::uint8_t>() + rx_.size());
    if (zmq_msg_recv(rx_.handle(), h, 0) < 0)
      return unexpected_error(zmq_failure("receiving", zmq_errno()));
  }
  if (rx_.more()) {
    drain();
    return reject(errc::malformed, "multipart message; an envelope is exactly one frame");
  }
  auto r = decode_into(std::span<const std::uint8_t>(rx_.data<std::uint8_t>(), rx_.size()), out,
                       opts_.limits);
  if (!r) {
    bump(stats_->decode_errors);
    return r;
  }
  bump(stats_->received);
  bump(stats_->bytes_received, rx_.size());
  return {};
}

std::string_view envelope_socket::peer_user_id() const noexcept {
  // zmq_msg_gets takes a non-const message; it only reads the metadata attached to it.
  const char* v = zmq_msg_gets(const_cast<zmq::message_t&>(rx_).handle(), "User-Id");
  return v != nullptr ? std::string_view(v) : std::string_view();
}

result<incoming> envelope_socket::receive(std::chrono::milliseconds timeout) {
  incoming in;
  if (auto r = receive(in.env, timeout, &in.routing_id); !r)
    return unexpected_error(std::move(r).error());
  return in;
}

} // namespace shoal::transport
