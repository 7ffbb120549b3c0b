#pragma once
// Shared by the catalog integration suites (catalog_it.cpp, catalog_batch_it.cpp): record and
// schema helpers, the fixture base (a uniquely named catalog on the test Azurite, dropped after
// each test, and the consistency check every test ends with), and a transport that intercepts
// the first `$batch`.

#include "storage/catalog.hpp"
#include "storage/catalog_blobs.hpp"
#include "storage/connection_string.hpp"
#include "storage/http.hpp"
#include "storage/pipeline.hpp"

#include "tests/support/azurite.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::storage::catalog_testing {

using namespace std::chrono_literals;

inline catalog_schema four_keys() { return catalog_schema{{"dest", "date", "host", "format"}, "blob"}; }

inline catalog_fields rec(std::string blob, std::string dest, std::string date, std::string host,
                   std::string format = "ndjson", std::string count = "10") {
  return {{"blob", std::move(blob)}, {"dest", std::move(dest)},     {"date", std::move(date)},
          {"host", std::move(host)}, {"format", std::move(format)}, {"record_count", std::move(count)}};
}

inline std::vector<std::string> blobs_of(const std::vector<catalog_record>& rs) {
  std::vector<std::string> out;
  for (const auto& r : rs)
    out.push_back(r.fields.at("blob"));
  std::sort(out.begin(), out.end());
  return out;
}

class catalog_it_base : public ::testing::Test {
protected:
  void SetUp() override {
    auto s = service();
    ASSERT_TRUE(s) << s.error().describe();
    svc.emplace(*s);
    name = tests::unique_name("cat");
  }
  void TearDown() override {
    if (svc)
      (void)catalog::drop(*svc, name);
  }

  // A service client whose x-ms-date clock is shifted by `skew` (the pipeline's clock hook).
  static result<table_service_client> service(std::chrono::milliseconds skew = 0ms) {
    pipeline_options opts;
    if (skew != 0ms)
      opts.hooks.now = [skew] { return std::chrono::system_clock::now() + skew; };
    return table_service_client::from_connection_string(tests::azurite_connection_string(), opts);
  }

  // The blob-schema catalog of this test opened as writer "writer{w}" on its own service
  // client whose clock is shifted by `skew` (what each thread of a concurrency test does).
  result<catalog> open_writer(int w, std::chrono::milliseconds skew = 0ms) const {
    auto s = service(skew);
    if (!s)
      return std::unexpected(s.error());
    catalog_options o;
    o.writer_id = "writer" + std::to_string(w);
    return catalog::open(*s, name, blob_catalog::schema(), o);
  }

  catalog make(catalog_schema schema, catalog_options opts = {}) {
    auto c = catalog::create(*svc, name, std::move(schema), std::move(opts));
    EXPECT_TRUE(c) << c.error().describe();
    return std::move(*c);
  }

  static std::vector<catalog_record> by(const catalog& c, std::string key, std::string value) {
    catalog_query q;
    q.where = {{std::move(key), std::move(value)}};
    auto r = c.query(q);
    EXPECT_TRUE(r) << r.error().describe();
    return r ? *r : std::vector<catalog_record>{};
  }

  // The index holds exactly the state of replaying the WAL in sequence order: every live record
  // under every index key, nothing else; the WAL is gap-free, applied and checkpointed.
  // After a compaction (`whole_wal` false) records older than the WAL are not counted.
  static void expect_consistent(const catalog& c, bool whole_wal = true) {
    auto wal = c.wal();
    ASSERT_TRUE(wal) << wal.error().describe();
    auto cc = c.checkpoint_and_counter();
    ASSERT_TRUE(cc) << cc.error().describe();
    const auto [checkpoint, counter] = *cc;
    EXPECT_EQ(checkpoint, counter) << "checkpoint behind the counter";
    std::uint64_t expect_seq = wal->empty() ? 0 : wal->front().seq;
    std::map<std::string, std::optional<catalog_fields>> state; // RowKey → record (nullopt: deleted)
    for (const auto& e : *wal) {
      EXPECT_EQ(e.seq, expect_seq++) << "gap in the WAL";
      // At or below the checkpoint an entry is applied whatever its flag says (a writer that
      // moved the checkpoint past its own entries does not mark them).
      EXPECT_TRUE(e.applied || e.seq <= checkpoint) << "entry " << e.seq << " not applied";
      const auto rk = catalog::row_key(c.schema(), e.record);
      if (e.op == catalog_op::insert)
        state[rk] = e.record;
      else
        state[rk] = std::nullopt;
    }
    if (!wal->empty()) {
      EXPECT_EQ(wal->back().seq, counter);
    }
    std::size_t live = 0;
    for (const auto& [rk, r] : state) {
      if (!r)
        continue;
      ++live;
      for (const auto& k : c.schema().index_keys) {
        catalog_query q;
        q.where = {{k, r->at(k)}};
        q.row_key_prefix = r->at(c.schema().row_key);
        auto found = c.query(q);
        ASSERT_TRUE(found) << found.error().describe();
        bool hit = false;
        for (const auto& f : *found)
          hit = hit || f.fields == *r;
        EXPECT_TRUE(hit) << "record " << rk << " missing under " << k;
      }
    }
    auto st = c.stats();
    ASSERT_TRUE(st) << st.error().describe();
    if (whole_wal) {
      EXPECT_EQ(st->index_entities, live * c.schema().index_keys.size()) << "stray index entities";
    }
    EXPECT_EQ(st->unapplied, 0u);
  }

  std::optional<table_service_client> svc;
  std::string name;
};

// An http_transport that forwards to libcurl and, before the first `$batch` (the sequence
// transaction), runs `before_batch`; with `lose_answer` it sends that batch but reports a
// timeout, as if the answer were lost on the way back.
class intercepting_transport final : public http_transport {
public:
  std::shared_ptr<http_transport> inner;
  std::function<void()> before_batch;
  bool lose_answer = false;
  std::atomic<int> batches{0};

  result<http_response> send(const http_request& req) override {
    if (req.url.find("$batch") != std::string::npos && batches++ == 0) {
      if (before_batch)
        before_batch();
      if (lose_answer) {
        auto sent = inner->send(req);
        if (!sent)
          return sent;
        error e;
        e.code = errc::timeout;
        e.retryable = true;
        e.message = "answer lost (test)";
        return std::unexpected(e);
      }
    }
    return inner->send(req);
  }
};

inline result<table_service_client> intercepted_service(std::shared_ptr<intercepting_transport> t) {
  auto curl = make_curl_transport();
  if (!curl)
    return std::unexpected(curl.error());
  t->inner = *curl;
  auto acct = parse_connection_string(tests::azurite_connection_string());
  if (!acct)
    return std::unexpected(acct.error());
  pipeline_options opts;
  opts.retry.base_delay = std::chrono::milliseconds(1);
  auto p = pipeline::make(*acct, opts, t);
  if (!p)
    return std::unexpected(p.error());
  return table_service_client(*p);
}

// Catalog `name` (blob schema) opened through transport `t`.
inline result<catalog> open_through(const std::shared_ptr<intercepting_transport>& t, const std::string& name,
                                    catalog_options opts = {}) {
  auto s = intercepted_service(t);
  if (!s)
    return std::unexpected(s.error());
  return catalog::open(*s, name, blob_catalog::schema(), std::move(opts));
}

} // namespace shoal::storage::catalog_testing
