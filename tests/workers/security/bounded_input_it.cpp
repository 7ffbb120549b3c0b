// Bounded input end to end (issue 15 item 2), real processes against Azurite:
//  - the payload of '[' nested 200,000 deep (600 KB, the SIGSEGV) sent among normal
//    records to an ndjson persistor is rejected with the reason, to a persistor-v1 persistor is
//    stored as a string; both processes stay alive and store the other records;
//  - through the ETL with a dataset that maps JSON pointers, that record is quarantined with the
//    reason and the others are loaded;
//  - a 1 GiB blob in the ETL queue is refused with a clear error, and the ETL process's peak
//    memory stays far below the blob (it never reads the body).

#include "tests/workers/security/security_harness.hpp"
#include "workers/child_process.hpp"
#include "workers/claim/work_table.hpp"

#include "storage/table_client.hpp"

#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <fcntl.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

extern char** environ;

namespace shoal::tests::security {
namespace {

std::string deep_payload() {
  std::string s;
  for (int i = 0; i < 200'000; ++i)
    s += "[\n";
  return s + std::string(200'000, ']');
}

std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

class BoundedInput : public security_test {
protected:
  void SetUp() override {
    security_test::SetUp();
    container_ = lower(unique_name("bnd")).substr(0, 40);
    work_ = unique_name("bndwork");
    runs_ = unique_name("bndruns");
    catalog_ = unique_name("bndcat");
  }
  // The tables and container of this test only: no other test's ETL records are claimed.
  std::vector<std::pair<std::string, std::string>> tables() const {
    return {{"SHOAL_WORK_TABLE", work_},       {"SHOAL_ETL_RUNS_TABLE", runs_},
            {"SHOAL_CATALOG_TABLE", catalog_}, {"SHOAL_ETL_CONTAINER", container_},
            {"SHOAL_PERSISTOR_CONTAINER", container_}};
  }
  std::string container_, work_, runs_, catalog_;
};

// Sends normal, deep, normal records; returns the producer after every answer came.
raw_producer send_mix(const std::string& endpoint, const std::string& dest, transport::message_id& deep_id,
                      std::vector<transport::message_id>& normal_ids) {
  raw_producer p(endpoint);
  normal_ids.push_back(p.send(dest, "{\"k\":1}"));
  deep_id = p.send(dest, deep_payload());
  normal_ids.push_back(p.send(dest, "{\"k\":2}"));
  std::vector<transport::message_id> all = normal_ids;
  all.push_back(deep_id);
  p.await(all, 60s);
  return p;
}

TEST_F(BoundedInput, TheDeepPayloadIsRejectedByNdjsonAndCarriedByV1BothPersistorsLive) {
  // ndjson: rejected with the reason, the rest stored.
  const fs::path nlog = dir_ / "ndjson.log";
  auto [nd, nd_ep] = start_persistor({"--endpoint", "tcp://127.0.0.1:0", "--format", "ndjson", "--container",
                                      container_ + "n", "--no-register", "--batch-max-delay-ms", "100"},
                                     {}, nlog);
  ASSERT_FALSE(nd_ep.empty()) << slurp(nlog);
  transport::message_id deep{};
  std::vector<transport::message_id> normal;
  auto p = send_mix(nd_ep, "deep", deep, normal);
  ASSERT_TRUE(p.rejected.contains(deep)) << slurp(nlog);
  EXPECT_NE(p.rejected[deep].find("nests deeper than 128 levels"), std::string::npos) << p.rejected[deep];
  for (const auto& id : normal)
    EXPECT_TRUE(p.acked.contains(id));
  EXPECT_FALSE(nd.wait(0ms).has_value()) << "the ndjson persistor died\n" << slurp(nlog);
  const std::string nbody = stored(container_ + "n");
  EXPECT_NE(nbody.find("\"k\":1"), std::string::npos);
  EXPECT_NE(nbody.find("\"k\":2"), std::string::npos);
  EXPECT_EQ(nbody.find("[["), std::string::npos);

  // persistor-v1: stored as a string, the rest stored.
  const fs::path vlog = dir_ / "v1.log";
  auto [v1, v1_ep] = start_persistor({"--endpoint", "tcp://127.0.0.1:0", "--container", container_ + "v",
                                      "--no-register", "--batch-max-delay-ms", "100"},
                                     {}, vlog);
  ASSERT_FALSE(v1_ep.empty()) << slurp(vlog);
  transport::message_id vdeep{};
  std::vector<transport::message_id> vnormal;
  auto q = send_mix(v1_ep, "deep", vdeep, vnormal);
  EXPECT_TRUE(q.acked.contains(vdeep));
  for (const auto& id : vnormal)
    EXPECT_TRUE(q.acked.contains(id));
  EXPECT_FALSE(v1.wait(0ms).has_value()) << "the persistor-v1 persistor died\n" << slurp(vlog);
  // Both still take records.
  raw_producer after(nd_ep);
  const auto id = after.send("deep", "{\"k\":3}");
  after.await({id}, 60s);
  EXPECT_TRUE(after.acked.contains(id));
}

TEST_F(BoundedInput, TheEtlQuarantinesTheDeepRecordAndLoadsTheRest) {
  // A v1 persistor registering its blobs for the ETL, in this test's own tables.
  const fs::path plog = dir_ / "persistor.log";
  auto [pers, ep] = start_persistor({"--endpoint", "tcp://127.0.0.1:0", "--batch-max-delay-ms", "100"}, tables(), plog);
  ASSERT_FALSE(ep.empty()) << slurp(plog);
  transport::message_id deep{};
  std::vector<transport::message_id> normal;
  auto p = send_mix(ep, "deep", deep, normal);
  ASSERT_EQ(p.acked.size(), 3u) << slurp(plog);
  // A dataset that validates and maps with JSON pointers.
  fs::create_directories(dir_ / "datasets");
  std::ofstream(dir_ / "datasets" / "deep.toml")
      << "name = \"deep\"\ndest = \"deep\"\n"
         "ddl = \"CREATE TABLE IF NOT EXISTS deep_rows (message_id TEXT PRIMARY KEY, k TEXT)\"\n"
         "insert = \"INSERT INTO deep_rows (message_id, k) VALUES (?, ?)\"\n"
         "[[fields]]\ncolumn = \"message_id\"\nsource = \"$message_id\"\n"
         "[[fields]]\ncolumn = \"k\"\nsource = \"/k\"\ntype = \"json\"\n";
  const fs::path db = dir_ / "etl.db";
  const fs::path elog = dir_ / "etl.log";
  auto etl = spawn_shoal({"etl", "--sqlite", db.string(), "--datasets", (dir_ / "datasets").string(), "run", "--once"},
                         [&] {
                           auto e = storage_env();
                           auto t = tables();
                           e.insert(e.end(), t.begin(), t.end());
                           return e;
                         }(),
                         elog);
  EXPECT_EQ(wait_exit(etl, 180s), 0) << slurp(elog);
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  auto scalar = [&](const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(h, sql.c_str(), -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
  };
  EXPECT_EQ(scalar("SELECT count(*) FROM deep_rows"), "2") << slurp(elog);
  EXPECT_EQ(scalar("SELECT count(*) FROM shoal_etl_quarantine"), "1");
  EXPECT_NE(scalar("SELECT reason FROM shoal_etl_quarantine").find("nests deeper than 128"), std::string::npos);
  EXPECT_EQ(scalar("SELECT message_id FROM shoal_etl_quarantine"), transport::to_hex(deep));
  sqlite3_close(h);
}

// Runs `shoal args…` with `env` and returns its exit status and peak resident memory (bytes),
// from wait4's rusage of exactly that child.
std::pair<int, long> run_measured(const std::vector<std::string>& args,
                                  const std::vector<std::pair<std::string, std::string>>& env,
                                  const fs::path& log) {
  workers::child_options co{.argv = {shoal_binary()}, .env = env, .output = log};
  co.argv.insert(co.argv.end(), args.begin(), args.end());
  auto c = workers::child_process::spawn(co);
  if (!c)
    return {-1, 0};
  const pid_t pid = c->release(); // reaped here with wait4, for the rusage of exactly this child
  int st = 0;
  rusage ru{};
  ::wait4(pid, &st, 0, &ru);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), ru.ru_maxrss * 1024L};
}

TEST_F(BoundedInput, AOneGibibyteBlobIsRefusedWithoutReadingIt) {
  ASSERT_TRUE(blobs_->create_container_if_not_exists(container_));
  // A real 1 GiB blob at no cost: a page blob is created at its full size, all zeros, sparse.
  const std::string big = "big/2001/01/05/10/h-p-00000001.json";
  storage::storage_request req;
  req.method = storage::http_method::put;
  req.path = "/" + container_ + "/" + big;
  req.headers = {{"x-ms-blob-type", "PageBlob"}, {"x-ms-blob-content-length", std::to_string(1ull << 30)}};
  auto put = pipe_->send(storage::service::blob, req);
  ASSERT_TRUE(put) << put.error().describe();
  auto props = blobs_->get_properties(container_, big);
  ASSERT_TRUE(props) << props.error().describe();
  ASSERT_EQ(props->content_length, 1ull << 30);
  // A small valid blob: the baseline of the same process loading something.
  const std::string small = "big/2001/01/05/10/h-p-00000002.json";
  ASSERT_TRUE(blobs_->put_blob(container_, small,
                               "{\"DATA\":\"{\\\"k\\\":1}\",\"METADATA\":{\"message_id\":\"small1\"}}\n\n"));
  auto env = storage_env();
  for (auto& t : tables())
    env.push_back(t);
  const fs::path db = dir_ / "etl.db";
  const fs::path log = dir_ / "etl.log";
  auto run_one = [&](const std::string& blob) {
    auto enq = run_measured({"etl", "--sqlite", db.string(), "enqueue", blob}, env, log);
    EXPECT_EQ(enq.first, 0) << slurp(log);
    return run_measured({"etl", "--sqlite", db.string(), "run", "--once"}, env, log);
  };
  const auto [small_rc, small_rss] = run_one(small);
  EXPECT_EQ(small_rc, 0) << slurp(log);
  const auto [big_rc, big_rss] = run_one(big);
  EXPECT_NE(big_rc, 0) << slurp(log); // a failed record: `etl run --once` says so in its status
  const std::string text = slurp(log);
  EXPECT_NE(text.find("is larger than [etl] max_blob_bytes (268435456 bytes): not loaded"), std::string::npos)
      << text;
  std::printf("peak RSS of `shoal etl run --once`: %ld KiB for a 1 GiB blob (refused), %ld KiB for a tiny one\n",
              big_rss / 1024, small_rss / 1024);
  // Peak memory: within the cap (256 MiB) by far, and about what loading a tiny blob costs.
  EXPECT_LT(big_rss, 256L << 20) << "peak RSS " << big_rss;
  EXPECT_LT(big_rss, small_rss + (32L << 20)) << "peak RSS " << big_rss << " vs " << small_rss;
  // The record keeps the reason.
  auto svc = storage::table_service_client::from_connection_string(cs_);
  ASSERT_TRUE(svc);
  auto t = svc->table(work_);
  ASSERT_TRUE(t);
  auto wt = workers::work_table::make(*t, *blobs_, {});
  ASSERT_TRUE(wt);
  auto rec = wt->get("etl", big, false);
  ASSERT_TRUE(rec) << rec.error().describe();
  EXPECT_NE(rec->last_error.find("max_blob_bytes"), std::string::npos) << rec->last_error;
  (void)blobs_->delete_blob(container_, big);
}

} // namespace
} // namespace shoal::tests::security
