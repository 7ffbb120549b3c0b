#pragma once
// The actor system: spawns and stops actors, names them (registry), routes messages by address
// (local registry, or a gateway for other processes), and answers requests from non-actor code.
//
// Two executions share every line of actor code:
// - threaded (default): one thread per actor, CZMQ-zactor style. `spawn` returns after the
//   actor's `init()` ran on its thread; `stop` returns after the actor ran `on_stop()` and its
//   thread was joined.
// - manual: no threads at all. Messages wait in mailboxes until `run_until_idle()` and timers
//   fire on the injected clock; tests/support/deterministic_system wraps this with a
//   manual_clock (STYLE.md §2.4).

#include "actors/actor.hpp"
#include "actors/address.hpp"
#include "actors/clock.hpp"
#include "actors/error.hpp"

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace shoal::actors {

/// How actors run.
enum class execution : std::uint8_t {
  threaded, ///< one thread per actor
  manual,   ///< on the caller's thread inside run_until_idle() (tests)
};

/// System settings, fixed at construction.
struct system_options {
  std::string process = "main";    ///< this process's name in addresses; no '@'
  std::string host = "localhost";  ///< this host's name in addresses; no '@'
  std::shared_ptr<actors::clock> clock_source{}; ///< nullptr: steady_clock_source
  execution mode = execution::threaded;
};

/// System-wide counters. Snapshots; thread-safe.
struct system_stats {
  std::uint64_t late_replies = 0;  ///< replies that arrived after their request timed out (dropped)
  std::uint64_t unknown_kind = 0;  ///< messages no handler accepted (dropped; requests get an error)
  std::uint64_t undeliverable = 0; ///< replies/messages whose destination was gone (dropped)
  std::uint64_t expired = 0;       ///< messages dropped unprocessed because their deadline passed
};

/// Function that carries an envelope to another process (installed by a gateway).
/// Errors: no_route, peer_down, transport, mailbox_full.
using remote_router = std::function<result<void>(transport::envelope&&)>;

namespace detail {
/// Shared state of one request made from outside any actor.
struct reply_slot {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::optional<transport::envelope> reply; // empty with done: timed out or failed
  std::optional<error> err;                  // send failure
  time_point deadline;
  transport::message_id corr{};
};
} // namespace detail

/// The reply to a request made with `actor_system::request`. Copyable handle.
template <class R> class pending_reply {
public:
  /// The reply. Threaded execution: blocks until the reply or the deadline. Manual execution:
  /// never blocks; errc::not_ready until `run_until_idle`/`advance` delivered or expired it.
  /// Errors: timeout, not_ready, decode, and any error the handler replied with.
  const result<R>& get();
  /// True once the reply arrived or the request expired. Thread-safe.
  bool ready() const;

private:
  friend class actor_system;
  pending_reply(actor_system* s, std::shared_ptr<detail::reply_slot> slot) : sys_(s), slot_(std::move(slot)) {}
  actor_system* sys_;
  std::shared_ptr<detail::reply_slot> slot_;
  std::optional<result<R>> value_;
  result<R> not_ready_{std::unexpected(error{errc::not_ready, "no reply yet: run the system"})};
};

/// An actor system. All public members are thread-safe unless marked otherwise. Destroying the
/// system stops every actor (children before their supervisors' own shutdown completes).
class actor_system {
public:
  /// A system with no actors. Validates nothing that can fail: bad names surface on first use.
  explicit actor_system(system_options opts = {});
  ~actor_system();
  actor_system(const actor_system&) = delete;
  actor_system& operator=(const actor_system&) = delete;

  // -- identity -------------------------------------------------------------------------------
  /// This process's name. 
  const std::string& process() const noexcept { return opts_.process; }
  /// This host's name.
  const std::string& host() const noexcept { return opts_.host; }
  /// The injected clock.
  actors::clock& clock() const noexcept { return *clock_; }
  /// Threaded or manual.
  execution mode() const noexcept { return opts_.mode; }
  /// The address `name@process@host` of a local actor name.
  address local_address(std::string name) const { return address{std::move(name), opts_.process, opts_.host}; }

  // -- lifecycle ------------------------------------------------------------------------------
  /// Spawns `T(actor_config&, args...)`, runs its `init()`, and returns once both finished.
  /// Errors: duplicate_name, invalid_argument (name contains '@' or starts with '$'),
  /// init_failed (constructor threw or init() returned an error; the actor is gone).
  template <class T, class... A> result<actor_ref> spawn(spawn_options opts, A&&... args) {
    return spawn_cell(std::move(opts), make_factory<T>(std::forward<A>(args)...), nullptr);
  }
  /// Stops the actor: it finishes its current handler, runs on_stop(), its mailbox closes
  /// (queued mail is discarded) and, in threaded execution, its thread is joined before this
  /// returns. Stopping a stopped actor succeeds. Called from the actor itself: same as quit().
  void stop(const actor_ref& ref);
  /// Stops every actor (most recently spawned first). Idempotent.
  void shutdown();

  // -- registry -------------------------------------------------------------------------------
  /// The running actor registered under `name`. Errors: not_found.
  result<actor_ref> lookup(std::string_view name) const;
  /// Names of all registered actors, sorted.
  std::vector<std::string> names() const;

  // -- messaging from outside any actor ---------------------------------------------------------
  /// Sends `m` to `to` with sender `$client@process@host`. Errors: as actor::tell.
  template <class M> result<void> tell(const actor_ref& to, const M& m) {
    auto& e = detail::scratch_envelope();
    init_envelope(e, kind_of<M>(), client_address_);
    encode_body(m, e.body);
    return post(to, e);
  }
  /// As above, by address (local registry or the gateway).
  template <class M> result<void> tell(const address& to, const M& m) {
    return route(to, make_envelope(m));
  }
  /// Sends `m` as a request; the reply (or errc::timeout after `timeout` on the system clock) is
  /// read from the returned handle. A send error is returned through the handle at once.
  template <class R, class M>
  pending_reply<R> request(const actor_ref& to, const M& m, duration timeout) {
    return pending_reply<R>(this, post_external_request(&to, nullptr, make_envelope(m), timeout));
  }
  /// As above, by address.
  template <class R, class M>
  pending_reply<R> request(const address& to, const M& m, duration timeout) {
    return pending_reply<R>(this, post_external_request(nullptr, &to, make_envelope(m), timeout));
  }

  // -- routing (gateways) -----------------------------------------------------------------------
  /// Delivers an envelope by its `to` (or `to_override`) address: "$client" replies complete
  /// external requests, local names go through the registry, other processes to the router.
  /// Errors: invalid_argument (no/malformed address), not_found, mailbox_full, actor_down,
  /// no_route.
  result<void> route(const address& to, transport::envelope&& e);
  /// Delivers an envelope that arrived from another process (uses its `to`). Errors: as route.
  result<void> deliver(transport::envelope&& e);
  /// Installs the function that carries envelopes to other processes; nullptr removes it.
  void set_remote_router(remote_router r);

  // -- manual execution (owner thread only) ---------------------------------------------------
  /// Runs queued mail, controls and due timers of every actor until nothing is left; returns
  /// how many steps did something. Precondition: manual execution.
  std::size_t run_until_idle();
  /// Earliest pending timer or request deadline; nullopt if none. Manual execution only.
  std::optional<time_point> next_due() const;

  // -- observability ------------------------------------------------------------------------
  /// System-wide counters.
  system_stats stats() const;

private:
  friend class actor;
  friend class supervisor;
  friend class detail::cell;
  template <class R> friend class pending_reply;

  template <class M> transport::envelope make_envelope(const M& m) const {
    transport::envelope e;
    init_envelope(e, kind_of<M>(), client_address_);
    encode_body(m, e.body);
    return e;
  }
  void init_envelope(transport::envelope& e, std::string_view kind, const std::string& from) const;
  result<actor_ref> spawn_cell(spawn_options opts, actor_factory make,
                               std::shared_ptr<detail::cell> parent);
  result<void> post(const actor_ref& to, transport::envelope& e);
  result<void> post(const actor_ref& to, transport::envelope&& e) { return post(to, e); }
  std::shared_ptr<detail::reply_slot> post_external_request(const actor_ref* to, const address* addr,
                                                            transport::envelope&& e, duration timeout);
  result<const transport::envelope*> await(detail::reply_slot& slot);
  void complete_external(transport::envelope&& e);
  void expire_external(time_point now);
  void unregister(detail::cell* c);
  void count_late_reply() { late_replies_.fetch_add(1, std::memory_order_relaxed); }
  void count_unknown_kind() { unknown_kind_.fetch_add(1, std::memory_order_relaxed); }
  void count_undeliverable() { undeliverable_.fetch_add(1, std::memory_order_relaxed); }
  void count_expired() { expired_.fetch_add(1, std::memory_order_relaxed); }

  system_options opts_;
  std::shared_ptr<actors::clock> clock_;
  std::string client_address_; // "$client@process@host"
  mutable std::mutex m_;       // guards registry_, cells_, router_, external_, next_id_
  std::map<std::string, std::shared_ptr<detail::cell>, std::less<>> registry_;
  std::vector<std::shared_ptr<detail::cell>> cells_; // spawn order
  std::shared_ptr<const remote_router> router_;
  std::map<transport::message_id, std::shared_ptr<detail::reply_slot>> external_;
  std::uint64_t next_id_ = 1;
  bool shutting_down_ = false;
  std::atomic<std::uint64_t> late_replies_{0}, unknown_kind_{0}, undeliverable_{0}, expired_{0};
};

// -- template definitions ----------------------------------------------------------------------

template <class R> const result<R>& pending_reply<R>::get() {
  if (value_)
    return *value_;
  auto r = sys_->await(*slot_);
  if (!r) {
    if (r.error().code == errc::not_ready)
      return not_ready_; // not cached: it may become ready later
    value_.emplace(std::unexpected(r.error()));
  } else {
    msgpack::zone z;
    value_.emplace(decode_reply<R>((*r)->body, z));
  }
  return *value_;
}

template <class R> bool pending_reply<R>::ready() const {
  std::lock_guard lk(slot_->m);
  return slot_->done;
}

template <class T, class... A> result<actor_ref> actor::spawn_child(spawn_options opts, A&&... args) {
  return sys().spawn_cell(std::move(opts), make_factory<T>(std::forward<A>(args)...),
                          self_cell());
}

} // namespace shoal::actors
