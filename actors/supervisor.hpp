#pragma once
// In-process supervision in the Erlang/OTP spirit: a supervisor actor starts its children in
// order, restarts them when they fail (one_for_one or one_for_all), and gives up when they fail
// too often (restart intensity): it then stops its children and fails itself, which reports
// the failure to its own parent (escalation) or, at the top, to `on_escalate`.
//
//   auto sup = sys.spawn<actors::supervisor>({.name = "sup"},
//       actors::supervisor_options{.strategy = actors::restart_strategy::one_for_all},
//       std::vector{actors::child_spec::of<worker>({.name = "w1"}), actors::child_spec::of<worker>({.name = "w2"})});

#include "actors/actor.hpp"

#include <deque>
#include <functional>
#include <vector>

namespace shoal::actors {

/// Which children restart when one fails.
enum class restart_strategy : std::uint8_t {
  one_for_one, ///< only the failed child
  one_for_all, ///< every child (the healthy ones run on_stop first)
};

/// How to start one child; kept for restarts.
struct child_spec {
  spawn_options opts;  ///< name (should be set: children are found by name) and mailbox
  actor_factory make;  ///< constructs a fresh instance

  /// A spec that constructs `T(cfg, args...)` (copies of `args` are kept for restarts).
  template <class T, class... A> static child_spec of(spawn_options opts, A&&... args) {
    return child_spec{std::move(opts), make_factory<T>(std::forward<A>(args)...)};
  }
};

/// Supervisor settings. Defaults: 5 restarts in 60 s, as OTP supervisors (README "How it fits together").
struct supervisor_options {
  restart_strategy strategy = restart_strategy::one_for_one;
  std::uint32_t max_restarts = 5;                  ///< restarts allowed within `period`
  duration period = std::chrono::seconds(60);      ///< sliding window, on the system clock
  /// Called (on the supervisor's strand) when a supervisor without a parent gives up. Optional.
  std::function<void(const error&)> on_escalate{};
};

/// Asks a supervisor for the names of its children (request; reply: std::vector<std::string>).
struct which_children {
  static constexpr std::string_view kind = "actors.which_children";
  std::uint8_t reserved = 0; // ignored
  MSGPACK_DEFINE(reserved);
};

/// A supervisor actor. Spawn it like any actor; its children are spawned during its `init()`
/// (spawn fails with init_failed if a child fails to start) and stop with it.
class supervisor final : public actor {
public:
  /// `children` start in order.
  supervisor(actor_config& cfg, supervisor_options opts, std::vector<child_spec> children);

protected:
  result<void> init() override;
  behavior make_behavior() override;
  void on_child_failed(const actor_ref& child, const error& reason) override;
  void on_stop() override;

private:
  void stop_children();

  supervisor_options opts_;
  std::vector<child_spec> specs_;
  std::vector<actor_ref> children_;     // same order as specs_
  std::deque<time_point> restarts_;     // restart times within the current window
};

} // namespace shoal::actors
