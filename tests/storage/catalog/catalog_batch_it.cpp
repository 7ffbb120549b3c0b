// catalog::insert_many and blob_catalog::register_blobs against the real Azurite (fixture
// `azurite`): batch sizes around the 99-entries-per-transaction limit (with the number of
// `$batch` requests they take), concurrent batches from two threads with no gaps, a crash after
// the WAL append or during the fan-out repaired by recovery, a lower-sequence batch fanning out
// over a higher one, re-registrations, an invalid record in the middle, the empty span, a lost
// counter race and a lost answer.

#include "storage/catalog.hpp"
#include "storage/catalog_blobs.hpp"

#include "tests/storage/catalog/catalog_it_support.hpp"
#include "tests/support/azurite.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace shoal::storage {
namespace {

using namespace catalog_testing;

class CatalogBatchIt : public catalog_it_base {
protected:
  // `n` blob records of one dest/date/host (three index partitions), named `prefix`0000.. .
  static std::vector<catalog_fields> batch(std::size_t n, const std::string& prefix = "b",
                                           const std::string& host = "h1", const std::string& count = "10") {
    std::vector<catalog_fields> out;
    for (std::size_t i = 0; i < n; ++i) {
      char num[24];
      std::snprintf(num, sizeof num, "%04zu", i);
      out.push_back(rec(prefix + num + ".json", "flights", "2001-01-05", host, "ndjson", count));
    }
    return out;
  }

  // A catalog opened through a transport that counts `$batch` requests, fan-out one at a time.
  struct counted {
    std::shared_ptr<intercepting_transport> transport = std::make_shared<intercepting_transport>();
    std::optional<catalog> cat;
  };
  counted open_counted(catalog_options opts = {}) {
    counted c;
    opts.fan_out_concurrency = 1;
    auto opened = open_through(c.transport, name, std::move(opts));
    EXPECT_TRUE(opened) << opened.error().describe();
    if (opened)
      c.cat.emplace(std::move(*opened));
    return c;
  }

  // Inserts `n` records in one call and checks seqs 1..n in record order and the number of
  // `$batch` requests: ceil(n/99) WAL appends and ceil(n/100) per index partition (3; none for
  // one record: single inserts), and none to mark the entries applied: the catalog read the
  // checkpoint when it was opened, so it moves the checkpoint past them with one MERGE.
  void insert_and_check(std::size_t n) {
    (void)make(blob_catalog::schema());
    auto c = open_counted();
    ASSERT_TRUE(c.cat);
    const int before = c.transport->batches.load();
    auto recs = batch(n);
    auto w = c.cat->insert_many(recs);
    ASSERT_TRUE(w) << w.error().describe();
    ASSERT_EQ(w->size(), n);
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_EQ((*w)[i].seq, i + 1) << "record " << i;
      EXPECT_EQ((*w)[i].checkpoint, n);
      EXPECT_EQ((*w)[i].sequence_attempts, 1);
    }
    const std::size_t hundreds = (n + 99) / 100;
    const std::size_t expected_batches = (n + 98) / 99 + (n == 1 ? 0 : 3 * hundreds);
    EXPECT_EQ(static_cast<std::size_t>(c.transport->batches.load() - before), expected_batches);
    EXPECT_EQ(by(*c.cat, "host", "h1").size(), n);
    auto one = by(*c.cat, "date", "2001-01-05");
    ASSERT_EQ(one.size(), n);
    EXPECT_EQ(one.front().fields, recs.front());
    expect_consistent(*c.cat);
  }
};

// -- batch sizes ----------------------------------------------------------------------------------

TEST_F(CatalogBatchIt, InsertManyOfOneRecord) { insert_and_check(1); }
TEST_F(CatalogBatchIt, InsertManyOf99RecordsTakesOneWalTransaction) { insert_and_check(99); }
TEST_F(CatalogBatchIt, InsertManyOf100RecordsTakesTwoWalTransactions) { insert_and_check(100); }
TEST_F(CatalogBatchIt, InsertManyOf250RecordsTakesThreeWalTransactions) { insert_and_check(250); }

TEST_F(CatalogBatchIt, AnEmptySpanWritesNothing) {
  auto c = make(blob_catalog::schema());
  auto w = c.insert_many({});
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_TRUE(w->empty());
  auto cc = c.checkpoint_and_counter();
  ASSERT_TRUE(cc) << cc.error().describe();
  EXPECT_EQ(cc->second, 0u);
}

TEST_F(CatalogBatchIt, AnInvalidRecordInTheMiddleWritesNothing) {
  auto c = make(blob_catalog::schema());
  auto recs = batch(5);
  recs[2].erase("host");
  auto w = c.insert_many(recs);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, errc::invalid_argument);
  EXPECT_NE(w.error().message.find("record 2 of 5"), std::string::npos) << w.error().message;
  recs = batch(5);
  recs[3]["_secret"] = "x"; // reserved field name
  ASSERT_FALSE(c.insert_many(recs));
  auto cc = c.checkpoint_and_counter();
  ASSERT_TRUE(cc);
  EXPECT_EQ(cc->second, 0u);
  auto wal = c.wal();
  ASSERT_TRUE(wal);
  EXPECT_TRUE(wal->empty());
  EXPECT_TRUE(by(c, "dest", "flights").empty());
}

// -- concurrency ----------------------------------------------------------------------------------

TEST_F(CatalogBatchIt, ConcurrentBatchesFromTwoThreadsLeaveNoGaps) {
  auto base = make(blob_catalog::schema());
  constexpr int calls = 4;
  constexpr std::size_t per_call = 60;
  struct writer_log {
    std::vector<std::vector<std::uint64_t>> calls; // seqs per call, in record order
    int lost_races = 0;
    std::string error;
  };
  writer_log logs[2];
  auto run = [&](int w) {
    auto c = open_writer(w);
    if (!c) {
      logs[w].error = c.error().describe();
      return;
    }
    for (int i = 0; i < calls; ++i) {
      auto recs = batch(per_call, "w" + std::to_string(w) + "-" + std::to_string(i) + "-", "h" + std::to_string(w));
      auto res = c->insert_many(recs);
      if (!res) {
        logs[w].error = res.error().describe();
        return;
      }
      std::vector<std::uint64_t> seqs;
      for (const auto& r : *res) {
        seqs.push_back(r.seq);
        logs[w].lost_races = std::max(logs[w].lost_races, r.sequence_attempts - 1);
      }
      logs[w].calls.push_back(std::move(seqs));
    }
  };
  std::thread t0(run, 0);
  std::thread t1(run, 1);
  t0.join();
  t1.join();
  ASSERT_TRUE(logs[0].error.empty()) << logs[0].error;
  ASSERT_TRUE(logs[1].error.empty()) << logs[1].error;
  std::set<std::uint64_t> all;
  for (const auto& l : logs)
    for (const auto& call : l.calls) {
      // One call of ≤ 99 records is one transaction: consecutive numbers.
      for (std::size_t i = 1; i < call.size(); ++i)
        EXPECT_EQ(call[i], call[i - 1] + 1) << "a batch's numbers are not consecutive";
      all.insert(call.begin(), call.end());
    }
  RecordProperty("lost_counter_races", logs[0].lost_races + logs[1].lost_races);
  const std::size_t total = 2 * calls * per_call;
  ASSERT_EQ(all.size(), total) << "two records got the same sequence number";
  EXPECT_EQ(*all.begin(), 1u);
  EXPECT_EQ(*all.rbegin(), total) << "a gap in the sequence numbers";
  EXPECT_EQ(by(base, "host", "h0").size(), calls * per_call);
  EXPECT_EQ(by(base, "host", "h1").size(), calls * per_call);
  expect_consistent(base);
}

// Writer A appends a batch, then (inside its fault hook, before its fan-out) writer B registers
// newer versions of the same records. A's fan-out, with lower sequence numbers, finds B's
// entities and must leave them: the state is that of applying the WAL in order.
TEST_F(CatalogBatchIt, ALowerSequenceBatchNeverOverwritesAHigherOne) {
  auto b = make(blob_catalog::schema());
  catalog_options slow;
  slow.fault = [&](write_stage s, std::size_t) {
    if (s == write_stage::after_wal_append) {
      auto w = b.insert_many(batch(30, "b", "h1", "20"));
      EXPECT_TRUE(w) << w.error().describe();
    }
    return false;
  };
  auto a = catalog::open(*svc, name, blob_catalog::schema(), slow);
  ASSERT_TRUE(a) << a.error().describe();
  auto w = a->insert_many(batch(30, "b", "h1", "10"));
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->back().seq, 30u);
  // A moves the checkpoint past its own entries at least (B's advance stopped at A's unapplied
  // ones; A, holding the checkpoint's ETag from its open, moves it with one MERGE and may leave
  // B's applied entries above it until the next advance).
  EXPECT_GE(w->back().checkpoint, 30u);
  auto found = by(b, "dest", "flights");
  ASSERT_EQ(found.size(), 30u);
  for (const auto& r : found) {
    EXPECT_EQ(r.fields.at("record_count"), "20") << r.fields.at("blob");
    EXPECT_GT(r.seq, 30u);
  }
  auto rep = b.recover(); // the next advance moves it past B's entries: nothing to replay
  ASSERT_TRUE(rep) << rep.error().describe();
  EXPECT_EQ(rep->replayed, 0u);
  expect_consistent(b);
}

// -- crashes and recovery -------------------------------------------------------------------------

TEST_F(CatalogBatchIt, CrashAfterTheWalAppendOfABatchIsRecovered) {
  catalog_options crashing;
  crashing.recover_on_open = false;
  crashing.fault = [](write_stage s, std::size_t) { return s == write_stage::after_wal_append; };
  auto c = make(blob_catalog::schema(), crashing);
  auto w = c.insert_many(batch(150));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().service_code, catalog_fault_injected);
  EXPECT_TRUE(by(c, "dest", "flights").empty()); // nothing applied
  auto cc = c.checkpoint_and_counter();
  ASSERT_TRUE(cc);
  EXPECT_EQ(cc->first, 0u);
  EXPECT_EQ(cc->second, 150u);
  auto rep = c.recover();
  ASSERT_TRUE(rep) << rep.error().describe();
  EXPECT_EQ(rep->replayed, 150u);
  EXPECT_EQ(rep->checkpoint_after, 150u);
  EXPECT_EQ(rep->skipped, 0u);
  EXPECT_EQ(by(c, "host", "h1").size(), 150u);
  expect_consistent(c);
}

TEST_F(CatalogBatchIt, CrashDuringTheFanOutOfABatchIsCompletedOnReopen) {
  catalog_options crashing;
  crashing.fan_out_concurrency = 1;
  // Stop after the first index transaction (100 entities of one partition).
  crashing.fault = [](write_stage s, std::size_t done) { return s == write_stage::after_index_entity && done >= 100; };
  auto c = make(blob_catalog::schema(), crashing);
  auto w = c.insert_many(batch(120));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().service_code, catalog_fault_injected);
  auto st = c.stats();
  ASSERT_TRUE(st) << st.error().describe();
  EXPECT_EQ(st->index_entities, 100u);
  EXPECT_EQ(st->unapplied, 120u);

  auto reopened = catalog::open(*svc, name, blob_catalog::schema());
  ASSERT_TRUE(reopened) << reopened.error().describe();
  for (const char* k : {"dest", "date", "host"})
    EXPECT_EQ(by(*reopened, k, std::string(k) == "dest" ? "flights" : std::string(k) == "date" ? "2001-01-05" : "h1")
                  .size(),
              120u)
        << k;
  expect_consistent(*reopened);
}

// -- re-registration and duplicates ---------------------------------------------------------------

TEST_F(CatalogBatchIt, ReRegisteringABatchAndDuplicatesInOneCallKeepTheLatest) {
  auto c = make(blob_catalog::schema());
  ASSERT_TRUE(c.insert_many(batch(40, "b", "h1", "10")));
  ASSERT_TRUE(c.remove(batch(40).at(7)));
  // The same records again (every index insert conflicts: settled one by one), and record 0
  // twice in the call: the later one (higher sequence) wins.
  auto again = batch(40, "b", "h1", "11");
  again.push_back(rec("b0000.json", "flights", "2001-01-05", "h1", "ndjson", "12"));
  auto w = c.insert_many(again);
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->back().seq, 82u);
  auto found = by(c, "host", "h1");
  ASSERT_EQ(found.size(), 40u); // record 7 is back
  for (const auto& r : found)
    EXPECT_EQ(r.fields.at("record_count"), r.fields.at("blob") == "b0000.json" ? "12" : "11") << r.fields.at("blob");
  expect_consistent(c);
}

// -- lost races and lost answers ------------------------------------------------------------------

TEST_F(CatalogBatchIt, ALostCounterRaceMovesTheWholeBatch) {
  auto other = make(blob_catalog::schema());
  auto t = std::make_shared<intercepting_transport>();
  t->before_batch = [&] {
    auto w = other.insert(rec("theirs.json", "flights", "2001-01-05", "h2"));
    ASSERT_TRUE(w) << w.error().describe();
  };
  auto mine = open_through(t, name);
  ASSERT_TRUE(mine) << mine.error().describe();
  auto w = mine->insert_many(batch(20));
  ASSERT_TRUE(w) << w.error().describe();
  for (std::size_t i = 0; i < w->size(); ++i) {
    EXPECT_EQ((*w)[i].seq, i + 2);
    EXPECT_EQ((*w)[i].sequence_attempts, 2);
  }
  expect_consistent(other);
}

TEST_F(CatalogBatchIt, ALostAnswerDoesNotDuplicateTheBatch) {
  auto base = make(blob_catalog::schema());
  auto t = std::make_shared<intercepting_transport>();
  t->lose_answer = true;
  auto c = open_through(t, name);
  ASSERT_TRUE(c) << c.error().describe();
  auto w = c->insert_many(batch(25));
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->front().seq, 1u);
  EXPECT_EQ(w->back().seq, 25u);
  auto wal = base.wal();
  ASSERT_TRUE(wal) << wal.error().describe();
  EXPECT_EQ(wal->size(), 25u);
  expect_consistent(base);
}

// -- the blob facade ------------------------------------------------------------------------------

TEST_F(CatalogBatchIt, RegisterBlobsRegistersEveryEntryOrNone) {
  auto bc = blob_catalog::open(*svc, name);
  ASSERT_TRUE(bc) << bc.error().describe();
  std::vector<blob_catalog_entry> entries;
  for (int i = 0; i < 50; ++i)
    entries.push_back({"flights/2001/01/05/00/h1-p1-" + std::to_string(10000000 + i) + ".json", "flights",
                       "2001-01-05", "h1", "persistor-v1", static_cast<std::uint64_t>(i), "shoal", 0});
  auto bad = entries;
  bad[25].date = "2001-13-05";
  auto refused = bc->register_blobs(bad);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::invalid_argument);
  auto none = bc->find({.dest = "flights"});
  ASSERT_TRUE(none) << none.error().describe();
  EXPECT_TRUE(none->empty());

  auto w = bc->register_blobs(entries);
  ASSERT_TRUE(w) << w.error().describe();
  ASSERT_EQ(w->size(), 50u);
  auto found = bc->find({.dest = "flights", .date = "2001-01-05", .host = "h1"});
  ASSERT_TRUE(found) << found.error().describe();
  ASSERT_EQ(found->size(), 50u);
  for (std::size_t i = 0; i < 50; ++i) {
    entries[i].seq = (*w)[i].seq;
    EXPECT_EQ((*found)[i], entries[i]);
  }
  expect_consistent(bc->generic());
}

} // namespace
} // namespace shoal::storage
