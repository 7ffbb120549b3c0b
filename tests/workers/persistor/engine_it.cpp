// The persistor engine in process against Azurite: a writer that throws (fault hook) before or
// after its blob is committed gives its batch back, is restarted, and every record is still
// acked exactly once and stored in a committed blob; flush() does not time out.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "tests/support/azurite.hpp"
#include "workers/blob_format.hpp"
#include "workers/persistor/engine.hpp"

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace shoal::tests {
namespace {

namespace ps = workers::persistor;
using namespace std::chrono_literals;

struct commits {
  std::mutex m;
  std::map<ps::ack_token, int> acks;        // token → times acked
  std::vector<ps::committed_blob> blobs;
};

struct engine_under_test {
  std::optional<storage::pipeline> pipe;
  std::unique_ptr<ps::engine> eng;
  std::string container;
  commits seen;
};

// Starts an engine on a fresh container with `writers` writers and batches of 50 records.
void start(engine_under_test& t, std::uint32_t writers, std::function<void(ps::fault_point, std::uint64_t)> fault) {
  auto acct = storage::parse_connection_string(azurite_connection_string());
  ASSERT_TRUE(acct) << acct.error().describe();
  auto pipe = storage::pipeline::make(*acct);
  ASSERT_TRUE(pipe) << pipe.error().describe();
  t.pipe.emplace(std::move(*pipe));
  ps::engine_options eo;
  eo.container = t.container = unique_name("pengine");
  eo.name = unique_name("p");
  eo.writers = writers;
  eo.limits.max_records = 50;
  eo.fault = std::move(fault);
  auto e = ps::engine::start(eo, storage::blob_client(*t.pipe), std::nullopt, std::nullopt,
                             [&t](const std::vector<ps::ack_token>& tokens, const ps::committed_blob& b) {
                               std::lock_guard lk(t.seen.m);
                               for (auto k : tokens)
                                 t.seen.acks[k] += 1;
                               t.seen.blobs.push_back(b);
                             });
  ASSERT_TRUE(e) << e.error().describe();
  t.eng = std::move(*e);
}

ps::record record_no(int i) {
  ps::record r;
  r.message_id = std::string(24, '0') + std::to_string(10'000'000 + i);
  r.producer = "engine_it";
  r.dest = "orders";
  r.payload = R"({"n":)" + std::to_string(i) + "}";
  r.event_time = 1'700'000'000'000 + i;
  r.ingest_time = r.event_time;
  return r;
}

// Submits n records, flushes, and checks every token acked once and every record in exactly one
// committed blob (a blob written before a throw and written again is not reported committed).
void submit_flush_and_check(engine_under_test& t, int n) {
  for (int i = 0; i < n; ++i)
    ASSERT_TRUE(t.eng->submit(record_no(i), static_cast<ps::ack_token>(i + 1)));
  auto f = t.eng->flush(60s);
  ASSERT_TRUE(f) << f.error().describe();
  std::lock_guard lk(t.seen.m);
  ASSERT_EQ(t.seen.acks.size(), static_cast<std::size_t>(n));
  for (const auto& [token, times] : t.seen.acks)
    EXPECT_EQ(times, 1) << "token " << token;
  std::map<std::string, int> stored;
  storage::blob_client bc(*t.pipe);
  for (const auto& b : t.seen.blobs) {
    auto d = bc.get_blob(t.container, b.name);
    ASSERT_TRUE(d) << d.error().describe();
    auto ex = workers::extract_records(d->body);
    ASSERT_TRUE(ex) << ex.error().describe();
    for (const auto& r : ex->records)
      stored[r.message_id] += 1;
  }
  ASSERT_EQ(stored.size(), static_cast<std::size_t>(n));
  for (const auto& [id, times] : stored)
    EXPECT_EQ(times, 1) << id;
}

TEST(PersistorEngineIt, AWriterThatThrowsBeforeWritingGivesItsBatchBackAndIsRestarted) {
  engine_under_test t;
  start(t, 2, [](ps::fault_point p, std::uint64_t n) {
    if (p == ps::fault_point::writing && (n == 1 || n == 3))
      throw std::runtime_error("injected: disk on fire");
  });
  ASSERT_TRUE(t.eng);
  submit_flush_and_check(t, 400);
  EXPECT_EQ(t.eng->stats().records_committed.load(), 400u);
}

TEST(PersistorEngineIt, AWriterThatThrowsAfterItsBlobIsCommittedWritesTheBatchAgainAndAcksItOnce) {
  engine_under_test t;
  start(t, 1, [](ps::fault_point p, std::uint64_t n) {
    if (p == ps::fault_point::blob_written && n == 2)
      throw std::runtime_error("injected: lost before registering");
  });
  ASSERT_TRUE(t.eng);
  submit_flush_and_check(t, 300);
  // The blob written before the throw is left unregistered and unacked; its records are in the
  // blob written again, so one more blob than batches exists in the container.
  storage::blob_client bc(*t.pipe);
  storage::list_blobs_options lo;
  lo.prefix = "orders/";
  auto page = bc.list_blobs(t.container, lo);
  ASSERT_TRUE(page) << page.error().describe();
  EXPECT_EQ(page->blobs.size(), 300u / 50u + 1u);
}

} // namespace
} // namespace shoal::tests
