// table_client and table_service_client against the real Azurite (fixture `azurite`).
// Every test uses its own table.

#include "storage/table_client.hpp"

#include "tests/support/azurite.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include <unistd.h>

namespace shoal::storage {
namespace {

using namespace std::chrono_literals;

class TableClientIt : public ::testing::Test {
protected:
  void SetUp() override {
    auto svc = table_service_client::from_connection_string(tests::azurite_connection_string());
    ASSERT_TRUE(svc) << svc.error().describe();
    service.emplace(std::move(*svc));
    auto t = service->table(tests::unique_name("tblit"));
    ASSERT_TRUE(t) << t.error().describe();
    table.emplace(std::move(*t));
    auto c = table->create_table();
    ASSERT_TRUE(c) << c.error().describe();
  }
  void TearDown() override {
    if (table)
      (void)table->delete_table();
  }

  static table_entity entity(std::string pk, std::string rk) {
    table_entity e;
    e.partition_key = std::move(pk);
    e.row_key = std::move(rk);
    return e;
  }

  std::optional<table_service_client> service;
  std::optional<table_client> table;
};

TEST_F(TableClientIt, CreatesListsAndDeletesTables) {
  auto again = table->create_table();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::conflict);
  EXPECT_EQ(again.error().service_code, "TableAlreadyExists");
  auto exists = table->create_table_if_not_exists();
  ASSERT_TRUE(exists) << exists.error().describe();
  EXPECT_FALSE(*exists);

  const std::string prefix = tests::unique_name("lst");
  std::vector<std::string> names;
  for (int i = 0; i < 3; ++i) {
    names.push_back(prefix + "x" + std::to_string(i));
    auto created = service->create_table_if_not_exists(names.back());
    ASSERT_TRUE(created) << created.error().describe();
    EXPECT_TRUE(*created);
  }
  list_tables_options opts;
  opts.prefix = prefix;
  opts.page_size = 1; // forces NextTableName continuations
  auto first = service->list_tables_page(opts);
  ASSERT_TRUE(first) << first.error().describe();
  EXPECT_EQ(first->names.size(), 1u);
  EXPECT_TRUE(first->next_table_name);
  auto listed = service->list_tables(opts);
  ASSERT_TRUE(listed) << listed.error().describe();
  EXPECT_EQ(*listed, names);
  auto all = service->list_tables();
  ASSERT_TRUE(all) << all.error().describe();
  EXPECT_NE(std::find(all->begin(), all->end(), table->name()), all->end());

  for (const auto& n : names) {
    auto d = service->delete_table(n);
    ASSERT_TRUE(d) << d.error().describe();
  }
  auto gone = service->delete_table(names[0]);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
  listed = service->list_tables(opts);
  ASSERT_TRUE(listed) << listed.error().describe();
  EXPECT_TRUE(listed->empty());
  EXPECT_FALSE(service->create_table("tables"));
}

TEST_F(TableClientIt, InsertThenGetRoundTripsEveryTypeExactly) {
  table_entity e = entity("p", "types");
  std::string bytes;
  for (int i = 0; i < 256; ++i)
    bytes += static_cast<char>(i);
  e.set("s", std::string("O'Brien \"q\" \xE2\x82\xAC \xF0\x9F\x98\x80"))
      .set("i32", std::int32_t{-2147483647 - 1})
      .set("i64", std::numeric_limits<std::int64_t>::max())
      .set("i64small", std::int64_t{3})
      .set("d", 0.1)
      .set("dwhole", 2.0)
      .set("dtiny", 5e-324)
      .set("nan", std::numeric_limits<double>::quiet_NaN())
      .set("inf", std::numeric_limits<double>::infinity())
      .set("ninf", -std::numeric_limits<double>::infinity())
      .set("yes", true)
      .set("when", table_time(table_time::duration(17'000'000'001'234'567)))
      .set("g", *table_guid::parse("c9da6455-213d-42c9-9a79-3e9149a57833"))
      .set("bin", table_binary{bytes});
  auto w = table->insert(e);
  ASSERT_TRUE(w) << w.error().describe();
  EXPECT_TRUE(w->etag.starts_with("W/\"datetime'")) << w->etag;
  EXPECT_LT(std::chrono::abs(w->server_time - std::chrono::system_clock::now()), 10min);

  auto got = table->get_with_server_time("p", "types");
  ASSERT_TRUE(got) << got.error().describe();
  const table_entity& back = got->first;
  EXPECT_EQ(back.etag, w->etag); // byte-for-byte
  ASSERT_TRUE(back.timestamp);
  EXPECT_TRUE(same_content(back, e));
  for (const auto& [name, value] : e.properties) {
    const table_value* v = back.find(name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_EQ(type_of(*v), type_of(value)) << name;
    EXPECT_TRUE(same_value(*v, value)) << name;
  }

  auto some = table->get("p", "types", {"i64", "yes"});
  ASSERT_TRUE(some) << some.error().describe();
  EXPECT_EQ(some->properties.size(), 2u);
}

TEST_F(TableClientIt, DuplicateInsertIs409AndMissingEntityIs404) {
  ASSERT_TRUE(table->insert(entity("p", "r")));
  auto dup = table->insert(entity("p", "r"));
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, errc::conflict);
  EXPECT_EQ(dup.error().http_status, 409);
  EXPECT_EQ(dup.error().service_code, "EntityAlreadyExists");
  auto missing = table->get("p", "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
  auto no_table = service->table("nosuchtable" + std::to_string(::getpid()));
  ASSERT_TRUE(no_table);
  auto r = no_table->insert(entity("p", "r"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found);
}

TEST_F(TableClientIt, ConditionalUpdateAndMergeHonourEtags) {
  table_entity e = entity("p", "r");
  e.set("status", std::string("pending")).set("attempts", 0);
  auto w1 = table->insert(e);
  ASSERT_TRUE(w1) << w1.error().describe();

  table_entity patch = entity("p", "r");
  patch.set("status", std::string("claimed")).set("owner", std::string("w1"));
  auto m = table->merge(patch, w1->etag);
  ASSERT_TRUE(m) << m.error().describe();
  EXPECT_NE(m->etag, w1->etag);

  auto stale = table->merge(patch, w1->etag); // the ETag moved on
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::precondition_failed);
  EXPECT_EQ(stale.error().http_status, 412);
  auto stale_update = table->update(patch, w1->etag);
  ASSERT_FALSE(stale_update);
  EXPECT_EQ(stale_update.error().code, errc::precondition_failed);

  auto merged = table->get("p", "r");
  ASSERT_TRUE(merged) << merged.error().describe();
  EXPECT_EQ(*merged->get<std::string>("status"), "claimed");
  EXPECT_EQ(*merged->get<std::int32_t>("attempts"), 0); // MERGE keeps other properties
  EXPECT_EQ(merged->etag, m->etag);

  table_entity replacement = entity("p", "r");
  replacement.set("status", std::string("done"));
  auto u = table->update(replacement, m->etag);
  ASSERT_TRUE(u) << u.error().describe();
  auto replaced = table->get("p", "r");
  ASSERT_TRUE(replaced);
  EXPECT_EQ(replaced->properties.size(), 1u); // PUT replaces the whole entity
  EXPECT_TRUE(table->merge(patch, "*"));
  EXPECT_TRUE(table->update(replacement, "*"));

  auto missing = table->merge(entity("p", "missing"), "*");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
}

TEST_F(TableClientIt, UpsertsCreateAndModify) {
  table_entity e = entity("p", "u");
  e.set("a", 1);
  auto r1 = table->insert_or_replace(e);
  ASSERT_TRUE(r1) << r1.error().describe();
  table_entity b = entity("p", "u");
  b.set("b", 2);
  auto r2 = table->insert_or_merge(b);
  ASSERT_TRUE(r2) << r2.error().describe();
  EXPECT_NE(r1->etag, r2->etag);
  auto got = table->get("p", "u");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->properties.size(), 2u);
  ASSERT_TRUE(table->insert_or_replace(b));
  got = table->get("p", "u");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->properties.size(), 1u);
  table_entity fresh = entity("p", "merge-created");
  fresh.set("x", true);
  ASSERT_TRUE(table->insert_or_merge(fresh));
  EXPECT_TRUE(table->get("p", "merge-created"));
}

TEST_F(TableClientIt, DeleteHonoursIfMatch) {
  auto w = table->insert(entity("p", "d"));
  ASSERT_TRUE(w) << w.error().describe();
  auto m = table->merge(entity("p", "d").set("x", 1), "*");
  ASSERT_TRUE(m);
  auto stale = table->delete_entity("p", "d", w->etag);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::precondition_failed);
  auto ok = table->delete_entity("p", "d", m->etag);
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_GT(ok->server_time.time_since_epoch().count(), 0);
  auto gone = table->delete_entity("p", "d");
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
}

TEST_F(TableClientIt, KeysWithQuotesSpacesAndUnicodeWork) {
  for (std::string rk : {std::string("it's"), std::string("a b%20c"), std::string("\xC3\xA9\xF0\x9F\x98\x80"),
                         std::string("''"), std::string("x=y&z+1"), std::string(512, 'k')}) {
    table_entity e = entity("pk 'quoted'", rk);
    e.set("rk", rk);
    auto w = table->insert(e);
    ASSERT_TRUE(w) << rk << ": " << w.error().describe();
    auto got = table->get("pk 'quoted'", rk);
    ASSERT_TRUE(got) << rk << ": " << got.error().describe();
    EXPECT_EQ(got->row_key, rk);
    auto q = table->query_all({.filter = table_filter::eq("RowKey", rk)});
    ASSERT_TRUE(q) << q.error().describe();
    EXPECT_EQ(q->size(), 1u) << rk;
    ASSERT_TRUE(table->delete_entity("pk 'quoted'", rk, w->etag));
  }
  auto too_long = table->insert(entity("p", std::string(513, 'k')));
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().code, errc::invalid_argument);
}

TEST_F(TableClientIt, QueriesTwoThousandFiveHundredEntitiesAcrossContinuations) {
  for (int b = 0; b < 25; ++b) {
    table_transaction tx;
    for (int i = 0; i < 100; ++i) {
      int n = b * 100 + i;
      char rk[16];
      std::snprintf(rk, sizeof rk, "r%05d", n);
      tx.insert(entity("bulk", rk).set("n", n).set("even", n % 2 == 0));
    }
    auto r = table->submit_transaction(tx);
    ASSERT_TRUE(r) << r.error().describe();
    ASSERT_EQ(r->etags.size(), 100u);
  }
  ASSERT_TRUE(table->insert(entity("other", "x")));

  auto all = table->query_all({.filter = table_filter::partition("bulk")});
  ASSERT_TRUE(all) << all.error().describe();
  ASSERT_EQ(all->size(), 2500u);
  for (std::size_t i = 0; i < all->size(); ++i)
    ASSERT_EQ(*(*all)[i].get<std::int32_t>("n"), static_cast<std::int32_t>(i));
  EXPECT_FALSE((*all)[0].etag.empty());

  auto pager = table->query({.filter = table_filter::partition("bulk"), .page_size = 1000});
  int pages = 0;
  std::size_t seen = 0;
  for (;;) {
    auto p = pager.next();
    ASSERT_TRUE(p) << p.error().describe();
    if (!*p)
      break;
    ++pages;
    seen += (*p)->entities.size();
    EXPECT_LE((*p)->entities.size(), 1000u);
  }
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(seen, 2500u);

  auto evens = table->query_all({.filter = table_filter::partition("bulk") && table_filter::eq("even", true) &&
                                           table_filter::ge("n", 1000),
                                 .select = {"n"},
                                 .page_size = 300});
  ASSERT_TRUE(evens) << evens.error().describe();
  EXPECT_EQ(evens->size(), 750u);
  EXPECT_EQ((*evens)[0].properties.size(), 1u);

  auto limited = table->query_all({.page_size = 7, .max_entities = 20});
  ASSERT_TRUE(limited) << limited.error().describe();
  EXPECT_EQ(limited->size(), 20u);

  std::size_t counted = 0;
  auto each = table->for_each({.filter = table_filter::starts_with("RowKey", "r000")}, [&](const table_entity&) {
    ++counted;
    return true;
  });
  ASSERT_TRUE(each) << each.error().describe();
  EXPECT_EQ(counted, 100u);
}

TEST_F(TableClientIt, FiltersOnEveryLiteralType) {
  table_entity e = entity("p", "typed");
  auto t = table_time(table_time::duration(17'000'000'001'234'567));
  auto g = *table_guid::parse("c9da6455-213d-42c9-9a79-3e9149a57833");
  e.set("i64", std::int64_t{1} << 40).set("d", 1.5).set("t", t).set("g", g).set("s", std::string("O'Brien"))
      .set("bin", table_binary{"\x01\x02"});
  ASSERT_TRUE(table->insert(e));
  ASSERT_TRUE(table->insert(entity("p", "plain").set("s", std::string("x"))));
  for (const table_filter& f :
       {table_filter::eq("i64", std::int64_t{1} << 40), table_filter::gt("d", 1.25), table_filter::eq("t", t),
        table_filter::eq("g", g), table_filter::eq("s", "O'Brien"), table_filter::eq("bin", table_binary{"\x01\x02"})}) {
    auto r = table->query_all({.filter = f});
    ASSERT_TRUE(r) << f.str() << ": " << r.error().describe();
    ASSERT_EQ(r->size(), 1u) << f.str();
    EXPECT_EQ((*r)[0].row_key, "typed");
  }
  table_filter many;
  for (int i = 0; i < 16; ++i)
    many = many || table_filter::eq("n", i);
  auto refused = table->query_all({.filter = many});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::invalid_argument);
}

TEST_F(TableClientIt, TransactionAppliesEveryOperationAndReturnsEtags) {
  auto existing = table->insert(entity("t", "existing").set("v", 1));
  ASSERT_TRUE(existing);
  ASSERT_TRUE(table->insert(entity("t", "to-delete")));
  ASSERT_TRUE(table->insert(entity("t", "to-replace").set("old", true)));
  table_transaction tx;
  tx.insert(entity("t", "new").set("v", 1))
      .merge(entity("t", "existing").set("w", 2), existing->etag)
      .delete_entity("t", "to-delete")
      .update(entity("t", "to-replace").set("new", true))
      .insert_or_replace(entity("t", "upsert1"))
      .insert_or_merge(entity("t", "upsert2").set("m", 3));
  auto r = table->submit_transaction(tx);
  ASSERT_TRUE(r) << r.error().describe();
  ASSERT_EQ(r->etags.size(), 6u);
  EXPECT_TRUE(r->etags[2].empty() || r->etags[2].starts_with("W/")); // delete has no ETag on Azure
  EXPECT_GT(r->server_time.time_since_epoch().count(), 0);
  auto merged = table->get("t", "existing");
  ASSERT_TRUE(merged);
  EXPECT_EQ(merged->etag, r->etags[1]);
  EXPECT_EQ(merged->properties.size(), 2u);
  EXPECT_EQ(table->get("t", "to-delete").error().code, errc::not_found);
  auto replaced = table->get("t", "to-replace");
  ASSERT_TRUE(replaced);
  EXPECT_EQ(replaced->find("old"), nullptr);
  EXPECT_EQ(table->get("t", "new")->etag, r->etags[0]);
}

TEST_F(TableClientIt, FailingTransactionReportsTheIndexAndCommitsNothing) {
  auto existing = table->insert(entity("t", "c"));
  ASSERT_TRUE(existing);
  table_transaction tx;
  tx.insert(entity("t", "a")).insert(entity("t", "b")).insert(entity("t", "c")).insert(entity("t", "d"));
  auto r = table->submit_transaction(tx);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::conflict);
  EXPECT_EQ(r.error().service_code, "EntityAlreadyExists");
  EXPECT_EQ(r.error().failed_index, 2u);
  for (const char* rk : {"a", "b", "d"})
    EXPECT_EQ(table->get("t", rk).error().code, errc::not_found) << rk;

  table_transaction stale;
  auto m = table->merge(entity("t", "c").set("x", 1), "*");
  ASSERT_TRUE(m);
  stale.insert(entity("t", "e")).merge(entity("t", "c").set("y", 2), existing->etag);
  r = table->submit_transaction(stale);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed);
  EXPECT_EQ(r.error().failed_index, 1u);
  EXPECT_EQ(table->get("t", "e").error().code, errc::not_found);
}

TEST_F(TableClientIt, MixedPartitionTransactionIsRefusedClientSide) {
  table_transaction tx;
  tx.insert(entity("p1", "a")).insert(entity("p2", "b"));
  auto r = table->submit_transaction(tx);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_EQ(r.error().failed_index, 1u);
  auto left = table->query_all({});
  ASSERT_TRUE(left) << left.error().describe();
  EXPECT_TRUE(left->empty()); // Azurite would have committed it (Azurite#1215)

  table_transaction big;
  for (int i = 0; i < 101; ++i)
    big.insert(entity("p", "r" + std::to_string(i)));
  r = table->submit_transaction(big);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
}

// Delivers every request to Azurite but loses the answer of the first `lose` of them (reported as
// a retryable timeout), as when a response is cut off after the service committed the write.
class lossy_transport final : public http_transport {
public:
  lossy_transport(std::shared_ptr<http_transport> inner, int lose) : inner_(std::move(inner)), lose_(lose) {}
  result<http_response> send(const http_request& req) override {
    auto r = inner_->send(req);
    if (lose_-- > 0)
      return std::unexpected(error{errc::timeout, 0, {}, {}, true, 1, "answer lost (test)"});
    return r;
  }
  void lose(int n) { lose_ = n; }

private:
  std::shared_ptr<http_transport> inner_;
  int lose_;
};

TEST_F(TableClientIt, RetriedWritesWhoseFirstAttemptLandedSucceed) {
  auto curl = make_curl_transport();
  ASSERT_TRUE(curl) << curl.error().describe();
  auto lossy = std::make_shared<lossy_transport>(*curl, 0);
  auto account = parse_connection_string(tests::azurite_connection_string());
  ASSERT_TRUE(account);
  pipeline_options opts;
  opts.hooks.sleep = [](std::chrono::milliseconds) {};
  auto p = pipeline::make(*account, opts, lossy);
  ASSERT_TRUE(p) << p.error().describe();
  auto t = table_client::make(*p, table->name());
  ASSERT_TRUE(t);

  table_entity e = entity("p", "retried");
  e.set("status", std::string("pending"));
  lossy->lose(1); // the insert lands, its 201 is lost, the retry gets 409 EntityAlreadyExists
  auto w = t->insert(e);
  ASSERT_TRUE(w) << w.error().describe();
  auto stored = table->get("p", "retried");
  ASSERT_TRUE(stored);
  EXPECT_EQ(w->etag, stored->etag);

  table_entity patch = entity("p", "retried");
  patch.set("status", std::string("claimed"));
  lossy->lose(1); // the merge lands, the retry's If-Match is stale: 412, resolved by reading back
  auto m = t->merge(patch, w->etag);
  ASSERT_TRUE(m) << m.error().describe();
  stored = table->get("p", "retried");
  ASSERT_TRUE(stored);
  EXPECT_EQ(m->etag, stored->etag);
  EXPECT_EQ(*stored->get<std::string>("status"), "claimed");

  lossy->lose(1); // the delete lands, the retry gets 404
  auto d = t->delete_entity("p", "retried", m->etag);
  ASSERT_TRUE(d) << d.error().describe();
  EXPECT_EQ(table->get("p", "retried").error().code, errc::not_found);

  // Someone else's entity is not mistaken for ours.
  ASSERT_TRUE(table->insert(entity("p", "theirs").set("owner", std::string("w2"))));
  lossy->lose(1);
  auto dup = t->insert(entity("p", "theirs").set("owner", std::string("w1")));
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, errc::conflict);
}

} // namespace
} // namespace shoal::storage
