// The catalog against the real Azurite (fixture `azurite`): every index key, intersections,
// ranges and paging, injected crashes repaired by recovery on reopen, concurrent writers with
// skewed clocks (threads and processes), concurrent recoveries, schema locking, compaction.

#include "storage/catalog.hpp"
#include "storage/catalog_blobs.hpp"

#include "workers/child_process.hpp"
#include "tests/support/azurite.hpp"
#include "tests/storage/catalog/catalog_it_support.hpp"

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace shoal::storage {
namespace {

using namespace std::chrono_literals;
using namespace catalog_testing;

class CatalogIt : public catalog_it_base {};

// -- insert, query, delete ------------------------------------------------------------------------

TEST_F(CatalogIt, InsertQueryDeleteThroughEveryIndexKey) {
  auto c = make(blob_catalog::schema());
  ASSERT_TRUE(c.insert(rec("flights/2001/01/05/a.json", "flights", "2001-01-05", "h1")));
  ASSERT_TRUE(c.insert(rec("flights/2001/01/06/b.json", "flights", "2001-01-06", "h2")));
  auto w = c.insert(rec("hotels/2001/01/05/c.json", "hotels", "2001-01-05", "h1"));
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->seq, 3u);
  EXPECT_EQ(w->checkpoint, 3u);

  EXPECT_EQ(blobs_of(by(c, "dest", "flights")),
            (std::vector<std::string>{"flights/2001/01/05/a.json", "flights/2001/01/06/b.json"}));
  EXPECT_EQ(blobs_of(by(c, "date", "2001-01-05")),
            (std::vector<std::string>{"flights/2001/01/05/a.json", "hotels/2001/01/05/c.json"}));
  EXPECT_EQ(blobs_of(by(c, "host", "h2")), (std::vector<std::string>{"flights/2001/01/06/b.json"}));
  auto one = by(c, "host", "h2");
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].fields.at("record_count"), "10");
  EXPECT_EQ(one[0].seq, 2u);

  // Re-inserting the same record is idempotent.
  ASSERT_TRUE(c.insert(rec("flights/2001/01/05/a.json", "flights", "2001-01-05", "h1")));
  EXPECT_EQ(by(c, "dest", "flights").size(), 2u);

  auto d = c.remove(rec("flights/2001/01/05/a.json", "flights", "2001-01-05", "h1"));
  ASSERT_TRUE(d) << d.error().describe();
  EXPECT_EQ(blobs_of(by(c, "dest", "flights")), (std::vector<std::string>{"flights/2001/01/06/b.json"}));
  EXPECT_EQ(blobs_of(by(c, "date", "2001-01-05")), (std::vector<std::string>{"hotels/2001/01/05/c.json"}));
  EXPECT_TRUE(by(c, "host", "h1").size() == 1u);
  // Deleting what is not there is fine.
  ASSERT_TRUE(c.remove(rec("nothing.json", "flights", "2001-01-05", "h1")));
  expect_consistent(c);
}

TEST_F(CatalogIt, IntersectionOfSeveralKeys) {
  auto c = make(blob_catalog::schema());
  for (std::string dest : {"flights", "hotels"})
    for (std::string date : {"2001-01-05", "2001-01-06"})
      for (std::string host : {"h1", "h2"})
        ASSERT_TRUE(c.insert(rec(dest + "/" + date + "/" + host + ".json", dest, date, host)));
  catalog_query q;
  q.where = {{"dest", "flights"}, {"date", "2001-01-05"}};
  auto r = c.query(q);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(blobs_of(*r), (std::vector<std::string>{"flights/2001-01-05/h1.json", "flights/2001-01-05/h2.json"}));
  q.where = {{"host", "h2"}, {"date", "2001-01-06"}, {"dest", "hotels"}};
  r = c.query(q);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(blobs_of(*r), (std::vector<std::string>{"hotels/2001-01-06/h2.json"}));
  q.where = {{"dest", "flights"}, {"dest", "hotels"}};
  r = c.query(q);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_TRUE(r->empty());
}

TEST_F(CatalogIt, RowKeyRangesAndPaging) {
  auto c = make(blob_catalog::schema());
  for (int i = 0; i < 12; ++i) {
    char blob[64];
    std::snprintf(blob, sizeof blob, "flights/2001/01/%02d/x.json", i + 1);
    ASSERT_TRUE(c.insert(rec(blob, "flights", "2001-01-05", "h1")));
  }
  catalog_query q;
  q.where = {{"dest", "flights"}};
  q.row_key_ge = "flights/2001/01/03";
  q.row_key_lt = "flights/2001/01/06";
  auto r = c.query(q);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(blobs_of(*r), (std::vector<std::string>{"flights/2001/01/03/x.json", "flights/2001/01/04/x.json",
                                                    "flights/2001/01/05/x.json"}));
  q = {};
  q.where = {{"host", "h1"}};
  q.row_key_prefix = "flights/2001/01/1";
  r = c.query(q);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->size(), 3u); // 10, 11, 12

  // Pages of 5: 5 + 5 + 2, continuations opaque, nothing repeated or lost.
  q = {};
  q.where = {{"date", "2001-01-05"}};
  q.page_size = 5;
  std::vector<catalog_record> all;
  std::optional<std::string> cont;
  int pages = 0;
  do {
    auto p = c.query_page(q, cont);
    ASSERT_TRUE(p) << p.error().describe();
    EXPECT_LE(p->records.size(), 5u);
    all.insert(all.end(), p->records.begin(), p->records.end());
    cont = p->continuation;
    ++pages;
  } while (cont && pages < 10);
  EXPECT_EQ(all.size(), 12u);
  EXPECT_GE(pages, 3);
  q.limit = 7;
  r = c.query(q);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->size(), 7u);
}

// -- crashes and recovery -------------------------------------------------------------------------

TEST_F(CatalogIt, CrashAfterWalAppendIsCompletedOnReopen) {
  catalog_options crashing;
  crashing.fault = [](write_stage s, std::size_t) { return s == write_stage::after_wal_append; };
  auto c = make(four_keys(), crashing);
  auto w = c.insert(rec("a.json", "flights", "2001-01-05", "h1"));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().service_code, catalog_fault_injected);
  EXPECT_TRUE(by(c, "dest", "flights").empty()); // nothing applied yet
  auto cc = c.checkpoint_and_counter();
  ASSERT_TRUE(cc);
  EXPECT_EQ(cc->first, 0u);
  EXPECT_EQ(cc->second, 1u);

  auto reopened = catalog::open(*svc, name, four_keys());
  ASSERT_TRUE(reopened) << reopened.error().describe();
  for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"dest", "flights"}, {"date", "2001-01-05"}, {"host", "h1"}, {"format", "ndjson"}})
    EXPECT_EQ(by(*reopened, k, v).size(), 1u) << k;
  expect_consistent(*reopened);
}

TEST_F(CatalogIt, CrashAfterHalfTheFanOutIsCompletedOnReopen) {
  catalog_options crashing;
  crashing.fault = [](write_stage s, std::size_t done) { return s == write_stage::after_index_entity && done == 2; };
  auto c = make(four_keys(), crashing);
  ASSERT_FALSE(c.insert(rec("a.json", "flights", "2001-01-05", "h1")));
  // Half the index: dest and date written, host and format not.
  EXPECT_EQ(by(c, "dest", "flights").size(), 1u);
  EXPECT_EQ(by(c, "date", "2001-01-05").size(), 1u);
  EXPECT_TRUE(by(c, "host", "h1").empty());
  EXPECT_TRUE(by(c, "format", "ndjson").empty());

  auto reopened = catalog::open(*svc, name, four_keys());
  ASSERT_TRUE(reopened) << reopened.error().describe();
  EXPECT_EQ(by(*reopened, "host", "h1").size(), 1u);
  EXPECT_EQ(by(*reopened, "format", "ndjson").size(), 1u);
  expect_consistent(*reopened);

  // The same for a delete: crash after half its fan-out, reopen, gone from every key.
  ASSERT_FALSE(c.remove(rec("a.json", "flights", "2001-01-05", "h1")));
  EXPECT_TRUE(by(c, "dest", "flights").empty());
  EXPECT_EQ(by(c, "host", "h1").size(), 1u);
  auto again = catalog::open(*svc, name, four_keys());
  ASSERT_TRUE(again) << again.error().describe();
  for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"dest", "flights"}, {"date", "2001-01-05"}, {"host", "h1"}, {"format", "ndjson"}})
    EXPECT_TRUE(by(*again, k, v).empty()) << k;
  expect_consistent(*again);
}

TEST_F(CatalogIt, CheckpointNeverPassesAnUnappliedEntry) {
  catalog_options crashing;
  crashing.recover_on_open = false;
  crashing.fault = [](write_stage s, std::size_t) { return s == write_stage::after_wal_append; };
  auto a = make(blob_catalog::schema(), crashing);
  ASSERT_FALSE(a.insert(rec("before.json", "flights", "2001-01-05", "h1"))); // seq 1, stopped after the append
  catalog_options live;
  live.recover_on_open = false; // a live writer that does not recover
  auto b = catalog::open(*svc, name, blob_catalog::schema(), live);
  ASSERT_TRUE(b) << b.error().describe();
  auto w = b->insert(rec("after.json", "flights", "2001-01-05", "h2"));
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->seq, 2u);
  EXPECT_EQ(w->checkpoint, 0u) << "the checkpoint passed the unapplied entry 1";
  auto rep = b->recover();
  ASSERT_TRUE(rep) << rep.error().describe();
  EXPECT_EQ(rep->replayed, 1u);
  EXPECT_EQ(rep->checkpoint_before, 0u);
  EXPECT_EQ(rep->checkpoint_after, 2u);
  expect_consistent(*b);
}

TEST_F(CatalogIt, StalledEntriesAreAppliedByTheNextWriter) {
  catalog_options crashing;
  crashing.recover_on_open = false;
  crashing.fault = [](write_stage s, std::size_t) { return s == write_stage::after_wal_append; };
  auto a = make(blob_catalog::schema(), crashing);
  ASSERT_FALSE(a.insert(rec("stalled.json", "flights", "2001-01-05", "h1")));
  catalog_options eager;
  eager.recover_on_open = false;
  eager.stall_timeout = -1h; // everything counts as stalled: the writer helps at once
  auto b = catalog::open(*svc, name, blob_catalog::schema(), eager);
  ASSERT_TRUE(b) << b.error().describe();
  auto w = b->insert(rec("next.json", "flights", "2001-01-05", "h2"));
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->checkpoint, 2u);
  expect_consistent(*b);
}

TEST_F(CatalogIt, ConcurrentRecoveriesAreSafe) {
  catalog_options crashing;
  crashing.recover_on_open = false;
  crashing.fault = [](write_stage s, std::size_t done) {
    return s == write_stage::after_wal_append || (s == write_stage::after_index_entity && done == 1);
  };
  auto c = make(blob_catalog::schema(), crashing);
  // Inserts and deletes of the same records, all stopped after the append: order matters.
  for (int i = 0; i < 6; ++i) {
    auto r = rec("r" + std::to_string(i) + ".json", "flights", "2001-01-05", "h" + std::to_string(i % 2));
    (void)c.insert(r);
    if (i % 2 == 0)
      (void)c.remove(r);
  }
  auto cc = c.checkpoint_and_counter();
  ASSERT_TRUE(cc);
  EXPECT_EQ(cc->second, 9u);
  EXPECT_EQ(cc->first, 0u);
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::vector<std::string> errors(4);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      catalog_options o;
      o.recover_on_open = false;
      auto mine = catalog::open(*svc, name, blob_catalog::schema(), o);
      if (!mine) {
        errors[t] = mine.error().describe();
        return;
      }
      auto r = mine->recover();
      if (r)
        ++ok;
      else
        errors[t] = r.error().describe();
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(ok.load(), 4) << errors[0] << errors[1] << errors[2] << errors[3];
  EXPECT_EQ(blobs_of(by(c, "dest", "flights")), (std::vector<std::string>{"r1.json", "r3.json", "r5.json"}));
  expect_consistent(c);
}

// -- concurrency and skew -------------------------------------------------------------------------

TEST_F(CatalogIt, ConcurrentWritersWithSkewedClocksLoseNothing) {
  auto base = make(blob_catalog::schema());
  constexpr int per_writer = 15;
  struct writer_log {
    std::vector<std::uint64_t> seqs; // in issue order
    int lost_races = 0;              // counter transactions that lost to the other writer
    std::string error;
  };
  writer_log logs[2];
  auto run = [&](int w, std::chrono::milliseconds skew) {
    auto c = open_writer(w, skew);
    if (!c) {
      logs[w].error = c.error().describe();
      return;
    }
    for (int i = 0; i < per_writer; ++i) {
      // Writer 0 inserts shared records, writer 1 deletes them: the outcome depends on order.
      auto shared = rec("shared" + std::to_string(i) + ".json", "flights", "2001-01-05", "hs");
      auto own = rec("w" + std::to_string(w) + "-" + std::to_string(i) + ".json", "flights", "2001-01-05",
                     "h" + std::to_string(w));
      for (const auto* r : {&own, &shared}) {
        auto res = (w == 1 && r == &shared) ? c->remove(*r) : c->insert(*r);
        if (!res) {
          logs[w].error = res.error().describe();
          return;
        }
        logs[w].seqs.push_back(res->seq);
        logs[w].lost_races += res->sequence_attempts - 1;
      }
    }
  };
  std::thread t0(run, 0, std::chrono::milliseconds(+7min));
  std::thread t1(run, 1, std::chrono::milliseconds(-7min));
  t0.join();
  t1.join();
  ASSERT_TRUE(logs[0].error.empty()) << logs[0].error;
  ASSERT_TRUE(logs[1].error.empty()) << logs[1].error;
  std::set<std::uint64_t> all;
  for (const auto& l : logs) {
    EXPECT_TRUE(std::is_sorted(l.seqs.begin(), l.seqs.end())) << "a writer's entries out of order";
    all.insert(l.seqs.begin(), l.seqs.end());
  }
  EXPECT_EQ(all.size(), 4u * per_writer) << "two writes got the same sequence number";
  RecordProperty("lost_counter_races", logs[0].lost_races + logs[1].lost_races);
  EXPECT_EQ(*all.rbegin(), 4u * per_writer);
  auto wal = base.wal();
  ASSERT_TRUE(wal) << wal.error().describe();
  ASSERT_EQ(wal->size(), 4u * per_writer) << "WAL entries lost";
  EXPECT_EQ(by(base, "host", "h0").size(), std::size_t{per_writer});
  EXPECT_EQ(by(base, "host", "h1").size(), std::size_t{per_writer});
  expect_consistent(base);
}

// Two `shoal catalog insert` processes, clocks skewed by ±5 minutes (SHOAL_TEST_CLOCK_SKEW_MS,
// a test hook of the CLI), racing on the same catalog with inserts and deletes of shared records.
TEST_F(CatalogIt, TwoProcessesWithSkewedClocksLoseNothing) {
  auto base = blob_catalog::open(*svc, name);
  ASSERT_TRUE(base) << base.error().describe();
  constexpr int n = 12;
  auto dir = std::filesystem::temp_directory_path() / tests::unique_name("catproc");
  std::filesystem::create_directories(dir);
  for (int w = 0; w < 2; ++w) {
    std::ofstream f(dir / ("in" + std::to_string(w) + ".ndjson"));
    for (int i = 0; i < n; ++i) {
      f << R"({"blob":"p)" << w << "-" << i << R"(.json","dest":"flights","date":"2001-01-05","host":"proc)" << w
        << R"(","format":"ndjson","record_count":)" << i << "}\n";
      f << R"({)" << (w == 1 ? R"("op":"delete",)" : "")
        << R"("blob":"shared)" << i << R"(.json","dest":"flights","date":"2001-01-05","host":"shared","format":"ndjson","record_count":1})"
        << "\n";
    }
  }
  const std::string skews[2] = {"300000", "-300000"};
  std::vector<workers::child_process> children;
  for (int w = 0; w < 2; ++w) {
    workers::child_options co;
    co.argv = {tests::shoal_binary(), "--connection-string", tests::azurite_connection_string(), "--log-level",
               "warn", "catalog", "insert", "--input", (dir / ("in" + std::to_string(w) + ".ndjson")).string()};
    co.env = {{"SHOAL_TEST_CLOCK_SKEW_MS", skews[w]}, {"SHOAL_CATALOG_TABLE", name}};
    auto c = workers::child_process::spawn(co);
    ASSERT_TRUE(c) << c.error().message;
    children.push_back(std::move(*c));
  }
  for (auto& child : children)
    EXPECT_EQ(child.wait(), 0) << "shoal catalog insert failed";
  std::filesystem::remove_all(dir);
  const catalog& c = base->generic();
  auto wal = c.wal();
  ASSERT_TRUE(wal) << wal.error().describe();
  ASSERT_EQ(wal->size(), 4u * n) << "WAL entries lost";
  // Each process's entries appear in the order it wrote them.
  std::map<std::string, std::vector<std::string>> per_writer;
  for (const auto& e : *wal)
    per_writer[e.writer].push_back(e.record.at("blob"));
  ASSERT_EQ(per_writer.size(), 2u);
  for (const auto& [writer, blobs] : per_writer) {
    std::vector<std::string> own;
    for (const auto& b : blobs)
      if (b[0] == 'p')
        own.push_back(b);
    for (std::size_t i = 0; i < own.size(); ++i)
      EXPECT_EQ(own[i].substr(own[i].find('-') + 1), std::to_string(i) + ".json") << writer;
  }
  EXPECT_EQ(by(c, "host", "proc0").size(), std::size_t{n});
  EXPECT_EQ(by(c, "host", "proc1").size(), std::size_t{n});
  expect_consistent(c);
}

// -- schema locking -------------------------------------------------------------------------------

TEST_F(CatalogIt, ADifferentSchemaIsRefusedWithAClearError) {
  auto c = make(blob_catalog::schema());
  ASSERT_TRUE(c.insert(rec("a.json", "flights", "2001-01-05", "h1")));
  auto other = catalog::open(*svc, name, catalog_schema{{"dest", "host"}, "blob"});
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, errc::conflict);
  EXPECT_EQ(other.error().service_code, catalog_schema_mismatch);
  EXPECT_NE(other.error().message.find("was created with index keys [dest, date, host]"), std::string::npos)
      << other.error().message;
  auto created = catalog::create(*svc, name, catalog_schema{{"dest", "date", "host"}, "name"});
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().service_code, catalog_schema_mismatch);
  // The same schema opens; no schema adopts the stored one.
  EXPECT_TRUE(catalog::open(*svc, name, blob_catalog::schema()));
  auto adopted = catalog::open(*svc, name, std::nullopt);
  ASSERT_TRUE(adopted) << adopted.error().describe();
  EXPECT_EQ(adopted->schema(), blob_catalog::schema());
  auto missing = catalog::open(*svc, name + "x", std::nullopt);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
}

// -- compaction and the blob facade ----------------------------------------------------------------

TEST_F(CatalogIt, CompactionRemovesCheckpointedEntriesAndTombstones) {
  auto c = make(blob_catalog::schema());
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(c.insert(rec("b" + std::to_string(i) + ".json", "flights", "2001-01-05", "h1")));
  ASSERT_TRUE(c.remove(rec("b0.json", "flights", "2001-01-05", "h1")));
  // A long retention keeps everything.
  auto kept = c.compact(24h);
  ASSERT_TRUE(kept) << kept.error().describe();
  EXPECT_EQ(kept->wal_deleted, 0u);
  // Azurite's Timestamp has the server's clock; a negative window makes every entry "old".
  auto rep = c.compact(-1min);
  ASSERT_TRUE(rep) << rep.error().describe();
  EXPECT_EQ(rep->checkpoint, 6u);
  EXPECT_EQ(rep->wal_deleted, 6u);
  EXPECT_EQ(rep->tombstones_deleted, 3u);
  auto st = c.stats();
  ASSERT_TRUE(st) << st.error().describe();
  EXPECT_EQ(st->wal_entries, 0u);
  EXPECT_EQ(st->tombstones, 0u);
  EXPECT_EQ(st->index_entities, 12u);
  EXPECT_EQ(st->partitions_per_key.at("dest"), 1u);
  EXPECT_EQ(by(c, "dest", "flights").size(), 4u);
  // Sequence numbers continue after compaction, and a reopen recovers nothing.
  auto w = c.insert(rec("b9.json", "flights", "2001-01-05", "h1"));
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->seq, 7u);
  auto re = catalog::open(*svc, name, blob_catalog::schema());
  ASSERT_TRUE(re) << re.error().describe();
  expect_consistent(*re, false);
  EXPECT_EQ(by(*re, "dest", "flights").size(), 5u);
}

TEST_F(CatalogIt, BlobCatalogRegistersAndFindsBlobs) {
  auto bc = blob_catalog::open(*svc, name);
  ASSERT_TRUE(bc) << bc.error().describe();
  blob_catalog_entry e{"flights/2001/01/05/00/h1-p1-00000001.json", "flights", "2001-01-05", "h1", "ndjson",
                       1000, "shoal", 0};
  auto w = bc->register_blob(e);
  ASSERT_TRUE(w) << w.error().describe();
  ASSERT_TRUE(bc->register_blob({"flights/2001/01/06/00/h2-p1-00000001.json", "flights", "2001-01-06", "h2",
                                 "persistor-v1", 5, "shoal", 0}));
  auto found = bc->find({.dest = "flights", .date = "2001-01-05"});
  ASSERT_TRUE(found) << found.error().describe();
  ASSERT_EQ(found->size(), 1u);
  e.seq = w->seq;
  EXPECT_EQ(found->front(), e);
  auto by_host = bc->find({.host = "h2", .blob_prefix = "flights/2001/01/06/"});
  ASSERT_TRUE(by_host) << by_host.error().describe();
  ASSERT_EQ(by_host->size(), 1u);
  EXPECT_EQ(by_host->front().record_count, 5u);
  ASSERT_TRUE(bc->unregister_blob(e));
  found = bc->find({.dest = "flights"});
  ASSERT_TRUE(found);
  EXPECT_EQ(found->size(), 1u);
  // A catalog of the same name with another schema is refused by the facade too.
  auto other = catalog::open(*svc, name, catalog_schema{{"dest"}, "blob"});
  ASSERT_FALSE(other);
}

// -- the assumptions the protocol rests on --------------------------------------------------------

// The counter MERGE (If-Match) and the entry INSERT commit together or not at all: a
// transaction with a stale counter ETag leaves no entry behind, so no sequence number can exist
// without its entry.
TEST_F(CatalogIt, CounterAndEntryCommitAtomically) {
  auto c = make(blob_catalog::schema());
  auto wal = svc->table(catalog::wal_table_name(name));
  ASSERT_TRUE(wal) << wal.error().describe();
  auto counter = wal->get("wal", "counter");
  ASSERT_TRUE(counter) << counter.error().describe();
  ASSERT_TRUE(c.insert(rec("a.json", "flights", "2001-01-05", "h1"))); // moves the counter to 1
  table_entity bump;
  bump.partition_key = "wal";
  bump.row_key = "counter";
  bump.set("seq", std::int64_t{1});
  table_entity entry;
  entry.partition_key = "wal";
  entry.row_key = "00000000000000000002";
  entry.set("op", std::string("insert"));
  table_transaction tx;
  tx.merge(bump, counter->etag); // stale
  tx.insert(entry);
  auto r = wal->submit_transaction(tx);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed) << r.error().describe();
  auto ghost = wal->get("wal", "00000000000000000002");
  ASSERT_FALSE(ghost);
  EXPECT_EQ(ghost.error().code, errc::not_found);
  auto cc = c.checkpoint_and_counter();
  ASSERT_TRUE(cc);
  EXPECT_EQ(cc->second, 1u);
}


// Another writer takes the next number between our counter read and our transaction: we get
// 412, re-read and take the number after it. Deterministic, unlike a timing race.
TEST_F(CatalogIt, ALostCounterRaceTakesTheNextNumber) {
  auto other = make(blob_catalog::schema());
  auto t = std::make_shared<intercepting_transport>();
  std::optional<catalog_write_result> theirs;
  t->before_batch = [&] {
    auto w = other.insert(rec("theirs.json", "flights", "2001-01-05", "h2"));
    ASSERT_TRUE(w) << w.error().describe();
    theirs = *w;
  };
  auto mine = open_through(t, name);
  ASSERT_TRUE(mine) << mine.error().describe();
  auto w = mine->insert(rec("mine.json", "flights", "2001-01-05", "h1"));
  ASSERT_TRUE(w) << w.error().describe();
  ASSERT_TRUE(theirs);
  EXPECT_EQ(theirs->seq, 1u);
  EXPECT_EQ(w->seq, 2u);
  EXPECT_EQ(w->sequence_attempts, 2);
  expect_consistent(other);
}

// The sequence transaction lands but its answer is lost: the retry hits the moved counter (412)
// and the writer recognises its own entry by op_id instead of appending a duplicate.
TEST_F(CatalogIt, ALostAnswerDoesNotDuplicateTheEntry) {
  auto base = make(blob_catalog::schema());
  auto t = std::make_shared<intercepting_transport>();
  t->lose_answer = true;
  auto c = open_through(t, name);
  ASSERT_TRUE(c) << c.error().describe();
  auto w = c->insert(rec("once.json", "flights", "2001-01-05", "h1"));
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_EQ(w->seq, 1u);
  EXPECT_GE(t->batches.load(), 2) << "the transaction was not retried";
  auto wal = base.wal();
  ASSERT_TRUE(wal) << wal.error().describe();
  EXPECT_EQ(wal->size(), 1u);
  expect_consistent(base);
}

// Gaps cannot come from crashes; a WAL row deleted by hand is stepped over and reported, not
// waited for forever.
TEST_F(CatalogIt, ManuallyDeletedEntriesAreSteppedOver) {
  catalog_options crashing;
  crashing.recover_on_open = false;
  crashing.fault = [](write_stage s, std::size_t) { return s == write_stage::after_wal_append; };
  auto c = make(blob_catalog::schema(), crashing);
  for (int i = 1; i <= 3; ++i)
    ASSERT_FALSE(c.insert(rec("g" + std::to_string(i) + ".json", "flights", "2001-01-05", "h1")));
  auto wal = svc->table(catalog::wal_table_name(name));
  ASSERT_TRUE(wal);
  ASSERT_TRUE(wal->delete_entity("wal", "00000000000000000002"));
  auto rep = c.recover();
  ASSERT_TRUE(rep) << rep.error().describe();
  EXPECT_EQ(rep->replayed, 2u);
  EXPECT_EQ(rep->skipped, 1u);
  EXPECT_EQ(rep->checkpoint_after, 3u);
  EXPECT_EQ(blobs_of(by(c, "dest", "flights")), (std::vector<std::string>{"g1.json", "g3.json"}));
}

// -- the CLI ---------------------------------------------------------------------------------------

// Runs `shoal --json --connection-string … <args>` with [catalog] table = `table`; returns
// (exit status, stdout).
std::pair<int, std::string> run_shoal(const std::string& table, const std::string& args) {
  const std::string cmd = "SHOAL_CATALOG_TABLE=" + table + " '" + tests::shoal_binary() +
                          "' --json --log-level warn --connection-string '" + tests::azurite_connection_string() +
                          "' " + args + " 2>/dev/null";
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p)
    return {-1, {}};
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST_F(CatalogIt, CliQueryRecoverAndStats) {
  catalog_options crashing;
  crashing.fault = [](write_stage s, std::size_t done) { return s == write_stage::after_index_entity && done == 1; };
  auto bc = blob_catalog::open(*svc, name, crashing);
  ASSERT_TRUE(bc) << bc.error().describe();
  ASSERT_FALSE(bc->register_blob({"flights/2001/01/05/00/h1-p1-00000001.json", "flights", "2001-01-05", "h1",
                                  "ndjson", 1000, "shoal", 0})); // crashed after dest
  auto [rc, out] = run_shoal(name, "catalog recover");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find(R"("replayed":1)"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("checkpoint_after":1)"), std::string::npos) << out;

  std::tie(rc, out) = run_shoal(name, "catalog query --dest flights --date 2001-01-05");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find(R"("blob":"flights/2001/01/05/00/h1-p1-00000001.json")"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("record_count":1000)"), std::string::npos) << out;
  std::tie(rc, out) = run_shoal(name, "catalog query --host h1 --prefix flights/2001/01/06");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "[]\n");

  std::tie(rc, out) = run_shoal(name, "catalog insert --blob x.json --dest hotels --date 2001-01-06 --host h2 "
                                      "--format ndjson --records 7");
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = run_shoal(name, "catalog stats");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find(R"("last_seq":2)"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("checkpoint":2)"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("index_entities":6)"), std::string::npos) << out;
  std::tie(rc, out) = run_shoal(name, "catalog delete --blob x.json --dest hotels --date 2001-01-06 --host h2");
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) = run_shoal(name, "catalog query --dest hotels");
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(out, "[]\n");
  std::tie(rc, out) = run_shoal(name, "catalog query");
  EXPECT_EQ(rc, 2) << "a query without dest/date/host is a usage error";
  std::tie(rc, out) = run_shoal(name + "x", "catalog stats");
  EXPECT_EQ(rc, 1) << "a missing catalog is reported";
}

} // namespace
} // namespace shoal::storage
