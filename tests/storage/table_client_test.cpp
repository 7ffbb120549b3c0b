// table_client over a scripted fake transport: request shapes, retried-write resolution
// (issue 2 item 9), continuation handling and client-side transaction checks. No network.

#include "storage/table_client.hpp"

#include "storage/encoding.hpp"
#include "tests/support/fake_transport.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace shoal::storage {
namespace {

using tests::fake_transport;
using header_list = std::vector<std::pair<std::string, std::string>>;

const std::string date_text = "Sat, 21 Nov 2026 12:00:00 GMT";
const std::string etag1 = "W/\"datetime'2026-11-21T12%3A00%3A00.0000001Z'\"";
const std::string etag2 = "W/\"datetime'2026-11-21T12%3A00%3A01.0000002Z'\"";

class TableClientTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto account = parse_connection_string("UseDevelopmentStorage=true");
    ASSERT_TRUE(account) << account.error().describe();
    pipeline_options opts;
    opts.hooks.sleep = [](std::chrono::milliseconds) {}; // no sleeps in unit tests
    opts.hooks.random_unit = [] { return 0.5; };
    auto p = pipeline::make(*account, opts, fake);
    ASSERT_TRUE(p) << p.error().describe();
    auto c = table_client::make(*p, "work");
    ASSERT_TRUE(c) << c.error().describe();
    client.emplace(std::move(*c));
  }

  static table_entity sample() {
    table_entity e;
    e.partition_key = "q-00";
    e.row_key = "rec1";
    e.set("status", std::string("pending")).set("attempts", 0);
    return e;
  }

  static header_list with_etag(const std::string& etag) { return {{"date", date_text}, {"etag", etag}}; }

  std::shared_ptr<fake_transport> fake = std::make_shared<fake_transport>();
  std::optional<table_client> client;
};

TEST_F(TableClientTest, InsertSendsJsonAndReturnsEtagAndServerTime) {
  fake->respond(204, with_etag(etag1));
  auto r = client->insert(sample());
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->etag, etag1);
  EXPECT_EQ(r->server_time, *parse_http_date(date_text));
  auto reqs = fake->requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, http_method::post);
  EXPECT_EQ(reqs[0].url, "http://127.0.0.1:10002/devstoreaccount1/work");
  auto has = [&](std::string_view k, std::string_view v) {
    for (const auto& [hk, hv] : reqs[0].headers)
      if (hk == k && hv == v)
        return true;
    return false;
  };
  EXPECT_TRUE(has("Accept", "application/json;odata=minimalmetadata"));
  EXPECT_TRUE(has("Content-Type", "application/json"));
  EXPECT_TRUE(has("Prefer", "return-no-content"));
  EXPECT_NE(reqs[0].body.find("\"status\":\"pending\""), std::string::npos);
}

TEST_F(TableClientTest, ValidationFailsBeforeAnythingIsSent) {
  table_entity e = sample();
  e.row_key = "a/b";
  auto r = client->insert(e);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_FALSE(client->update(sample(), ""));
  EXPECT_FALSE(client->delete_entity("p", "r", ""));
  EXPECT_FALSE(client->get("p#", "r"));
  table_query q;
  q.page_size = 1001;
  EXPECT_FALSE(client->query_page(q));
  EXPECT_FALSE(table_client::make(client->transport(), "bad-name"));
  EXPECT_EQ(fake->request_count(), 0u);
}

TEST_F(TableClientTest, FirstAttemptConflictIsReportedWithoutARead) {
  fake->respond(409, {{"x-ms-error-code", "EntityAlreadyExists"}});
  auto r = client->insert(sample());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::conflict);
  EXPECT_EQ(fake->request_count(), 1u);
}

TEST_F(TableClientTest, RetriedInsertConflictWithIdenticalEntityIsSuccess) {
  table_entity e = sample();
  fake->fail_timeout();                                               // attempt 1: landed, answer lost
  fake->respond(409, {{"x-ms-error-code", "EntityAlreadyExists"}});   // attempt 2
  fake->respond(200, with_etag(etag1), entity_to_json(e));           // read-back
  auto r = client->insert(e);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->etag, etag1);
  EXPECT_EQ(r->server_time, *parse_http_date(date_text));
  auto reqs = fake->requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[2].method, http_method::get);
  EXPECT_EQ(reqs[2].url, "http://127.0.0.1:10002/devstoreaccount1/work(PartitionKey='q-00',RowKey='rec1')");
}

TEST_F(TableClientTest, RetriedInsertConflictWithDifferentEntityIsAConflictThatSaysSo) {
  table_entity other = sample();
  other.set("owner", std::string("someone-else"));
  fake->fail_timeout();
  fake->respond(409, {{"x-ms-error-code", "EntityAlreadyExists"}});
  fake->respond(200, with_etag(etag1), entity_to_json(other));
  auto r = client->insert(sample());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::conflict);
  EXPECT_EQ(r.error().attempts, 2);
  EXPECT_NE(r.error().message.find("differs"), std::string::npos) << r.error().message;
}

TEST_F(TableClientTest, RetriedMerge412IsSuccessWhenTheStoredEntityHoldsOurPatch) {
  table_entity patch;
  patch.partition_key = "q-00";
  patch.row_key = "rec1";
  patch.set("status", std::string("claimed")).set("gen", std::int64_t{7});
  table_entity stored = sample();
  stored.set("status", std::string("claimed")).set("gen", std::int64_t{7});
  fake->fail_connection_reset();
  fake->respond(412, {{"x-ms-error-code", "UpdateConditionNotSatisfied"}});
  fake->respond(200, with_etag(etag2), entity_to_json(stored));
  auto r = client->merge(patch, etag1);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->etag, etag2);
  auto reqs = fake->requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].method, http_method::merge);
  bool if_match = false;
  for (const auto& [k, v] : reqs[1].headers)
    if_match |= k == "If-Match" && v == etag1;
  EXPECT_TRUE(if_match);
}

TEST_F(TableClientTest, RetriedUpdate412IsAConflictWhenSomeoneElseWrote) {
  table_entity stored = sample();
  stored.set("owner", std::string("w2"));
  fake->fail_timeout();
  fake->respond(412, {{"x-ms-error-code", "UpdateConditionNotSatisfied"}});
  fake->respond(200, with_etag(etag2), entity_to_json(stored));
  auto r = client->update(sample(), etag1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed);
  EXPECT_NE(r.error().message.find("does not hold"), std::string::npos) << r.error().message;
}

TEST_F(TableClientTest, FirstAttempt412IsReportedWithoutARead) {
  fake->respond(412, {{"x-ms-error-code", "UpdateConditionNotSatisfied"}});
  auto r = client->merge(sample(), etag1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed);
  EXPECT_EQ(fake->request_count(), 1u);
}

TEST_F(TableClientTest, RetriedDelete404IsSuccess) {
  fake->fail_timeout();
  fake->respond(404, {{"x-ms-error-code", "ResourceNotFound"}});
  auto r = client->delete_entity("q-00", "rec1", etag1);
  ASSERT_TRUE(r) << r.error().describe();
  fake->respond(404, {{"x-ms-error-code", "ResourceNotFound"}});
  auto again = client->delete_entity("q-00", "rec1", etag1);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::not_found);
}

TEST_F(TableClientTest, QueryFollowsContinuationsThroughEmptyPages) {
  auto page = [](std::vector<std::string> rks) {
    std::string body = R"({"value":[)";
    for (std::size_t i = 0; i < rks.size(); ++i) {
      table_entity e;
      e.partition_key = "p";
      e.row_key = rks[i];
      body += (i ? "," : "") + entity_to_json(e);
    }
    return body + "]}";
  };
  fake->respond(200, {{"date", date_text}, {"x-ms-continuation-nextpartitionkey", "cA=="},
                      {"x-ms-continuation-nextrowkey", "Yg=="}}, page({"a"}));
  fake->respond(200, {{"date", date_text}, {"x-ms-continuation-nextpartitionkey", "cQ=="}}, page({}));
  fake->respond(200, {{"date", date_text}}, page({"b", "c"}));
  table_query q;
  q.filter = table_filter::eq("status", "pending");
  q.select = {"status"};
  auto all = client->query_all(q);
  ASSERT_TRUE(all) << all.error().describe();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[2].row_key, "c");
  auto reqs = fake->requests();
  ASSERT_EQ(reqs.size(), 3u);
  // ('$' may or may not be percent-encoded in the parameter names: both are valid.)
  EXPECT_TRUE(reqs[0].url.starts_with("http://127.0.0.1:10002/devstoreaccount1/work()?")) << reqs[0].url;
  EXPECT_NE(reqs[0].url.find("filter=status%20eq%20%27pending%27&"), std::string::npos) << reqs[0].url;
  EXPECT_NE(reqs[0].url.find("select=status&"), std::string::npos) << reqs[0].url;
  EXPECT_NE(reqs[0].url.find("top=1000"), std::string::npos) << reqs[0].url;
  EXPECT_NE(reqs[1].url.find("&NextPartitionKey=cA%3D%3D&NextRowKey=Yg%3D%3D"), std::string::npos) << reqs[1].url;
  EXPECT_NE(reqs[2].url.find("&NextPartitionKey=cQ%3D%3D"), std::string::npos) << reqs[2].url;
  EXPECT_EQ(reqs[2].url.find("NextRowKey"), std::string::npos);
}

TEST_F(TableClientTest, PagerStopsAtMaxEntitiesAndShrinksTop) {
  fake->respond(200, {{"date", date_text}, {"x-ms-continuation-nextpartitionkey", "cA=="}},
                R"({"value":[{"PartitionKey":"p","RowKey":"a"},{"PartitionKey":"p","RowKey":"b"}]})");
  fake->respond(200, {{"date", date_text}, {"x-ms-continuation-nextpartitionkey", "cQ=="}},
                R"({"value":[{"PartitionKey":"p","RowKey":"c"}]})");
  table_query q;
  q.page_size = 2;
  q.max_entities = 3;
  auto pager = client->query(q);
  auto p1 = pager.next();
  ASSERT_TRUE(p1 && *p1);
  EXPECT_EQ((*p1)->entities.size(), 2u);
  auto p2 = pager.next();
  ASSERT_TRUE(p2 && *p2);
  auto p3 = pager.next();
  ASSERT_TRUE(p3);
  EXPECT_FALSE(*p3);
  EXPECT_TRUE(pager.done());
  auto reqs = fake->requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_NE(reqs[1].url.find("top=1&"), std::string::npos) << reqs[1].url;
}

TEST_F(TableClientTest, TransactionRefusesMixedPartitionsDuplicatesAndOversizeClientSide) {
  table_transaction tx;
  table_entity e = sample();
  tx.insert(e);
  e.partition_key = "q-01";
  e.row_key = "rec2";
  tx.insert(e);
  auto r = client->submit_transaction(tx);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_EQ(r.error().failed_index, 1u);
  EXPECT_NE(r.error().message.find("PartitionKey"), std::string::npos) << r.error().describe();

  table_transaction dup;
  dup.insert(sample()).merge(sample());
  r = client->submit_transaction(dup);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().failed_index, 1u);
  EXPECT_NE(r.error().message.find("twice"), std::string::npos);

  table_transaction many;
  for (int i = 0; i < 101; ++i) {
    table_entity x = sample();
    x.row_key = "r" + std::to_string(i);
    many.insert(x);
  }
  r = client->submit_transaction(many);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);

  EXPECT_EQ(client->submit_transaction(table_transaction{}).error().code, errc::invalid_argument);

  table_transaction huge; // 9 entities of ~0.5 MiB JSON each: valid one by one, > 4 MiB together
  for (int i = 0; i < 9; ++i) {
    table_entity x = sample();
    x.row_key = "h" + std::to_string(i);
    for (int j = 0; j < 15; ++j)
      x.set("s" + std::to_string(j), std::string(32 * 1024, 'x'));
    huge.insert(x);
  }
  r = client->submit_transaction(huge);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::limit_exceeded);
  EXPECT_NE(r.error().message.find("4 MiB"), std::string::npos) << r.error().message;
  EXPECT_EQ(fake->request_count(), 0u);
}

TEST_F(TableClientTest, TransactionFailureCarriesTheFailingIndex) {
  const std::string body =
      "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n"
      "--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
      "HTTP/1.1 412 Precondition Failed\r\nContent-ID: 2\r\nContent-Type: application/json\r\n\r\n"
      R"({"odata.error":{"code":"UpdateConditionNotSatisfied","message":{"lang":"en-US","value":"1:The update condition specified in the request was not satisfied.\nRequestId:x"}}})"
      "\r\n--changesetresponse_2--\r\n--batchresponse_1--\r\n";
  fake->respond(202, {{"date", date_text}, {"content-type", "multipart/mixed; boundary=batchresponse_1"}}, body);
  table_transaction tx;
  table_entity a = sample(), b = sample();
  b.row_key = "rec2";
  tx.merge(a, etag1).merge(b, etag1);
  auto r = client->submit_transaction(tx);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed);
  EXPECT_EQ(r.error().http_status, 412);
  EXPECT_EQ(r.error().service_code, "UpdateConditionNotSatisfied");
  EXPECT_EQ(r.error().failed_index, 1u);
  EXPECT_NE(r.error().message.find("operation 1 (merge rec2)"), std::string::npos) << r.error().message;
  auto reqs = fake->requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].url, "http://127.0.0.1:10002/devstoreaccount1/$batch");
}

// A batch answer whose changeset failed at `index` (0-based) with `status` / `code`, as Azurite
// and Azure send it: 202 outside, one failing part inside, the index as the message prefix.
std::string failed_batch_body(int status, const std::string& reason, const std::string& code, std::size_t index) {
  return "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n"
         "--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
         "HTTP/1.1 " + std::to_string(status) + " " + reason +
         "\r\nContent-ID: " + std::to_string(index + 1) + "\r\nContent-Type: application/json\r\n\r\n"
         R"({"odata.error":{"code":")" + code + R"(","message":{"lang":"en-US","value":")" + std::to_string(index) +
         ":failed.\\nRequestId:x\"}}}"
         "\r\n--changesetresponse_2--\r\n--batchresponse_1--\r\n";
}

const header_list batch_headers = {{"date", date_text}, {"content-type", "multipart/mixed; boundary=batchresponse_1"}};

TEST_F(TableClientTest, RetriedTransactionRejectedByItsOwnEarlierAttemptIsSuccess) {
  // Attempt 1 commits but its answer is lost; attempt 2 collides with it (409 on operation 0).
  table_entity a = sample(), b = sample();
  b.row_key = "rec2";
  fake->fail_timeout();
  fake->respond(202, batch_headers, failed_batch_body(409, "Conflict", "EntityAlreadyExists", 0));
  fake->respond(200, with_etag(etag1), entity_to_json(a)); // read-back of a
  fake->respond(200, with_etag(etag2), entity_to_json(b)); // read-back of b
  table_transaction tx;
  tx.insert(a).insert(b);
  auto r = client->submit_transaction(tx);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->etags, (std::vector<std::string>{etag1, etag2}));
  EXPECT_EQ(r->server_time, *parse_http_date(date_text));
  auto reqs = fake->requests();
  ASSERT_EQ(reqs.size(), 4u);
  EXPECT_EQ(reqs[2].method, http_method::get);
  EXPECT_EQ(reqs[2].url, "http://127.0.0.1:10002/devstoreaccount1/work(PartitionKey='q-00',RowKey='rec1')");
  EXPECT_EQ(reqs[3].url, "http://127.0.0.1:10002/devstoreaccount1/work(PartitionKey='q-00',RowKey='rec2')");
}

TEST_F(TableClientTest, RetriedTransactionOfMergesAndDeletesResolvesEachKind) {
  table_entity patch;
  patch.partition_key = "q-00";
  patch.row_key = "rec1";
  patch.set("status", std::string("claimed"));
  table_entity stored = sample();
  stored.set("status", std::string("claimed"));
  fake->fail_connection_reset();
  fake->respond(202, batch_headers, failed_batch_body(412, "Precondition Failed", "UpdateConditionNotSatisfied", 0));
  fake->respond(200, with_etag(etag2), entity_to_json(stored)); // the merge is in
  fake->respond(404, {{"x-ms-error-code", "ResourceNotFound"}}); // the delete is done
  table_transaction tx;
  tx.merge(patch, etag1).delete_entity("q-00", "rec2", etag1);
  auto r = client->submit_transaction(tx);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->etags, (std::vector<std::string>{etag2, ""}));
}

TEST_F(TableClientTest, RetriedTransactionConflictWithSomeoneElsesEntityStaysAConflict) {
  table_entity a = sample(), b = sample();
  b.row_key = "rec2";
  table_entity other = b;
  other.set("owner", std::string("someone-else"));
  fake->fail_timeout();
  fake->respond(202, batch_headers, failed_batch_body(409, "Conflict", "EntityAlreadyExists", 1));
  fake->respond(404, {{"x-ms-error-code", "ResourceNotFound"}}); // a is not there: nothing committed
  table_transaction tx;
  tx.insert(a).insert(b);
  auto r = client->submit_transaction(tx);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::conflict);
  EXPECT_EQ(r.error().service_code, "EntityAlreadyExists");
  EXPECT_EQ(r.error().failed_index, 1u);
  EXPECT_EQ(r.error().attempts, 2);
  EXPECT_NE(r.error().message.find("does not exist"), std::string::npos) << r.error().message;
  EXPECT_EQ(fake->request_count(), 3u);

  // Both present, but b holds someone else's content.
  fake->fail_timeout();
  fake->respond(202, batch_headers, failed_batch_body(409, "Conflict", "EntityAlreadyExists", 1));
  fake->respond(200, with_etag(etag1), entity_to_json(a));
  fake->respond(200, with_etag(etag2), entity_to_json(other));
  auto again = client->submit_transaction(tx);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::conflict);
  EXPECT_EQ(again.error().attempts, 2);
  EXPECT_NE(again.error().message.find("does not hold"), std::string::npos) << again.error().message;
}

TEST_F(TableClientTest, FirstAttemptTransactionConflictIsReportedWithoutReads) {
  fake->respond(202, batch_headers, failed_batch_body(409, "Conflict", "EntityAlreadyExists", 0));
  table_transaction tx;
  tx.insert(sample());
  auto r = client->submit_transaction(tx);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::conflict);
  EXPECT_EQ(r.error().attempts, 1);
  EXPECT_EQ(fake->request_count(), 1u);
}

} // namespace
} // namespace shoal::storage
