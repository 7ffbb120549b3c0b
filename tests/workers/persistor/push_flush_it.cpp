// The push source's persist.flush bookkeeping against Azurite, in process (run_push): a producer
// whose records wait for storage and that keeps sending persist.flush (as a stalled `shoal send`
// does, one every few milliseconds) must not grow the persistor's memory. Each flush used to copy
// every record in flight into a set of its own; in the 30-minute soak (bench/RESULTS.md) the
// copies of thousands of flushes took the persistor from 22 MiB to 583 MiB, and to 1.7 GB with
// Azurite starved harder. The engine's writer is held at fault_point::writing (a gate) so the
// records stay in flight for as long as the test wants.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "tests/support/azurite.hpp"
#include "tests/workers/fleet/fleet_harness.hpp"
#include "tests/workers/persistor/flush_producer.hpp"
#include "workers/persistor/sources.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

namespace shoal::tests {
namespace {

namespace ps = workers::persistor;
using namespace std::chrono_literals;

// Holds every writer at fault_point::writing until opened.
struct gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  std::atomic<int> held{0};
  void pass() {
    std::unique_lock lk(m);
    held += 1;
    cv.wait(lk, [this] { return open; });
  }
  void release() {
    {
      std::lock_guard lk(m);
      open = true;
    }
    cv.notify_all();
  }
};

TEST(PushFlushIt, FlushesWhileRecordsWaitHoldEachRecordOnceAndAtMost1024Ids) {
  auto acct = storage::parse_connection_string(azurite_connection_string());
  ASSERT_TRUE(acct) << acct.error().describe();
  auto pipe = storage::pipeline::make(*acct);
  ASSERT_TRUE(pipe) << pipe.error().describe();
  gate g;
  ps::engine_options eo;
  eo.container = unique_name("pflush");
  eo.name = unique_name("p");
  eo.writers = 1;
  eo.limits = {.max_records = 100'000, .max_bytes = 4u << 20, .max_delay_ms = 600'000};
  eo.fault = [&g](ps::fault_point p, std::uint64_t) {
    if (p == ps::fault_point::writing)
      g.pass();
  };
  ps::push_options po;
  const auto sock = std::filesystem::temp_directory_path() / (unique_name("pflush") + ".sock");
  po.endpoint = "ipc://" + sock.string();
  po.address = "persistor@flushit@h";
  std::atomic<bool> stop{false};
  ps::source_stats stats;
  std::promise<void> ready;
  auto running = std::async(std::launch::async, [&] {
    return ps::run_push(eo, storage::blob_client(*pipe), std::nullopt, std::nullopt, po, stop, stats, 60s,
                        [&ready](const std::string&) { ready.set_value(); });
  });
  struct stopper { // whatever fails below: the gate opens and run_push returns
    gate& g;
    std::atomic<bool>& stop;
    ~stopper() {
      g.release();
      stop = true;
    }
  } stop_at_end{g, stop};
  ASSERT_EQ(ready.get_future().wait_for(60s), std::future_status::ready);

  flush_producer a(po.endpoint);
  a.send("orders", 1, 300, 1);
  const auto first = a.flush(); // seals the batch: the writer takes it and waits at the gate
  ASSERT_TRUE(eventually([&] { return g.held.load() == 1; }, 60'000ms));
  // The producer's window is full and no ack comes: it flushes again and again, re-sending its
  // records now and then (duplicates of records in flight).
  transport::message_id last{};
  for (int i = 0; i < 3000; ++i) {
    last = a.flush();
    if (i % 1000 == 999)
      a.send("orders", 1, 300, 1);
  }
  ASSERT_TRUE(eventually([&] { return stats.flushes.load() == 3001 && stats.duplicates.load() == 900; }, 60'000ms))
      << stats.flushes.load() << " flushes, " << stats.duplicates.load() << " duplicates received";
  // The 300 records are held once, however many flushes wait for them; 1,024 ids wait.
  EXPECT_EQ(stats.flush_records.load(), 300u);
  EXPECT_EQ(stats.flushes_waiting.load(), 1024u);

  // New records, then flushes: a second waiter holding only them, behind the first.
  a.send("orders", 1001, 50, 1);
  for (int i = 0; i < 10; ++i)
    last = a.flush();
  ASSERT_TRUE(eventually([&] { return stats.flushes.load() == 3011; }, 60'000ms));
  EXPECT_EQ(stats.flush_records.load(), 350u);
  EXPECT_EQ(stats.flushes_waiting.load(), 1024u);

  // Storage again: every record acked, the flushes after them; the oldest ids (beyond 1,024)
  // are never answered.
  g.release();
  a.drain(120s, transport::to_hex(last));
  ASSERT_TRUE(a.acked.contains(transport::to_hex(last))) << a.acked.size() << " acks";
  ASSERT_TRUE(eventually(
      [&] {
        a.drain(20ms);
        return a.acked.size() == 350u + 1024u;
      },
      60'000ms))
      << a.acked.size() << " acks";
  for (std::uint64_t k = 1; k <= 300; ++k)
    EXPECT_TRUE(a.acked.contains(transport::to_hex(flush_producer::id_of(k)))) << k;
  for (std::uint64_t k = 1001; k <= 1050; ++k)
    EXPECT_TRUE(a.acked.contains(transport::to_hex(flush_producer::id_of(k)))) << k;
  EXPECT_FALSE(a.acked.contains(transport::to_hex(first))) << "the oldest flush ids are dropped past 1,024";
  EXPECT_EQ(stats.flushes_waiting.load(), 0u);
  EXPECT_EQ(stats.flush_records.load(), 0u);

  // An idle producer's flush is answered at once.
  const auto idle = a.flush();
  a.drain(60s, transport::to_hex(idle));
  EXPECT_TRUE(a.acked.contains(transport::to_hex(idle)));
  stop = true;
  auto r = running.get();
  EXPECT_TRUE(r) << r.error().describe();
}

} // namespace
} // namespace shoal::tests
