// Actor runtime on the deterministic system: no threads, a manual clock, no sleeps.
#include "tests/actors/test_messages.hpp"
#include "tests/support/deterministic_system.hpp"

#include <gtest/gtest.h>

namespace shoal::actors {
namespace {
using namespace std::chrono_literals;
using testing::add;
using testing::counter;
using testing::crash;
using testing::get_count;
using testing::ping;

struct nobody_handles {
  std::int32_t x = 0;
  MSGPACK_DEFINE(x);
};

class ActorTest : public ::testing::Test {
protected:
  tests::deterministic_system sys;
  counter::shared shared;
};

// First test doubles as the usage example: spawn, tell, request, read the reply.
TEST_F(ActorTest, TellsAndRequestsAreHandledInOrder) {
  auto c = sys.spawn<counter>(&shared);
  ASSERT_TRUE(c);
  EXPECT_EQ(shared.inits, 1u); // spawn returned after init
  sys.send(c, ping{0, 1});
  sys.send(c, ping{0, 2});
  auto n = sys.request<std::uint64_t>(c, get_count{});
  EXPECT_EQ(n.get().error().code, errc::not_ready); // nothing runs until the test says so
  sys.run_until_idle();
  ASSERT_TRUE(n.get()) << n.get().error().message;
  EXPECT_EQ(*n.get(), 2u);
  EXPECT_EQ(shared.out_of_order, 0u);
}

TEST_F(ActorTest, HandlerResultErrorIsTheReplyNotAFailure) {
  auto c = sys.spawn<counter>(&shared);
  auto ok = sys.request<std::int32_t>(c, add{2, 3});
  auto bad = sys.request<std::int32_t>(c, add{-1, 3});
  sys.run_until_idle();
  ASSERT_TRUE(ok.get()) << ok.get().error().message;
  EXPECT_EQ(*ok.get(), 5);
  ASSERT_FALSE(bad.get());
  EXPECT_EQ(bad.get().error().code, errc::invalid_argument);
  EXPECT_TRUE(c.alive());
  EXPECT_EQ(c.stats().failures, 0u);
}

TEST_F(ActorTest, UnknownKindIsCountedAndRequestGetsAnError) {
  auto c = sys.spawn<counter>(&shared);
  auto r = sys.request<void>(c, nobody_handles{});
  sys.run_until_idle();
  ASSERT_FALSE(r.get());
  EXPECT_EQ(r.get().error().code, errc::unknown_kind);
  EXPECT_EQ(sys.sys().stats().unknown_kind, 1u);
}

TEST_F(ActorTest, InitFailureMakesSpawnFail) {
  class refuses final : public actor {
  public:
    explicit refuses(actor_config& cfg) : actor(cfg) {}

  protected:
    result<void> init() override { return make_error(errc::invalid_argument, "no config"); }
    behavior make_behavior() override { return {}; }
  };
  auto r = sys.try_spawn<refuses>({.name = "r"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::init_failed);
  EXPECT_NE(r.error().message.find("no config"), std::string::npos);
  EXPECT_FALSE(sys.sys().lookup("r")); // the name is free again
}

TEST_F(ActorTest, StopRunsOnStopAndClosesTheMailbox) {
  auto c = sys.spawn<counter>(&shared);
  sys.sys().stop(c);
  EXPECT_EQ(shared.stops, 1u);
  EXPECT_FALSE(c.alive());
  auto r = sys.try_send(c, ping{0, 1});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::actor_down);
}

TEST_F(ActorTest, StopRequestMessageQuitsTheActor) {
  auto c = sys.spawn<counter>(&shared);
  sys.send(c, stop_request{});
  sys.run_until_idle();
  EXPECT_FALSE(c.alive());
  EXPECT_EQ(shared.stops, 1u);
}

// -- mailbox overflow ------------------------------------------------------------------------

TEST_F(ActorTest, RejectPolicyReturnsMailboxFullToTheSender) {
  auto c = sys.try_spawn<counter>({.name = "c", .mailbox = {.capacity = 2, .policy = overflow_policy::reject}},
                                  &shared);
  ASSERT_TRUE(c);
  EXPECT_TRUE(sys.try_send(*c, ping{0, 1}));
  EXPECT_TRUE(sys.try_send(*c, ping{0, 2}));
  auto third = sys.try_send(*c, ping{0, 3});
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, errc::mailbox_full);
  EXPECT_EQ(c->stats().rejected, 1u);
  sys.run_until_idle();
  EXPECT_TRUE(sys.try_send(*c, ping{0, 3})); // room again
}

TEST_F(ActorTest, DropNewestPolicyDiscardsAndCounts) {
  auto c = sys.try_spawn<counter>({.name = "c", .mailbox = {.capacity = 3, .policy = overflow_policy::drop_newest}},
                                  &shared);
  ASSERT_TRUE(c);
  for (std::uint64_t i = 1; i <= 5; ++i)
    EXPECT_TRUE(sys.try_send(*c, ping{0, i})); // the sender is not told
  EXPECT_EQ(c->stats().dropped, 2u);
  sys.run_until_idle();
  auto n = sys.request<std::uint64_t>(*c, get_count{});
  sys.run_until_idle();
  ASSERT_TRUE(n.get());
  EXPECT_EQ(*n.get(), 3u); // 1, 2, 3 kept; 4, 5 dropped
}

// -- request/reply with deadlines ------------------------------------------------------------

struct slow_query {
  static constexpr std::string_view kind = "test.slow_query";
  std::int64_t work_ms = 0;
  MSGPACK_DEFINE(work_ms);
};

/// Replies after "working" `work_ms` (it moves the manual clock, like a slow handler would).
class slow final : public actor {
public:
  slow(actor_config& cfg, manual_clock* clk) : actor(cfg), clk_(clk) {}

protected:
  behavior make_behavior() override {
    return {[this](const slow_query& q) {
      clk_->advance(std::chrono::milliseconds(q.work_ms));
      return q.work_ms;
    }};
  }

private:
  manual_clock* clk_;
};

/// Asks `slow` and records what came back.
class asker final : public actor {
public:
  struct outcome {
    int replies = 0;
    int timeouts = 0;
  };
  asker(actor_config& cfg, actor_ref target, outcome* out) : actor(cfg), target_(std::move(target)), out_(out) {}

protected:
  behavior make_behavior() override {
    return {[this](const slow_query& q) {
      auto r = request<std::int64_t>(target_, q, 100ms, [this](result<std::int64_t> r) {
        if (r)
          ++out_->replies;
        else if (r.error().code == errc::timeout)
          ++out_->timeouts;
      });
      if (!r)
        fail(r.error());
    }};
  }

private:
  actor_ref target_;
  outcome* out_;
};

TEST_F(ActorTest, ActorRequestGetsReplyBeforeDeadline) {
  auto s = sys.spawn<slow>(&sys.clock());
  asker::outcome out;
  auto a = sys.spawn<asker>(s, &out);
  sys.send(a, slow_query{10});
  sys.run_until_idle();
  EXPECT_EQ(out.replies, 1);
  EXPECT_EQ(out.timeouts, 0);
  EXPECT_EQ(sys.sys().stats().late_replies, 0u);
}

TEST_F(ActorTest, ActorRequestTimesOutAndTheLateReplyIsCounted) {
  auto s = sys.spawn<slow>(&sys.clock());
  asker::outcome out;
  auto a = sys.spawn<asker>(s, &out);
  sys.send(a, slow_query{250}); // the replier takes 250 ms; the deadline is 100 ms
  sys.run_until_idle();
  EXPECT_EQ(out.replies, 0);
  EXPECT_EQ(out.timeouts, 1);
  EXPECT_EQ(sys.sys().stats().late_replies, 1u);
}

TEST_F(ActorTest, ExternalRequestTimesOutOnTheManualClock) {
  auto s = sys.spawn<slow>(&sys.clock());
  auto r = sys.request<std::int64_t>(s, slow_query{0}, 50ms);
  sys.clock().advance(60ms); // deadline passes before the actor gets to run
  sys.run_until_idle();
  ASSERT_FALSE(r.get());
  EXPECT_EQ(r.get().error().code, errc::timeout);
  EXPECT_EQ(sys.sys().stats().late_replies, 1u); // the reply still came, and was dropped
}

// -- timers ----------------------------------------------------------------------------------

struct arm {
  static constexpr std::string_view kind = "test.arm";
  bool periodic = false;
  std::int64_t ms = 0;
  MSGPACK_DEFINE(periodic, ms);
};
struct disarm {
  static constexpr std::string_view kind = "test.disarm";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};

class ticker final : public actor {
public:
  ticker(actor_config& cfg, std::vector<time_point>* fired) : actor(cfg), fired_(fired) {}

protected:
  behavior make_behavior() override {
    return {
        [this](const arm& a) {
          auto d = std::chrono::milliseconds(a.ms);
          auto fn = [this] { fired_->push_back(now()); };
          id_ = a.periodic ? start_periodic_timer(d, fn) : start_timer(d, fn);
        },
        [this](const disarm&) { return cancel_timer(id_); },
    };
  }

private:
  std::vector<time_point>* fired_;
  timer_id id_ = 0;
};

TEST_F(ActorTest, OneShotTimerFiresOnceAtItsDueTime) {
  std::vector<time_point> fired;
  auto t = sys.spawn<ticker>(&fired);
  sys.send(t, arm{false, 30});
  sys.run_until_idle();
  sys.advance(29ms);
  EXPECT_TRUE(fired.empty());
  sys.advance(1ms);
  ASSERT_EQ(fired.size(), 1u);
  EXPECT_EQ(fired[0].time_since_epoch(), 30ms);
  sys.advance(1s);
  EXPECT_EQ(fired.size(), 1u);
}

TEST_F(ActorTest, PeriodicTimerFiresEachPeriodUntilCancelled) {
  std::vector<time_point> fired;
  auto t = sys.spawn<ticker>(&fired);
  sys.send(t, arm{true, 10});
  sys.advance(35ms);
  ASSERT_EQ(fired.size(), 3u);
  EXPECT_EQ(fired[2].time_since_epoch(), 30ms); // advance() steps through each due time
  auto cancelled = sys.request<bool>(t, disarm{});
  sys.run_until_idle();
  ASSERT_TRUE(cancelled.get());
  EXPECT_TRUE(*cancelled.get());
  sys.advance(100ms);
  EXPECT_EQ(fired.size(), 3u);
}

// -- registry --------------------------------------------------------------------------------

TEST_F(ActorTest, RegistryFindsByNameAndRefusesDuplicates) {
  auto a = sys.try_spawn<counter>({.name = "ledger"}, &shared);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->addr().to_string(), "ledger@test@localhost");
  auto found = sys.sys().lookup("ledger");
  ASSERT_TRUE(found);
  EXPECT_EQ(*found, *a);
  auto dup = sys.try_spawn<counter>({.name = "ledger"}, &shared);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, errc::duplicate_name);
  auto bad = sys.try_spawn<counter>({.name = "a@b"}, &shared);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_EQ(sys.sys().lookup("nobody").error().code, errc::not_found);
  sys.sys().stop(*a);
  EXPECT_FALSE(sys.sys().lookup("ledger"));
  EXPECT_TRUE(sys.try_spawn<counter>({.name = "ledger"}, &shared)); // reusable after stop
}

TEST_F(ActorTest, TellByAddressGoesThroughTheRegistry) {
  auto a = sys.try_spawn<counter>({.name = "c"}, &shared);
  ASSERT_TRUE(a);
  EXPECT_TRUE(sys.sys().tell(sys.sys().local_address("c"), ping{0, 1}));
  auto elsewhere = sys.sys().tell(address{"c", "other", "localhost"}, ping{0, 1});
  ASSERT_FALSE(elsewhere);
  EXPECT_EQ(elsewhere.error().code, errc::no_route); // no gateway installed
  auto n = sys.request<std::uint64_t>(*a, get_count{});
  sys.run_until_idle();
  EXPECT_EQ(*n.get(), 1u);
}

TEST_F(ActorTest, KindDefaultsToTheQualifiedTypeName) {
  EXPECT_EQ(kind_of<add>(), "shoal::actors::testing::add");
  EXPECT_EQ(kind_of<ping>(), "test.ping");
}

} // namespace
} // namespace shoal::actors
