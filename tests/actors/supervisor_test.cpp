// Supervision on the deterministic system: restarts, strategies, intensity and escalation.
#include "actors/supervisor.hpp"
#include "tests/actors/test_messages.hpp"
#include "tests/support/deterministic_system.hpp"

#include <gtest/gtest.h>

namespace shoal::actors {
namespace {
using namespace std::chrono_literals;
using testing::counter;
using testing::crash;
using testing::get_count;
using testing::log_capture;
using testing::ping;

class SupervisorTest : public ::testing::Test {
protected:
  std::uint64_t count_of(std::string_view name) {
    auto ref = sys.sys().lookup(name);
    if (!ref) {
      ADD_FAILURE() << name << ": " << ref.error().message;
      return 0;
    }
    auto n = sys.request<std::uint64_t>(*ref, get_count{});
    sys.run_until_idle();
    return n.get() ? *n.get() : ~0ull;
  }
  actor_ref spawn_sup(std::string name, supervisor_options opts, std::vector<child_spec> children) {
    auto r = sys.try_spawn<supervisor>({.name = std::move(name)}, std::move(opts), std::move(children));
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? *r : actor_ref{};
  }
  actor_ref ref(std::string_view name) { return sys.sys().lookup(name).value_or(actor_ref{}); }

  log_capture logs; // first: outlives the system
  tests::deterministic_system sys;
  counter::shared a_stats, b_stats;
};

TEST_F(SupervisorTest, OneForOneRestartsOnlyTheFailedChildWithFreshState) {
  auto sup = spawn_sup("sup", {}, {child_spec::of<counter>({.name = "a"}, &a_stats),
                                   child_spec::of<counter>({.name = "b"}, &b_stats)});
  auto a = ref("a");
  auto b = ref("b");
  sys.send(a, ping{0, 1});
  sys.send(b, ping{0, 1});
  sys.send(a, crash{"boom"});
  sys.run_until_idle();
  EXPECT_EQ(a.stats().restarts, 1u);
  EXPECT_EQ(b.stats().restarts, 0u);
  EXPECT_EQ(a_stats.inits, 2u);
  EXPECT_EQ(count_of("a"), 0u); // fresh state after the restart
  EXPECT_EQ(count_of("b"), 1u); // untouched
  EXPECT_TRUE(a.alive());
}

TEST_F(SupervisorTest, OneForAllRestartsEveryChild) {
  auto sup = spawn_sup("sup", {.strategy = restart_strategy::one_for_all},
                       {child_spec::of<counter>({.name = "a"}, &a_stats), child_spec::of<counter>({.name = "b"}, &b_stats)});
  sys.send(ref("b"), ping{0, 1});
  sys.send(ref("a"), crash{"boom"});
  sys.run_until_idle();
  EXPECT_EQ(ref("a").stats().restarts, 1u);
  EXPECT_EQ(ref("b").stats().restarts, 1u);
  EXPECT_EQ(b_stats.stops, 1u); // the healthy sibling was stopped cleanly first
  EXPECT_EQ(count_of("b"), 0u);
}

TEST_F(SupervisorTest, MailQueuedBehindTheFailureIsHandledAfterTheRestart) {
  auto sup = spawn_sup("sup", {}, {child_spec::of<counter>({.name = "a"}, &a_stats)});
  auto a = ref("a");
  sys.send(a, crash{"boom"});
  sys.send(a, ping{0, 1});
  sys.run_until_idle();
  EXPECT_EQ(count_of("a"), 1u);
}

TEST_F(SupervisorTest, ExceptionInHandlerIsLoggedOnceAndRestarts) {
  auto sup = spawn_sup("sup", {}, {child_spec::of<counter>({.name = "a"}, &a_stats)});
  sys.send(ref("a"), crash{"kaboom-7"});
  sys.run_until_idle();
  EXPECT_EQ(logs.sink().count_containing("kaboom-7"), 1u);
  EXPECT_EQ(logs.sink().count_containing("kaboom-7", spdlog::level::err), 1u);
  EXPECT_EQ(ref("a").stats().restarts, 1u);
}

TEST_F(SupervisorTest, IntensityExceededEscalatesAndStopsChildren) {
  std::vector<error> escalations;
  auto sup = spawn_sup("sup",
                       {.max_restarts = 2, .period = 10s, .on_escalate = [&](const error& e) { escalations.push_back(e); }},
                       {child_spec::of<counter>({.name = "a"}, &a_stats), child_spec::of<counter>({.name = "b"}, &b_stats)});
  auto a = ref("a");
  auto b = ref("b");
  for (int i = 0; i < 2; ++i) {
    sys.send(a, crash{"again"});
    sys.run_until_idle();
    sys.advance(1s);
  }
  EXPECT_TRUE(sup.alive());
  EXPECT_EQ(a.stats().restarts, 2u);
  sys.send(a, crash{"third time"}); // 3rd failure within 10 s: more than max_restarts
  sys.run_until_idle();
  ASSERT_EQ(escalations.size(), 1u);
  EXPECT_EQ(escalations[0].code, errc::escalated);
  EXPECT_FALSE(sup.alive());
  EXPECT_FALSE(a.alive());
  EXPECT_FALSE(b.alive());
  EXPECT_EQ(b_stats.stops, 1u);
}

TEST_F(SupervisorTest, RestartsOutsideThePeriodDoNotAccumulate) {
  auto sup = spawn_sup("sup", {.max_restarts = 1, .period = 5s}, {child_spec::of<counter>({.name = "a"}, &a_stats)});
  auto a = ref("a");
  for (int i = 0; i < 4; ++i) {
    sys.send(a, crash{"spaced out"});
    sys.run_until_idle();
    sys.advance(6s); // each failure falls outside the previous one's window
  }
  EXPECT_TRUE(sup.alive());
  EXPECT_EQ(a.stats().restarts, 4u);
}

TEST_F(SupervisorTest, NestedSupervisorEscalatesToItsParentWhichRestartsIt) {
  auto root = spawn_sup(
      "root", {},
      {child_spec::of<supervisor>({.name = "inner"}, supervisor_options{.max_restarts = 1, .period = 60s},
                                  std::vector{child_spec::of<counter>({.name = "w"}, &a_stats)})});
  auto inner = ref("inner");
  sys.send(ref("w"), crash{"one"});
  sys.run_until_idle();
  EXPECT_EQ(ref("w").stats().restarts, 1u);
  sys.send(ref("w"), crash{"two"}); // inner gives up; root restarts inner, which starts a new w
  sys.run_until_idle();
  EXPECT_EQ(inner.stats().restarts, 1u);
  EXPECT_TRUE(inner.alive());
  EXPECT_TRUE(root.alive());
  auto w = ref("w");
  ASSERT_TRUE(w);
  EXPECT_EQ(w.stats().restarts, 0u); // a brand-new child slot
  EXPECT_EQ(a_stats.inits, 3u);     // first start, one restart, then the new w
  EXPECT_EQ(count_of("w"), 0u);
}

TEST_F(SupervisorTest, WhichChildrenListsChildNames) {
  auto sup = spawn_sup("sup", {}, {child_spec::of<counter>({.name = "a"}, &a_stats), child_spec::of<counter>({.name = "b"}, &b_stats)});
  auto names = sys.request<std::vector<std::string>>(sup, which_children{});
  sys.run_until_idle();
  ASSERT_TRUE(names.get());
  EXPECT_EQ(*names.get(), (std::vector<std::string>{"a", "b"}));
}

TEST_F(SupervisorTest, UnsupervisedActorStopsWhenItFails) {
  auto c = sys.spawn<counter>(&a_stats);
  sys.send(c, crash{"alone"});
  sys.run_until_idle();
  EXPECT_FALSE(c.alive());
  EXPECT_EQ(c.stats().failures, 1u);
}

} // namespace
} // namespace shoal::actors
