#pragma once
// Actors: a state class with `make_behavior()` (CAF's shape) and a thread-per-actor lifecycle
// with a synchronous start/stop handshake (CZMQ zactor's). See STYLE.md §2.3.
//
//   struct add { int a, b; MSGPACK_DEFINE(a, b); };
//   class adder final : public actors::actor {
//   public:
//     explicit adder(actors::actor_config& cfg) : actor(cfg) {}
//   protected:
//     actors::behavior make_behavior() override {
//       return {[](const add& m) { return m.a + m.b; }};   // replies to requests with an int
//     }
//   };
//
// Handlers of one actor run one at a time (on its own thread, or on the test thread under
// manual execution), so actor state needs no locks. A handler may return void, a value `T`
// (sent back when the message was a request), or `result<T>` (the error is sent back to a
// requester; for a plain tell nobody could receive it, so it counts as a failure of the actor).
// An exception escaping a handler is caught, logged once, and fails the actor; its supervisor
// decides whether it restarts.

#include "actors/address.hpp"
#include "actors/clock.hpp"
#include "actors/error.hpp"
#include "actors/mailbox.hpp"
#include "actors/message.hpp"
#include "transport/envelope.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <tuple>
#include <string>
#include <type_traits>
#include <vector>

namespace shoal::actors {

class actor_system;
class actor;
class supervisor;
namespace detail {
class cell;
} // namespace detail

/// Counters of one actor, read without stopping it. All values are snapshots.
struct actor_stats {
  std::uint64_t processed = 0; ///< messages handled (including failed ones)
  std::uint64_t queued = 0;    ///< messages waiting in the mailbox now
  std::uint64_t dropped = 0;   ///< messages discarded by drop_newest
  std::uint64_t rejected = 0;  ///< messages refused with mailbox_full
  std::uint64_t failures = 0;  ///< handler/init/timer failures
  std::uint64_t restarts = 0;  ///< restarts performed on behalf of a supervisor
};

/// A handle to a running (or stopped) actor. Cheap to copy; thread-safe; keeps the actor's
/// mailbox alive but not its thread. Messages to a stopped actor fail with actor_down.
class actor_ref {
public:
  /// An empty handle (`!ref`).
  actor_ref() = default;
  /// The actor's address `name@process@host`. Precondition: non-empty handle.
  const address& addr() const;
  /// True while the actor has not stopped. Thread-safe (a snapshot).
  bool alive() const;
  /// Counters of the actor. Thread-safe.
  actor_stats stats() const;
  /// True for a non-empty handle.
  explicit operator bool() const noexcept { return cell_ != nullptr; }
  /// Same actor instance slot (restarts keep the slot, so refs stay valid across restarts).
  friend bool operator==(const actor_ref& a, const actor_ref& b) noexcept { return a.cell_ == b.cell_; }

private:
  friend class actor_system;
  friend class actor;
  friend class detail::cell;
  friend class supervisor;
  explicit actor_ref(std::shared_ptr<detail::cell> c) : cell_(std::move(c)) {}
  std::shared_ptr<detail::cell> cell_;
};

/// Per-spawn settings.
struct spawn_options {
  std::string name{};      ///< registry name, unique in the system; empty: "actor-<n>" is generated
  mailbox_options mailbox{}; ///< capacity and overflow policy
};

/// Opaque construction context: every actor constructor takes it first and passes it to
/// `actor(cfg)`. Only the runtime creates one.
class actor_config {
private:
  friend class actor;
  friend class detail::cell;
  explicit actor_config(detail::cell* c) : cell_(c) {}
  detail::cell* cell_;
};

/// Creates a fresh actor instance: used for the first start and for every restart.
using actor_factory = std::function<std::unique_ptr<actor>(actor_config&)>;

/// A factory that constructs `T(cfg, args...)` from copies of `args` (kept for restarts).
template <class T, class... A> actor_factory make_factory(A&&... args) {
  return [tup = std::make_tuple(std::decay_t<A>(std::forward<A>(args))...)](actor_config& cfg) {
    return std::apply(
        [&cfg](const auto&... xs) -> std::unique_ptr<actor> { return std::make_unique<T>(cfg, xs...); }, tup);
  };
}

/// Timer handle; 0 is never a valid timer.
using timer_id = std::uint64_t;

// -- behavior --------------------------------------------------------------------------------

namespace detail {
/// What the runtime hands a type-erased handler.
struct handler_call {
  const transport::envelope& env;    // the message (borrowed)
  msgpack::zone& zone;               // scratch memory for decoding (borrowed)
  bool want_reply;                   // the message is a request
  std::vector<std::uint8_t>& reply;  // encoded reply body, filled when want_reply
};
/// Type-erased handler: returns an error when the actor failed handling the message.
using handler_fn = std::function<std::optional<error>(handler_call&)>;

template <class F> struct handler_traits : handler_traits<decltype(&std::remove_cvref_t<F>::operator())> {};
template <class C, class R, class A> struct handler_traits<R (C::*)(A) const> {
  using arg = std::remove_cvref_t<A>;
  using ret = R;
};
template <class C, class R, class A> struct handler_traits<R (C::*)(A)> {
  using arg = std::remove_cvref_t<A>;
  using ret = R;
};
/// Per-thread envelope that `tell` fills and hands to the mailbox, which swaps a recycled one
/// back: the steady-state tell allocates nothing.
transport::envelope& scratch_envelope();

template <class T> struct is_result : std::false_type {};
template <class T> struct is_result<std::expected<T, error>> : std::true_type {};

/// Runs `f(m)` and turns its return value into a reply / failure.
template <class R, class F, class M>
std::optional<error> invoke_handler(F& f, const M& m, handler_call& c) {
  if constexpr (std::is_void_v<R>) {
    f(m);
    if (c.want_reply)
      encode_reply_ok(c.reply);
    return std::nullopt;
  } else if constexpr (is_result<R>::value) {
    R r = f(m);
    if (!r) {
      if (c.want_reply) {
        encode_reply_error(c.reply, r.error());
        return std::nullopt; // the requester receives the error; the actor is fine
      }
      return r.error();
    }
    if (c.want_reply) {
      if constexpr (std::is_void_v<typename R::value_type>)
        encode_reply_ok(c.reply);
      else
        encode_reply_ok(c.reply, *r);
    }
    return std::nullopt;
  } else {
    R r = f(m);
    if (c.want_reply)
      encode_reply_ok(c.reply, r);
    return std::nullopt;
  }
}
} // namespace detail

/// The handlers of an actor, one per message kind. Built by `make_behavior()`.
class behavior {
public:
  /// An empty behavior (every message is unknown_kind).
  behavior() = default;
  /// One handler per callable; each takes one `const M&` and returns void, T or result<T>.
  template <class... Fs>
    requires(sizeof...(Fs) > 0)
  behavior(Fs&&... fs) { // NOLINT: implicit on purpose, `return {lambda, lambda};`
    (add(std::forward<Fs>(fs)), ...);
  }
  /// Adds a handler for the kind of its argument type (replacing an earlier one).
  template <class F> void add(F&& f) {
    using traits = detail::handler_traits<F>;
    using M = typename traits::arg;
    using R = typename traits::ret;
    entries_.push_back(entry{std::string(kind_of<M>()),
                             [fn = std::forward<F>(f)](detail::handler_call& c) mutable -> std::optional<error> {
                               auto m = decode_body<M>(c.env.body, c.zone);
                               if (!m) {
                                 if (c.want_reply)
                                   encode_reply_error(c.reply, m.error());
                                 return m.error();
                               }
                               return detail::invoke_handler<R>(fn, *m, c);
                             }});
  }

private:
  friend class detail::cell;
  struct entry {
    std::string kind;        // envelope kind this handler accepts
    detail::handler_fn fn;   // decode + call + encode reply
  };
  std::vector<entry> entries_;
};

// -- actor -----------------------------------------------------------------------------------

/// Base class of every actor. Construct via `actor_system::spawn<T>(opts, args...)`, which calls
/// `T(actor_config&, args...)` on the actor's own thread, then `init()`, then `make_behavior()`.
/// All protected members are owner only (call them from the actor's handlers/timers/init).
class actor {
public:
  /// Binds the actor to the runtime slot described by `cfg`.
  explicit actor(actor_config& cfg) : cell_(cfg.cell_) {}
  virtual ~actor() = default;
  actor(const actor&) = delete;
  actor& operator=(const actor&) = delete;

  /// This actor's address. Owner only.
  const address& self_address() const;
  /// A handle to this actor. Owner only.
  actor_ref self() const;

protected:
  // -- lifecycle hooks ----------------------------------------------------------------------
  /// Runs once per (re)start before any message; an error makes spawn fail (init_failed) or,
  /// on a restart, fails the actor again. Default: succeed.
  virtual result<void> init() { return {}; }
  /// The handlers. Called after a successful `init()`.
  virtual behavior make_behavior() = 0;
  /// Runs when the actor stops or is restarted while healthy (not after a failure). Must not throw.
  virtual void on_stop() {}
  /// Runs on this actor's strand when a child it spawned (see `spawn_child`) fails. Default:
  /// stop the child. `supervisor` overrides this with its restart strategy.
  virtual void on_child_failed(const actor_ref& child, const error& reason);

  // -- identity and time ----------------------------------------------------------------------
  /// The system this actor runs in. Owner only.
  actor_system& sys() const;
  /// The system clock's current time.
  time_point now() const;
  /// Sender address ("name@process@host") of the message being handled; empty outside a
  /// handler. Owner only. Use it to answer a tell from another process by address.
  const std::string& current_sender() const;

  // -- messaging ------------------------------------------------------------------------------
  /// Sends `m` to `to` (any process). Errors: mailbox_full (reject policy, or block policy when
  /// `to` is this actor), actor_down, not_found, no_route, peer_down, transport.
  template <class M> result<void> tell(const actor_ref& to, const M& m) {
    auto& e = detail::scratch_envelope();
    init_envelope(e, kind_of<M>());
    encode_body(m, e.body);
    return post(to, e);
  }
  /// As above, by address: local names go through the registry, other processes to the gateway.
  template <class M> result<void> tell(const address& to, const M& m) {
    return post(to, make_envelope(m));
  }
  /// Sends `m` as a request; `on_reply(result<R>)` runs later on this actor's strand with the
  /// reply, or errc::timeout after `timeout` on the system clock (a reply arriving after that is
  /// dropped and counted in `actor_system::stats().late_replies`). Errors (then `on_reply` never runs):
  /// as `tell`.
  template <class R, class M, class F>
  result<void> request(const actor_ref& to, const M& m, duration timeout, F&& on_reply) {
    return request_impl<R>(to, nullptr, m, timeout, std::forward<F>(on_reply));
  }
  /// As above, by address (works across processes through the gateway).
  template <class R, class M, class F>
  result<void> request(const address& to, const M& m, duration timeout, F&& on_reply) {
    return request_impl<R>(actor_ref{}, &to, m, timeout, std::forward<F>(on_reply));
  }

  // -- timers ---------------------------------------------------------------------------------
  /// Runs `fn` once after `delay` on the system clock, on this actor's strand.
  timer_id start_timer(duration delay, std::function<void()> fn);
  /// Runs `fn` every `period` (first after one period) until cancelled. `period` > 0.
  timer_id start_periodic_timer(duration period, std::function<void()> fn);
  /// Cancels a timer; false if it already fired (one-shot) or was unknown.
  bool cancel_timer(timer_id id);

  // -- children and lifecycle -----------------------------------------------------------------
  /// Spawns an actor whose failures are reported to this one (`on_child_failed`). Blocks until
  /// the child initialised. Errors: as `actor_system::spawn`.
  template <class T, class... A> result<actor_ref> spawn_child(spawn_options opts, A&&... args);
  /// Stops this actor after the current handler returns (on_stop runs, the mailbox closes).
  void quit();
  /// Fails this actor after the current handler returns, as if a handler had thrown `reason`.
  void fail(error reason);

private:
  friend class detail::cell;
  friend class supervisor;
  template <class M> transport::envelope make_envelope(const M& m) const {
    transport::envelope e;
    init_envelope(e, kind_of<M>());
    encode_body(m, e.body);
    return e;
  }
  void init_envelope(transport::envelope& e, std::string_view kind) const;
  result<void> post(const actor_ref& to, transport::envelope& e); // swaps e with a recycled slot
  result<void> post(const actor_ref& to, transport::envelope&& e) { return post(to, e); }
  result<void> post(const address& to, transport::envelope&& e);
  using reply_fn = std::function<void(const transport::envelope*)>; // nullptr: timed out
  result<void> post_request(const actor_ref& to, const address* addr, transport::envelope&& e,
                            duration timeout, reply_fn done);
  msgpack::zone& zone() const;
  std::shared_ptr<detail::cell> self_cell() const;

  template <class R, class M, class F>
  result<void> request_impl(const actor_ref& to, const address* addr, const M& m, duration timeout,
                            F&& on_reply) {
    auto e = make_envelope(m);
    reply_fn done = [this, cb = std::forward<F>(on_reply)](const transport::envelope* r) mutable {
      if (!r)
        cb(result<R>(make_error(errc::timeout, "request timed out")));
      else
        cb(decode_reply<R>(r->body, zone()));
    };
    return post_request(to, addr, std::move(e), timeout, std::move(done));
  }

  detail::cell* cell_; // the runtime slot; outlives this instance
};

} // namespace shoal::actors
