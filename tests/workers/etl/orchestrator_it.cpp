// Integration tests of the ETL orchestration against Azurite (label `etl`): blobs written
// directly in both persistor formats, ETL records in the work table, durable step history in a
// runs table, SQLite sink in a temp folder. Covers: the full pipeline through the work table,
// a worker killed (a real process, _exit) after the load committed but before the step was
// recorded, two workers holding the same record at once (expired lease), an unparsable blob
// going to the dead letter with its position, a stage actor that fails (restarted by its
// supervisor, the record retried), and the `shoal etl` CLI.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/request_counts.hpp"
#include "tests/workers/etl/etl_test_data.hpp"
#include "workers/etl/orchestrator.hpp"
#include "workers/claim/work_table.hpp"

#include <gtest/gtest.h>

#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace shoal::workers::etl {
namespace {

using namespace std::chrono_literals;

using shoal::tests::eventually; // tests/support/eventually.hpp

class EtlOrchestratorIt : public ::testing::Test {
protected:
  void SetUp() override {
    conn_ = tests::azurite_connection_string();
    ASSERT_FALSE(conn_.empty());
    auto account = storage::parse_connection_string(conn_);
    ASSERT_TRUE(account) << account.error().describe();
    storage::pipeline_options po;
    po.retry.base_delay = 20ms;
    po.http.request_timeout = 10'000ms;
    auto p = storage::pipeline::make(*account, po);
    ASSERT_TRUE(p) << p.error().describe();
    pipe_.emplace(*p);
    work_name_ = tests::unique_name("etlwork");
    runs_name_ = tests::unique_name("etlruns");
    container_ = tests::unique_name("etlblobs");
    for (auto& ch : container_) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    blobs_.emplace(*pipe_);
    ASSERT_TRUE(blobs_->create_container_if_not_exists(container_));
    auto rt = storage::table_client::make(*pipe_, runs_name_);
    ASSERT_TRUE(rt);
    runs_.emplace(*rt);
    ASSERT_TRUE(runs_->create_if_missing());
    dir_ = std::filesystem::temp_directory_path() / ("shoal-etl-it-" + work_name_);
    std::filesystem::create_directories(dir_);
    db_ = (dir_ / "etl.db").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  work_table make_work(std::uint32_t lease_ms = 30'000, std::uint32_t max_attempts = 5) {
    auto tc = storage::table_client::make(*pipe_, work_name_);
    EXPECT_TRUE(tc);
    work_table_options o;
    o.work.lease_ms = lease_ms;
    o.work.lease_renew_ms = lease_ms / 3;
    o.work.max_attempts = max_attempts;
    o.work.retry_base_ms = 50;
    o.work.retry_max_ms = 100;
    auto w = work_table::make(*tc, *blobs_, o);
    EXPECT_TRUE(w) << w.error().describe();
    EXPECT_TRUE(w->create_if_missing());
    return *w;
  }

  std::unique_ptr<sql_sink> sink() {
    auto s = open_sqlite_sink({.path = db_, .busy_timeout_ms = 30'000, .synchronous = "NORMAL"});
    EXPECT_TRUE(s) << s.error().message;
    return s ? std::move(*s) : nullptr;
  }

  etl_job make_job(std::string owner, std::function<bool(std::string_view)> crash = {},
                   history_mode history = history_mode::per_blob) {
    etl_job_options o;
    o.container = container_;
    o.owner = std::move(owner);
    o.datasets.push_back(tests::etl::flights_dataset());
    o.crash_after = std::move(crash);
    o.history = history;
    o.reopen_sink = [db = db_]() { return open_sqlite_sink({.path = db, .busy_timeout_ms = 30'000, .synchronous = "NORMAL"}); };
    auto j = etl_job::make(*blobs_, *runs_, sink(), std::move(o));
    EXPECT_TRUE(j);
    return std::move(*j);
  }

  void put(const std::string& name, const std::string& body) {
    auto r = blobs_->put_blob(container_, name, body);
    ASSERT_TRUE(r) << r.error().describe();
  }

  std::int64_t count(const std::string& sql) {
    auto s = sink();
    EXPECT_TRUE(s->prepare("")); // the ETL tables exist even when nothing was loaded
    auto r = s->scalar(sql);
    EXPECT_TRUE(r) << r.error().message;
    return r ? *r : -1;
  }

  std::vector<std::uint32_t> shards(const work_table& w) {
    std::vector<std::uint32_t> s(w.options().work.shards);
    std::iota(s.begin(), s.end(), 0u);
    return s;
  }

  // Runs the shoal binary with the test's storage and ETL settings; returns its exit status and
  // fills `out` with its stdout.
  int shoal(const std::string& args, const std::string& extra_env, std::string* out = nullptr, std::uint32_t lease_ms = 30'000) {
    const std::string out_file = (dir_ / "stdout.txt").string();
    std::ostringstream cmd;
    cmd << "env AZURE_STORAGE_CONNECTION_STRING='" << conn_ << "' SHOAL_WORK_TABLE=" << work_name_
        << " SHOAL_ETL_RUNS_TABLE=" << runs_name_ << " SHOAL_ETL_CONTAINER=" << container_
        << " SHOAL_ETL_SQLITE_PATH=" << db_ << " SHOAL_ETL_DATASETS_DIR=" << tests::source_dir() << "/deploy/datasets"
        << " SHOAL_WORK_LEASE_MS=" << lease_ms << " SHOAL_WORK_LEASE_RENEW_MS=" << lease_ms / 3
        << " SHOAL_WORK_RETRY_BASE_MS=50 SHOAL_WORK_RETRY_MAX_MS=100 " << extra_env << " " << tests::shoal_binary()
        << " " << args << " > " << out_file << " 2> " << (dir_ / "stderr.txt").string();
    int st = std::system(cmd.str().c_str());
    if (out) {
      std::ifstream in(out_file);
      std::stringstream ss;
      ss << in.rdbuf();
      *out = ss.str();
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
  }

  void die_after_commit_then_resume(const std::string& blob, history_mode history);

  std::string conn_;
  std::optional<storage::pipeline> pipe_;
  std::optional<storage::blob_client> blobs_;
  std::optional<run_log> runs_;
  std::string work_name_, runs_name_, container_;
  std::filesystem::path dir_;
  std::string db_;
};

TEST_F(EtlOrchestratorIt, LoadsClaimedRecordsAndRecordsEveryStep) {
  const std::string a = "flights/2026/11/21/12/host-p1-00000001.json";
  const std::string b = "logs/2026/11/21/12/host-p1-00000002.json";
  put(a, tests::etl::flights_blob(blob_format::persistor_v1, 10'000, 37));
  put(b, write_blob(blob_format::ndjson, {{"l1", "2026-11-21T12:00:00Z", "{\"msg\":\"hello\"}"},
                                          {"l2", "2026-11-21T12:00:01Z", "[1,2,3]"}}));
  auto work = make_work();
  std::vector<new_record> recs{{a, a, {}}, {b, b, {}}};
  ASSERT_TRUE(work.enqueue("etl", recs));
  auto job = make_job("w1");
  auto sum = job.drain(work, "etl", 16);
  ASSERT_TRUE(sum) << sum.error().describe();
  EXPECT_EQ(sum->succeeded, 2u);
  EXPECT_EQ(sum->failed, 0u);

  EXPECT_EQ(count("SELECT count(*) FROM flights"), 9963);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_quarantine"), 37);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_records"), 2); // generic mode for dest "logs"
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_records WHERE dest = 'logs' AND payload = '[1,2,3]'"), 1);

  auto shown = runs_->show(a);
  ASSERT_TRUE(shown) << shown.error().describe();
  const auto& [inst, steps] = *shown;
  EXPECT_EQ(inst.status, "completed");
  EXPECT_EQ(inst.step, "load");
  EXPECT_EQ(inst.dataset, "flights");
  EXPECT_EQ(inst.loaded, 9963);
  EXPECT_EQ(inst.quarantined, 37);
  EXPECT_EQ(inst.records, 10'000);
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(steps[0].step, "extract");
  EXPECT_EQ(steps[0].records_in, 10'000);
  EXPECT_EQ(steps[3].step, "load");
  EXPECT_EQ(steps[3].records_out, 9963);
  auto rec = work.get("etl", a);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->status, record_status::done);
  auto list = runs_->list(std::string("completed"), 10);
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), 2u);
}

// A worker dies (in process: crash_after "load" returns true) right after its load committed,
// before recording it; once its lease expired another worker resumes and finds the rows in the
// ledger. `history` decides what the dead worker left in the runs table.
void EtlOrchestratorIt::die_after_commit_then_resume(const std::string& a, history_mode history) {
  put(a, tests::etl::flights_blob(blob_format::ndjson, 3'000, 12));
  auto work = make_work(1000);
  std::vector<new_record> recs{{a, a, {}}};
  ASSERT_TRUE(work.enqueue("etl", recs));
  {
    auto dying = make_job("dying", [](std::string_view step) { return step == "load"; }, history);
    auto claimed = work.claim("etl", shards(work), "dying", 1);
    ASSERT_TRUE(claimed && claimed->size() == 1);
    auto r = dying.process(work, (*claimed)[0]);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::cancelled);
  }
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 2988); // committed
  auto mid = runs_->show(a);
  if (history == history_mode::per_step) {
    ASSERT_TRUE(mid);
    EXPECT_EQ(mid->first.status, "running");
    EXPECT_EQ(mid->second.size(), 3u); // extract, validate, transform recorded; load not
  } else {
    ASSERT_FALSE(mid) << "a first attempt wrote history before its end";
    EXPECT_EQ(mid.error().code, errc::not_found);
  }

  auto job = make_job("w2", {}, history);
  std::optional<claimed_record> again;
  ASSERT_TRUE(eventually([&] {
    auto c = work.claim("etl", shards(work), "w2", 1);
    if (c && !c->empty()) again = (*c)[0];
    return again.has_value();
  }, 15s)) << "the dead worker's lease never expired";
  EXPECT_EQ(again->attempts, 2);
  auto r = job.process(work, *again);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_TRUE(r->load.already_loaded);
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 2988);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_quarantine"), 12);
  auto done = runs_->show(a);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->first.status, "completed");
  EXPECT_EQ(done->first.loaded, 2988);
  ASSERT_EQ(done->second.size(), 4u);
  // per_step keeps the first run's rows; per_blob's second run (a resumed blob) wrote them all.
  EXPECT_EQ(done->second[0].attempt, history == history_mode::per_step ? 1 : 2);
  EXPECT_EQ(done->second[3].attempt, 2);
  EXPECT_NE(done->second[3].detail.find("already loaded"), std::string::npos);
}

TEST_F(EtlOrchestratorIt, ResumesAfterInProcessDeathBetweenCommitAndRecordPerStep) {
  die_after_commit_then_resume("flights/2026/11/21/13/host-p1-00000003.json", history_mode::per_step);
}

TEST_F(EtlOrchestratorIt, ResumesAfterInProcessDeathBetweenCommitAndTheOneHistoryWrite) {
  die_after_commit_then_resume("flights/2026/11/21/13/host-p1-00000013.json", history_mode::per_blob);
}

TEST_F(EtlOrchestratorIt, ABatchOfFirstAttemptsLoadsOneTransactionPerDatasetAndWritesOneHistoryRequestPerBlob) {
  // Five flights blobs and one generic blob claimed together: the flights load in one SQL
  // transaction, the generic one in another; each blob's history (instance + 4 steps) is one
  // entity group transaction, with no read of the runs table before (first attempts).
  std::vector<std::string> names;
  for (int i = 0; i < 5; ++i) {
    names.push_back("flights/2026/11/22/host-p1-0000010" + std::to_string(i) + ".json");
    put(names.back(), tests::etl::flights_blob(blob_format::persistor_v1, 500, 2, "b" + std::to_string(i)));
  }
  names.push_back("logs/2026/11/22/host-p1-00000200.json");
  put(names.back(), write_blob(blob_format::persistor_v1, {{"g1", "2026-11-22T12:00:00Z", "{\"msg\":\"hi\"}"}}));
  auto work = make_work();
  std::vector<new_record> recs;
  for (const auto& n : names) recs.push_back({n, n, {}});
  ASSERT_TRUE(work.enqueue("etl", recs));
  auto claimed = work.claim("etl", shards(work), "w1", 16);
  ASSERT_TRUE(claimed);
  ASSERT_EQ(claimed->size(), names.size());
  auto job = make_job("w1");
  std::vector<claimed_record*> ptrs;
  for (auto& c : *claimed) ptrs.push_back(&c);
  std::vector<run_control> ctls(ptrs.size());
  const auto before = storage::process_request_counts();
  auto outs = job.run_batch(ptrs, ctls);
  const auto history = tests::requests_to(runs_name_, before);
  ASSERT_EQ(outs.size(), names.size());
  for (std::size_t i = 0; i < outs.size(); ++i) ASSERT_TRUE(outs[i]) << outs[i].error().describe();
  EXPECT_EQ(history, (std::map<std::string, std::uint64_t>{{"batch", names.size()}}))
      << "one entity group transaction per blob and nothing else";
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 5 * 498);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_ledger"), 6);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_records"), 1);
  for (const auto& n : names) {
    auto shown = runs_->show(n);
    ASSERT_TRUE(shown) << n;
    EXPECT_EQ(shown->first.status, "completed");
    EXPECT_EQ(shown->second.size(), 4u);
  }
  // Run again (attempt 2 of each): a resumed blob reads its history and finds the load there.
  for (auto& c : *claimed) c.attempts = 2;
  auto again = job.run_batch(ptrs, ctls);
  for (const auto& o : again) {
    ASSERT_TRUE(o);
    EXPECT_TRUE(o->resumed_after_load);
  }
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 5 * 498);
}

TEST_F(EtlOrchestratorIt, ABatchLeavesARecordWhoseLeaseIsLostOutOfTheCommit) {
  std::vector<std::string> names;
  for (int i = 0; i < 3; ++i) {
    names.push_back("flights/2026/11/23/host-p1-0000030" + std::to_string(i) + ".json");
    put(names.back(), tests::etl::flights_blob(blob_format::persistor_v1, 100, 0, "l" + std::to_string(i)));
  }
  std::vector<claimed_record> recs(names.size());
  std::vector<claimed_record*> ptrs;
  for (std::size_t i = 0; i < names.size(); ++i) {
    recs[i].id = recs[i].payload = names[i];
    recs[i].attempts = 1;
    recs[i].owner = "w1";
    ptrs.push_back(&recs[i]);
  }
  std::vector<run_control> ctls(names.size());
  std::atomic<bool> lost{false};
  ctls[1].lease_lost = [&] { return lost.load(); };
  // The lease of record 1 is lost while the others wait for the group's transaction.
  auto job = make_job("w1", [&](std::string_view step) {
    if (step == "transform") lost = true;
    return false;
  });
  auto outs = job.run_batch(ptrs, ctls);
  ASSERT_TRUE(outs[0]) << outs[0].error().describe();
  ASSERT_FALSE(outs[1]);
  EXPECT_EQ(outs[1].error().code, errc::lease_lost);
  ASSERT_TRUE(outs[2]) << outs[2].error().describe();
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 200);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_ledger"), 2);
}

TEST_F(EtlOrchestratorIt, KilledProcessAfterCommitResumesWithoutLoadingTwice) {
  const std::string a = "flights/2026/11/21/14/host-p1-00000004.json";
  put(a, tests::etl::flights_blob(blob_format::persistor_v1, 10'000, 37));
  ASSERT_EQ(shoal("etl enqueue " + a, ""), 0);
  // The worker process dies (_exit 137) right after the load transaction committed.
  EXPECT_EQ(shoal("etl run --once --owner victim", "SHOAL_ETL_CRASH_AFTER=load SHOAL_ETL_HISTORY=per_step", nullptr, 1000), 137);
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 9963);
  // A fresh worker resumes once the victim's lease expired.
  ASSERT_TRUE(eventually([&] {
    std::string out;
    EXPECT_EQ(shoal("etl run --once --owner survivor", "SHOAL_ETL_HISTORY=per_step", &out, 1000), 0);
    auto s = runs_->show(a);
    return s && s->first.status == "completed";
  }, 20s, 300ms));
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 9963);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_quarantine"), 37);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_ledger"), 1);
  std::string out;
  ASSERT_EQ(shoal("--json etl show " + a, "", &out), 0);
  auto j = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  EXPECT_EQ(j["status"], "completed");
  EXPECT_EQ(j["loaded"], 9963);
  ASSERT_EQ(j["history"].size(), 4u);
  EXPECT_EQ(j["history"][2]["owner"], "victim");
  EXPECT_EQ(j["history"][3]["owner"], "survivor");
  ASSERT_EQ(shoal("etl runs", "", &out), 0);
  EXPECT_NE(out.find(a), std::string::npos) << out;
  EXPECT_NE(out.find("completed"), std::string::npos) << out;
}

class EtlKillNineIt : public EtlOrchestratorIt {
protected:
  // kill -9 of a `shoal etl run` process loading four blobs of one dataset in one SQL
  // transaction, at `point` (before_commit: nothing committed; after_commit: all four
  // committed, no history written); a survivor then loads every record exactly once.
  void crash_and_resume(const std::string& point, const std::string& day) {
    std::vector<std::string> names;
    for (int i = 0; i < 4; ++i) {
      names.push_back("flights/2026/11/" + day + "/host-p1-0000040" + std::to_string(i) + ".json");
      put(names.back(), tests::etl::flights_blob(blob_format::persistor_v1, 1'000, 4, point + std::to_string(i)));
    }
    std::string all;
    for (const auto& n : names) all += " " + n;
    ASSERT_EQ(shoal("etl enqueue" + all, ""), 0);
    EXPECT_EQ(shoal("etl run --once --owner victim", "SHOAL_ETL_CRASH_AT=" + point, nullptr, 1000), 128 + 9)
        << "the victim was to SIGKILL itself at " << point;
    // The first round's blobs (all four, unless the claim found them in two rounds) went down
    // in one transaction: none committed before it, all of them after.
    const std::int64_t committed = count("SELECT count(*) FROM flights");
    if (point == "before_commit") {
      EXPECT_EQ(committed, 0);
    } else {
      EXPECT_GE(committed, 996);
      EXPECT_EQ(committed % 996, 0) << "a blob half loaded";
    }
    for (const auto& n : names) EXPECT_FALSE(runs_->show(n)) << "history written for " << n;
    // The survivor resumes once the victim's leases expired.
    ASSERT_TRUE(eventually([&] {
      std::string out;
      EXPECT_EQ(shoal("etl run --once --owner survivor", "", &out, 1000), 0);
      for (const auto& n : names) {
        auto s = runs_->show(n);
        if (!s || s->first.status != "completed") return false;
      }
      return true;
    }, 30s, 300ms));
    EXPECT_EQ(count("SELECT count(*) FROM flights"), 4 * 996);
    EXPECT_EQ(count("SELECT count(*) - count(DISTINCT message_id) FROM flights"), 0);
    EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_quarantine"), 16);
    EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_ledger"), 4);
    for (const auto& n : names) {
      auto s = runs_->show(n);
      ASSERT_TRUE(s);
      EXPECT_EQ(s->first.loaded, 996) << n;
      EXPECT_EQ(s->second.size(), 4u) << n;
    }
  }
};

TEST_F(EtlKillNineIt, KilledBeforeTheCommitOfABatchLoadsEveryRecordOnce) { crash_and_resume("before_commit", "24"); }

TEST_F(EtlKillNineIt, KilledAfterTheCommitBeforeTheHistoryWriteLoadsEveryRecordOnce) {
  crash_and_resume("after_commit", "25");
}

TEST_F(EtlOrchestratorIt, TwoWorkersHoldingTheSameRecordLoadItOnce) {
  const std::string a = "flights/2026/11/21/15/host-p1-00000005.json";
  put(a, tests::etl::flights_blob(blob_format::persistor_v1, 10'000, 37));
  auto work = make_work(1000);
  std::vector<new_record> recs{{a, a, {}}};
  ASSERT_TRUE(work.enqueue("etl", recs));
  auto first = work.claim("etl", shards(work), "slow", 1);
  ASSERT_TRUE(first && first->size() == 1);
  claimed_record slow_rec = (*first)[0];
  // The slow worker's lease expires; another worker claims the same record.
  std::optional<claimed_record> fast_rec;
  ASSERT_TRUE(eventually([&] {
    auto c = work.claim("etl", shards(work), "fast", 1);
    if (c && !c->empty()) fast_rec = (*c)[0];
    return fast_rec.has_value();
  }, 15s));
  EXPECT_GT(fast_rec->gen, slow_rec.gen);
  auto slow = make_job("slow");
  auto fast = make_job("fast");
  result<pipeline_outcome> r1 = std::unexpected(error{}), r2 = std::unexpected(error{});
  std::thread t1([&] { r1 = slow.run(slow_rec); });
  std::thread t2([&] { r2 = fast.run(*fast_rec); });
  t1.join();
  t2.join();
  ASSERT_TRUE(r1) << r1.error().describe();
  ASSERT_TRUE(r2) << r2.error().describe();
  EXPECT_NE(r1->load.already_loaded, r2->load.already_loaded);
  EXPECT_EQ(r1->load.inserted + r2->load.inserted, 9963u);
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 9963);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_quarantine"), 37);
  // Only the current holder may complete the record.
  auto stale = work.complete(slow_rec);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::lease_lost);
  EXPECT_TRUE(work.complete(*fast_rec));
}

TEST_F(EtlOrchestratorIt, UnparsableBlobFailsWithPositionThenGoesDead) {
  const std::string a = "flights/2026/11/21/16/host-p1-00000006.json";
  put(a, "{\"DATA\":\"{}\",\"METADATA\":{\"message_id\":\"1\"}}\n\n{\"DATA\": \"x\", \"METADATA\": {oops}}\n");
  auto work = make_work(30'000, 2);
  std::vector<new_record> recs{{a, a, {}}};
  ASSERT_TRUE(work.enqueue("etl", recs));
  auto job = make_job("w1");
  ASSERT_TRUE(eventually([&] {
    auto s = job.drain(work, "etl", 4);
    EXPECT_TRUE(s);
    auto rec = work.get("etl", a);
    return rec && rec->status == record_status::dead;
  }, 15s));
  auto rec = work.get("etl", a);
  ASSERT_TRUE(rec);
  EXPECT_NE(rec->last_error.find("line 3"), std::string::npos) << rec->last_error;
  EXPECT_NE(rec->last_error.find("byte"), std::string::npos) << rec->last_error;
  auto shown = runs_->show(a);
  ASSERT_TRUE(shown);
  EXPECT_EQ(shown->first.status, "failed");
  EXPECT_EQ(shown->first.attempts, 2);
  EXPECT_TRUE(shown->second.empty());
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_ledger"), 0);
}

TEST_F(EtlOrchestratorIt, FailingStageActorIsRestartedAndTheRecordRetried) {
  const std::string a = "flights/2026/11/21/17/host-p1-00000007.json";
  put(a, tests::etl::flights_blob(blob_format::persistor_v1, 1'000, 4));
  auto work = make_work(30'000);
  std::vector<new_record> recs{{a, a, {}}};
  ASSERT_TRUE(work.enqueue("etl", recs));
  // The validate stage throws on its first blob (a bug, as far as the chain can tell).
  std::atomic<int> validates{0};
  auto job = make_job("w1", [&](std::string_view step) {
    if (step == "validate" && validates++ == 0) throw std::runtime_error("validator blew up");
    return false;
  });
  auto claimed = work.claim("etl", shards(work), "w1", 1);
  ASSERT_TRUE(claimed && claimed->size() == 1);
  auto r = job.process(work, (*claimed)[0]);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::io);
  EXPECT_NE(r.error().message.find("ETL stage validate failed"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("validator blew up"), std::string::npos) << r.error().message;
  auto rec = work.get("etl", a);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->status, record_status::pending); // a failed attempt: retried after the backoff
  EXPECT_NE(rec->last_error.find("ETL stage validate"), std::string::npos) << rec->last_error;
  auto mid = runs_->show(a);
  ASSERT_TRUE(mid);
  EXPECT_EQ(mid->first.status, "failed");
  ASSERT_EQ(mid->second.size(), 1u); // extract was recorded before validate failed
  EXPECT_EQ(mid->second[0].step, "extract");

  // The supervisor restarted the stage; the retried record resumes after extract and loads.
  std::optional<claimed_record> again;
  ASSERT_TRUE(eventually([&] {
    auto c = work.claim("etl", shards(work), "w1", 1);
    if (c && !c->empty()) again = (*c)[0];
    return again.has_value();
  }, 15s));
  auto ok = job.process(work, *again);
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_EQ(ok->load.inserted, 996u);
  EXPECT_EQ(ok->steps[0].detail, "persistor-v1 replayed");
  EXPECT_EQ(job.restarts(), 1u);
  EXPECT_FALSE(job.broken());
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 996);
  auto done = runs_->show(a);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->first.status, "completed");
  EXPECT_EQ(done->second.size(), 4u);
  rec = work.get("etl", a);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->status, record_status::done);
}

TEST_F(EtlOrchestratorIt, MissingBlobIsNotFound) {
  auto job = make_job("w1");
  auto r = job.run_blob("flights/none.json", "flights/none.json", 1, 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found);
}

TEST_F(EtlOrchestratorIt, DrainRenewsTheLeaseWhileALongBlobLoads) {
  const std::string a = "flights/2026/11/21/18/host-p1-00000009.json";
  put(a, tests::etl::flights_blob(blob_format::persistor_v1, 500, 2));
  auto work = make_work(1'500); // renewed every 500 ms
  std::vector<new_record> recs{{a, a, {}}};
  ASSERT_TRUE(work.enqueue("etl", recs));
  std::size_t stolen = 0;
  // A slow transform: three lease lengths, during which another worker tries to claim. Wall
  // clock on purpose: the requirement is a time (a load that outlasts its lease keeps it).
  auto job = make_job("w1", [&](std::string_view step) {
    if (step == "transform") {
      const auto end = std::chrono::steady_clock::now() + 4'500ms;
      while (std::chrono::steady_clock::now() < end) {
        auto c = work.claim("etl", shards(work), "thief", 1);
        if (c) stolen += c->size();
        std::this_thread::sleep_for(250ms);
      }
    }
    return false;
  });
  auto sum = job.drain(work, "etl", 4);
  ASSERT_TRUE(sum) << sum.error().describe();
  EXPECT_EQ(stolen, 0u) << "the lease expired during the load";
  EXPECT_EQ(sum->succeeded, 1u);
  EXPECT_EQ(sum->lost, 0u);
  auto rec = work.get("etl", a);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->status, record_status::done);
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 498);
}

TEST_F(EtlOrchestratorIt, DrainDoesNotLoadAfterItsLeaseWasLost) {
  const std::string a = "flights/2026/11/21/19/host-p1-00000010.json";
  put(a, tests::etl::flights_blob(blob_format::persistor_v1, 500, 2));
  auto work = make_work(1'500);
  std::vector<new_record> recs{{a, a, {}}};
  ASSERT_TRUE(work.enqueue("etl", recs));
  std::optional<claimed_record> thief;
  // During transform the record is taken away (released, then claimed by a thief): the next
  // renewal learns the lease is lost and the load must not run.
  auto job = make_job("w1", [&](std::string_view step) {
    if (step == "transform") {
      EXPECT_TRUE(work.release_owner("etl", "w1"));
      auto c = work.claim("etl", shards(work), "thief", 1);
      if (c && !c->empty()) thief = (*c)[0];
      // > 2 renewal intervals of w1's keeper; the thief keeps its own lease alive meanwhile.
      // Wall clock kept on purpose (issue 18 item 5 left open here): ending this wait as soon as
      // the keeper is refused a renewal (claim counters' lease_lost) makes drain() count the
      // record lost twice (sum.lost == 2), which the ETL owner should look at first.
      for (int i = 0; i < 4 && thief; ++i) {
        std::this_thread::sleep_for(300ms);
        EXPECT_TRUE(work.renew(*thief));
      }
    }
    return false;
  });
  auto sum = job.drain(work, "etl", 4);
  ASSERT_TRUE(sum) << sum.error().describe();
  ASSERT_TRUE(thief.has_value());
  EXPECT_EQ(sum->lost, 1u);
  EXPECT_EQ(sum->succeeded, 0u);
  EXPECT_EQ(count("SELECT count(*) FROM shoal_etl_ledger"), 0);
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 0);
  // The new owner resumes after the recorded steps and loads.
  auto job2 = make_job("thief");
  auto r = job2.process(work, *thief);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_FALSE(r->load.already_loaded);
  EXPECT_EQ(count("SELECT count(*) FROM flights"), 498);
  auto rec = work.get("etl", a);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->status, record_status::done);
}

} // namespace
} // namespace shoal::workers::etl
