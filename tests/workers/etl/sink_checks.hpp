#pragma once
// The exactly-once checks every SQL sink must pass (SQLite in sqlite_sink_test.cpp, PostgreSQL
// in postgres_sink_pg.cpp): the same code against both engines.

#include "tests/workers/etl/etl_test_data.hpp"
#include "workers/etl/orchestrator.hpp"
#include "workers/etl/sql_sink.hpp"
#include "workers/etl/steps.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <thread>

namespace shoal::tests::etl {

using sink_factory = std::function<std::unique_ptr<workers::etl::sql_sink>()>;
inline constexpr const char* k_blob = "flights/2026/11/21/12/host-p1-00000001.json";

inline std::int64_t count(workers::etl::sql_sink& s, const std::string& sql) {
  auto r = s.scalar(sql);
  EXPECT_TRUE(r) << r.error().message;
  return r ? *r : -1;
}

/// 10,000 records of which 37 are invalid: 9,963 rows, 37 quarantined with reasons, nothing else.
inline void check_ten_thousand_with_37_invalid(const sink_factory& open) {
  auto sink = open();
  ASSERT_TRUE(sink);
  auto d = flights_dataset();
  const std::string body = flights_blob(workers::blob_format::persistor_v1, 10'000, 37);
  auto r = workers::etl::run_pipeline(d, k_blob, body, *sink, "w1");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(r->load.already_loaded);
  EXPECT_EQ(r->load.inserted, 9963u);
  EXPECT_EQ(r->load.quarantined, 37u);
  EXPECT_EQ(r->load.duplicates, 0u);
  ASSERT_EQ(r->steps.size(), 4u);
  EXPECT_EQ(r->steps[0].records_in, 10'000u);
  EXPECT_EQ(r->steps[3].records_out, 9963u);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM flights"), 9963);
  EXPECT_EQ(count(*sink, "SELECT count(DISTINCT message_id) FROM flights"), 9963);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM shoal_etl_quarantine"), 37);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM shoal_etl_quarantine WHERE reason = '' OR raw = '' OR blob <> '" +
                             std::string(k_blob) + "'"), 0);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM shoal_etl_messages"), d.message_key == "table" ? 0 : 9963);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM shoal_etl_records"), 0);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM shoal_etl_ledger"), 1);
  // No quarantined message id made it into the table.
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM flights f JOIN shoal_etl_quarantine q ON q.message_id = f.message_id"), 0);
  auto led = sink->ledger(k_blob);
  ASSERT_TRUE(led && *led);
  EXPECT_EQ((*led)->rows_loaded, 9963);
  EXPECT_EQ((*led)->quarantined, 37);
  EXPECT_EQ((*led)->owner, "w1");
  // Mapping made it through: a known first row.
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM flights WHERE message_id = 'm-0' AND flight_time = '2001-01-01T00:47:00Z' "
                         "AND delay_min = 66 AND route = 'DTW-LAS'"), 1);
}

/// A load that committed and is run again (a worker that died before recording it, or a second
/// claimer) writes nothing: the ledger says the blob is loaded.
inline void check_reload_after_commit_is_a_no_op(const sink_factory& open) {
  auto d = flights_dataset();
  const std::string body = flights_blob(workers::blob_format::ndjson, 2'000, 10);
  {
    auto first = open();
    auto r = workers::etl::run_pipeline(d, k_blob, body, *first, "dead-worker");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->load.inserted, 1990u);
  } // the "worker" dies here, its step never recorded
  auto second = open();
  auto again = workers::etl::run_pipeline(d, k_blob, body, *second, "w2");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_TRUE(again->load.already_loaded);
  EXPECT_EQ(again->load.inserted, 0u);
  EXPECT_EQ(count(*second, "SELECT count(*) FROM flights"), 1990);
  EXPECT_EQ(count(*second, "SELECT count(*) FROM shoal_etl_quarantine"), 10);
  auto led = second->ledger(k_blob);
  ASSERT_TRUE(led && *led);
  EXPECT_EQ((*led)->owner, "dead-worker");
}

/// A message re-sent in another blob (same message id) lands once. `ledger_keys`: key messages
/// with shoal_etl_messages rows instead of the table's own key (message_key = "ledger").
inline void check_resent_message_lands_once(const sink_factory& open, bool ledger_keys = false) {
  auto sink = open();
  auto d = flights_dataset();
  if (ledger_keys) {
    d.message_key = "ledger";
    d.insert_sql = d.insert_sql.substr(0, d.insert_sql.find(" ON CONFLICT"));
  }
  auto payloads = flights(30);
  std::vector<workers::record_to_write> first, second;
  for (int i = 0; i < 20; ++i) first.push_back({"id-" + std::to_string(i), "2026-11-21T12:00:00Z", payloads[static_cast<std::size_t>(i)]});
  for (int i = 10; i < 30; ++i) second.push_back({"id-" + std::to_string(i), "2026-11-21T12:00:00Z", payloads[static_cast<std::size_t>(i)]});
  auto a = workers::etl::run_pipeline(d, "flights/a.json", write_blob(workers::blob_format::persistor_v1, first), *sink);
  ASSERT_TRUE(a) << a.error().message;
  auto b = workers::etl::run_pipeline(d, "flights/b.json", write_blob(workers::blob_format::ndjson, second), *sink);
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(a->load.inserted, 20u);
  EXPECT_EQ(b->load.inserted, 10u);
  EXPECT_EQ(b->load.duplicates, 10u);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM flights"), 30);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM shoal_etl_messages"), ledger_keys ? 30 : 0);
  auto led = sink->ledger("flights/b.json");
  ASSERT_TRUE(led && *led);
  EXPECT_EQ((*led)->duplicates, 10);
}

/// Two workers load the same blob at the same moment (two connections): rows land once.
inline void check_two_workers_racing_load_once(const sink_factory& open) {
  auto d = flights_dataset();
  const std::string body = flights_blob(workers::blob_format::persistor_v1, 5'000, 5);
  auto s1 = open();
  auto s2 = open();
  ASSERT_TRUE(s1->prepare(d.ddl));
  std::atomic<int> ready{0};
  workers::result<workers::etl::pipeline_outcome> r1 = std::unexpected(workers::error{}), r2 = std::unexpected(workers::error{});
  auto go = [&](workers::etl::sql_sink& s, workers::result<workers::etl::pipeline_outcome>& out, const char* who) {
    ready.fetch_add(1);
    while (ready.load() < 2) std::this_thread::yield();
    out = workers::etl::run_pipeline(d, k_blob, body, s, who);
  };
  std::thread t1(go, std::ref(*s1), std::ref(r1), "w1");
  std::thread t2(go, std::ref(*s2), std::ref(r2), "w2");
  t1.join();
  t2.join();
  ASSERT_TRUE(r1) << r1.error().message;
  ASSERT_TRUE(r2) << r2.error().message;
  EXPECT_NE(r1->load.already_loaded, r2->load.already_loaded);
  EXPECT_EQ(r1->load.inserted + r2->load.inserted, 4995u);
  EXPECT_EQ(count(*s1, "SELECT count(*) FROM flights"), 4995);
  EXPECT_EQ(count(*s1, "SELECT count(*) FROM shoal_etl_quarantine"), 5);
  EXPECT_EQ(count(*s1, "SELECT count(*) FROM shoal_etl_ledger"), 1);
}

/// A load that fails midway leaves nothing behind (one transaction), and can be retried.
inline void check_failed_load_rolls_back(const sink_factory& open) {
  auto sink = open();
  auto d = flights_dataset();
  ASSERT_TRUE(sink->prepare(d.ddl));
  workers::etl::load_batch b;
  b.blob = "flights/bad.json";
  b.dataset = "flights";
  b.insert_sql = "INSERT INTO flights (message_id, flight_time, delay_min, distance_mi, origin, destination, route, event_time) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
  auto row = [](std::string id, workers::etl::sql_value route) {
    return workers::etl::load_row{0, id, {id, std::string("t"), std::int64_t{1}, std::int64_t{2}, std::string("A"),
                                          std::string("B"), std::move(route), std::monostate{}}};
  };
  b.rows.push_back(row("x1", std::string("A-B")));
  b.rows.push_back(row("x2", std::monostate{})); // NOT NULL violation on route
  auto r = sink->load(b);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, workers::errc::io);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM flights"), 0);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM shoal_etl_ledger"), 0);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM shoal_etl_messages"), 0);
  b.rows.pop_back();
  auto ok = sink->load(b);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->inserted, 1u);
}

// The load batch of a flights blob of `n` records (ids "<prefix>-i"), through the three pure steps.
struct prepared_blob {
  std::string name, body;
  workers::etl::blob_records recs;
  workers::etl::load_batch batch;
};
inline std::unique_ptr<prepared_blob> prepare_blob(const workers::etl::dataset& d, const std::string& name, std::size_t n,
                                            const std::string& prefix) {
  auto p = std::make_unique<prepared_blob>();
  p->name = name;
  p->body = flights_blob(workers::blob_format::persistor_v1, n, 0, prefix);
  EXPECT_TRUE(workers::etl::extract_step(p->body, p->recs));
  workers::etl::validate_step(d, p->recs);
  workers::etl::transform_step(d, name, p->recs);
  p->batch = workers::etl::make_load_batch(d, name, p->recs, "w1");
  return p;
}

/// load_many: several blobs in ONE transaction (another connection sees none of them before the
/// COMMIT), a blob already in the ledger skipped alone, a blob whose claim ended left out, a blob
/// whose rows do not fit holding back no other.
inline void check_load_many_is_one_transaction(const sink_factory& factory) {
  using workers::errc;
  using workers::etl::load_batch;
  auto sink = factory();
  ASSERT_TRUE(sink);
  const auto d = flights_dataset();
  ASSERT_TRUE(sink->prepare(d.ddl));
  auto a = prepare_blob(d, "flights/2026/11/21/a.json", 100, "a");
  auto b = prepare_blob(d, "flights/2026/11/21/b.json", 200, "b");
  auto c = prepare_blob(d, "flights/2026/11/21/c.json", 300, "c");
  ASSERT_TRUE(sink->load(a->batch)); // a is loaded already: its ledger row says so
  // Just before COMMIT, another connection sees none of b's rows: b and c are one transaction.
  std::int64_t seen = -1;
  c->batch.may_commit = [&] {
    auto other = factory();
    seen = count(*other, "SELECT count(*) FROM flights");
    return true;
  };
  std::vector<const load_batch*> batches{&a->batch, &b->batch, &c->batch};
  auto r = sink->load_many(batches);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 3u);
  EXPECT_TRUE((*r)[0]->already_loaded);
  EXPECT_EQ((*r)[1]->inserted, 200u);
  EXPECT_EQ((*r)[2]->inserted, 300u);
  EXPECT_EQ(seen, 100);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM flights"), 600);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM shoal_etl_ledger"), 3);
  auto led = sink->ledger(c->name);
  ASSERT_TRUE(led && *led);
  EXPECT_EQ((*led)->rows_loaded, 300);

  // A blob whose claim ended just before COMMIT is left out; the others are committed.
  auto e = prepare_blob(d, "flights/2026/11/21/e.json", 50, "e");
  auto f = prepare_blob(d, "flights/2026/11/21/f.json", 60, "f");
  f->batch.may_commit = [] { return false; };
  std::vector<const load_batch*> two{&e->batch, &f->batch};
  auto lost = sink->load_many(two);
  ASSERT_TRUE(lost) << lost.error().message;
  ASSERT_TRUE((*lost)[0]);
  EXPECT_EQ((*lost)[0]->inserted, 50u);
  ASSERT_FALSE((*lost)[1]);
  EXPECT_EQ((*lost)[1].error().code, errc::lease_lost);
  EXPECT_FALSE(*sink->ledger(f->name));

  // A blob whose rows do not fit the insert holds back no other.
  auto g = prepare_blob(d, "flights/2026/11/21/g.json", 10, "g");
  auto h = prepare_blob(d, "flights/2026/11/21/h.json", 20, "h");
  g->batch.rows.back().values.pop_back();
  std::vector<const load_batch*> bad{&g->batch, &h->batch};
  auto mixed = sink->load_many(bad);
  ASSERT_TRUE(mixed) << mixed.error().message;
  ASSERT_FALSE((*mixed)[0]);
  EXPECT_EQ((*mixed)[0].error().code, errc::invalid_argument);
  ASSERT_TRUE((*mixed)[1]) << (*mixed)[1].error().message;
  EXPECT_EQ((*mixed)[1]->inserted, 20u);
  EXPECT_EQ(count(*sink, "SELECT count(*) FROM flights"), 600 + 50 + 20);
  EXPECT_EQ(count(*sink, "SELECT count(*) - count(DISTINCT message_id) FROM flights"), 0);
}

} // namespace shoal::tests::etl
