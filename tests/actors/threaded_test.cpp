// The threaded execution: real threads, bounded waits with deadlines, no sleeps as assertions.
#include "actors/supervisor.hpp"
#include "tests/actors/test_messages.hpp"
#include "tests/support/eventually.hpp"

#include <gtest/gtest.h>

#include <future>
#include <thread>

namespace shoal::actors {
namespace {
using namespace std::chrono_literals;
using testing::counter;
using testing::crash;
using testing::get_count;
using testing::log_capture;
using testing::ping;

using shoal::tests::eventually; // tests/support/eventually.hpp

struct hold {
  static constexpr std::string_view kind = "test.hold";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};

/// Blocks its handler on a gate, to fill mailboxes and delay replies on purpose.
class gated final : public actor {
public:
  gated(actor_config& cfg, std::shared_future<void> gate, std::atomic<int>* handled)
      : actor(cfg), gate_(std::move(gate)), handled_(handled) {}

protected:
  behavior make_behavior() override {
    return {
        [this](const hold&) {
          gate_.wait();
          ++*handled_;
          return 7;
        },
        [this](const ping&) { ++*handled_; },
    };
  }

private:
  std::shared_future<void> gate_;
  std::atomic<int>* handled_;
};

class ThreadedTest : public ::testing::Test {
protected:
  log_capture logs;
  actor_system sys{system_options{.process = "p", .host = "h"}};
  counter::shared shared;
};

TEST_F(ThreadedTest, SpawnReturnsAfterInitAndStopAfterOnStopAndJoin) {
  auto c = sys.spawn<counter>({.name = "c"}, &shared);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(shared.inits, 1u); // no waiting needed: spawn is a handshake
  sys.stop(*c);
  EXPECT_EQ(shared.stops, 1u); // likewise for stop
  EXPECT_FALSE(c->alive());
  EXPECT_FALSE(sys.lookup("c"));
}

TEST_F(ThreadedTest, PerSenderOrderHoldsWithConcurrentSenders) {
  auto c = sys.spawn<counter>({.name = "c", .mailbox = {.capacity = 64, .policy = overflow_policy::block}}, &shared);
  ASSERT_TRUE(c);
  constexpr std::uint32_t senders = 3;
  constexpr std::uint64_t per_sender = 20000;
  std::vector<std::thread> threads;
  for (std::uint32_t s = 0; s < senders; ++s)
    threads.emplace_back([&, s] {
      for (std::uint64_t i = 1; i <= per_sender; ++i)
        ASSERT_TRUE(sys.tell(*c, ping{s, i}));
    });
  for (auto& t : threads)
    t.join();
  auto n = sys.request<std::uint64_t>(*c, get_count{}, 10s);
  ASSERT_TRUE(n.get()) << n.get().error().message;
  EXPECT_EQ(*n.get(), senders * per_sender);
  EXPECT_EQ(shared.out_of_order, 0u);
  EXPECT_EQ(c->stats().rejected, 0u); // block policy: nobody was refused
  EXPECT_EQ(c->stats().dropped, 0u);
}

TEST_F(ThreadedTest, BlockPolicyMakesTheSenderWaitForRoom) {
  std::promise<void> open;
  std::atomic<int> handled{0};
  auto g = sys.spawn<gated>({.name = "g", .mailbox = {.capacity = 1, .policy = overflow_policy::block}},
                            open.get_future().share(), &handled);
  ASSERT_TRUE(g);
  ASSERT_TRUE(sys.tell(*g, hold{}));
  ASSERT_TRUE(eventually([&] { return g->stats().queued == 0; })); // the handler holds it now
  std::atomic<int> sent{0};
  std::thread producer([&] {
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(sys.tell(*g, ping{0, 1}));
      ++sent;
    }
  });
  ASSERT_TRUE(eventually([&] { return sent == 1 && g->stats().queued == 1; }));
  EXPECT_EQ(sent.load(), 1); // the second tell is blocked: capacity 1 is taken
  open.set_value();
  producer.join();
  EXPECT_TRUE(eventually([&] { return handled == 4; }));
  EXPECT_EQ(g->stats().rejected, 0u);
}

TEST_F(ThreadedTest, RequestTimesOutAndLateReplyIsCounted) {
  std::promise<void> open;
  std::atomic<int> handled{0};
  auto g = sys.spawn<gated>({.name = "g"}, open.get_future().share(), &handled);
  ASSERT_TRUE(g);
  auto r = sys.request<int>(*g, hold{}, 50ms);
  ASSERT_FALSE(r.get());
  EXPECT_EQ(r.get().error().code, errc::timeout);
  open.set_value();
  EXPECT_TRUE(eventually([&] { return sys.stats().late_replies == 1; }));
  auto again = sys.request<int>(*g, hold{}, 5s);
  ASSERT_TRUE(again.get()) << again.get().error().message;
  EXPECT_EQ(*again.get(), 7);
}

TEST_F(ThreadedTest, RequestStillQueuedAtItsDeadlineIsDroppedUnprocessed) {
  std::promise<void> open;
  std::atomic<int> handled{0};
  auto g = sys.spawn<gated>({.name = "g"}, open.get_future().share(), &handled);
  ASSERT_TRUE(g);
  ASSERT_TRUE(sys.tell(*g, hold{}));
  ASSERT_TRUE(eventually([&] { return g->stats().queued == 0; })); // the handler holds it now
  auto r = sys.request<int>(*g, hold{}, 20ms);                      // waits behind it
  ASSERT_FALSE(r.get());
  EXPECT_EQ(r.get().error().code, errc::timeout);
  open.set_value();
  ASSERT_TRUE(eventually([&] { return sys.stats().expired == 1; }));
  EXPECT_EQ(handled.load(), 1);            // the expired request never reached the handler
  EXPECT_EQ(sys.stats().late_replies, 0u); // so no reply was sent either
}

struct start_ticking {
  static constexpr std::string_view kind = "test.start_ticking";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};

class tick_counter final : public actor {
public:
  tick_counter(actor_config& cfg, std::atomic<int>* ticks) : actor(cfg), ticks_(ticks) {}

protected:
  behavior make_behavior() override {
    return {[this](const start_ticking&) { start_periodic_timer(1ms, [this] { ++*ticks_; }); }};
  }

private:
  std::atomic<int>* ticks_;
};

TEST_F(ThreadedTest, PeriodicTimerFiresOnItsThread) {
  std::atomic<int> ticks{0};
  auto t = sys.spawn<tick_counter>({.name = "t"}, &ticks);
  ASSERT_TRUE(t);
  ASSERT_TRUE(sys.tell(*t, start_ticking{}));
  EXPECT_TRUE(eventually([&] { return ticks >= 3; }));
}

TEST_F(ThreadedTest, SupervisorRestartsACrashedChildAndLogsOnce) {
  auto sup = sys.spawn<supervisor>({.name = "sup"}, supervisor_options{},
                                   std::vector{child_spec::of<counter>({.name = "a"}, &shared)});
  ASSERT_TRUE(sup) << sup.error().message;
  auto a = sys.lookup("a");
  ASSERT_TRUE(a);
  ASSERT_TRUE(sys.tell(*a, crash{"threaded-boom"}));
  ASSERT_TRUE(eventually([&] { return a->stats().restarts == 1 && shared.inits == 2; }));
  ASSERT_TRUE(sys.tell(*a, ping{0, 1}));
  auto n = sys.request<std::uint64_t>(*a, get_count{}, 5s);
  ASSERT_TRUE(n.get()) << n.get().error().message;
  EXPECT_EQ(*n.get(), 1u);
  EXPECT_EQ(logs.sink().count_containing("threaded-boom"), 1u);
  sys.stop(*sup);
  EXPECT_FALSE(a->alive()); // children stop with their supervisor
}

} // namespace
} // namespace shoal::actors
