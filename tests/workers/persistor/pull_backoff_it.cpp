// Pull mode on an idle queue: the pullers back off (randomized exponential, capped at
// idle_poll_max) instead of reading the queue every 50 ms, and still store what arrives.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/queue_client.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"
#include "workers/persistor/sources.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace shoal::tests {
namespace {

namespace ps = workers::persistor;
using namespace std::chrono_literals;

TEST(PersistorPullBackoffIt, IdlePullersBackOffAndStillStoreWhatArrives) {
  auto acct = storage::parse_connection_string(azurite_connection_string());
  ASSERT_TRUE(acct) << acct.error().describe();
  auto pipe = storage::pipeline::make(*acct);
  ASSERT_TRUE(pipe) << pipe.error().describe();

  ps::engine_options eo;
  eo.container = unique_name("pbackoff");
  eo.name = unique_name("p");
  eo.writers = 2;
  eo.limits.max_delay_ms = 200;
  ps::pull_options po;
  po.queue = unique_name("pbq");
  po.poison_queue = po.queue + "poison";
  po.pullers = 2;
  po.idle_poll_min = 50ms;
  po.idle_poll_max = 400ms;
  ps::source_stats stats;
  std::atomic<bool> stop{false};
  workers::result<void> ran;
  std::thread runner([&] {
    ran = ps::run_pull(eo, storage::blob_client(*pipe), storage::queue_client(*pipe), std::nullopt, std::nullopt, po,
                       stop, stats, 30s);
  });

  // 3 s of an empty queue. Reading every 50 ms would be about 2 × 60 gets; backing off to
  // 400 ms (each wait drawn from [200, 400] ms) allows at most 2 × (3 + 3000 / 200) = 36.
  // Wall clock on purpose: the requirement is a rate (queue reads per second while idle).
  std::this_thread::sleep_for(3s);
  const auto idle_gets = stats.empty_gets.load();
  EXPECT_GE(idle_gets, 2u);
  EXPECT_LE(idle_gets, 36u);

  storage::queue_client q(*pipe);
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(q.put_message(po.queue, R"({"dest":"idle","data":{"n":)" + std::to_string(i) + "}}"));
  EXPECT_TRUE(eventually([&] { return stats.acked.load() >= 20; }, 30s));
  EXPECT_EQ(stats.acked.load(), 20u);
  EXPECT_EQ(stats.received.load(), 20u);

  stop = true;
  runner.join();
  EXPECT_TRUE(ran) << ran.error().describe();
  storage::list_blobs_options lo;
  lo.prefix = "idle/";
  auto page = storage::blob_client(*pipe).list_blobs(eo.container, lo);
  ASSERT_TRUE(page) << page.error().describe();
  EXPECT_FALSE(page->blobs.empty());
}

} // namespace
} // namespace shoal::tests
