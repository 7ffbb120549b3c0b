// blob_client against the real Azurite (fixture `azurite`): every operation, its errors, and
// the retry-after-landing cases of reference §8.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/encoding.hpp"
#include "storage/http.hpp"

#include "tests/support/azurite.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace shoal::storage {
namespace {

// Deterministic bytes of length n (no randomness in tests).
std::string pattern(std::size_t n, unsigned seed = 1) {
  std::string s(n, '\0');
  unsigned x = seed * 2654435761u + 1;
  for (char& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 16);
  }
  return s;
}

/// Passes requests to a real transport, but for the first request whose URL contains `match`
/// it throws the real response away and answers 500 instead: the request landed, the client
/// never heard, and the pipeline retries it.
class lose_first_response final : public http_transport {
public:
  lose_first_response(std::shared_ptr<http_transport> real, std::string match)
      : real_(std::move(real)), match_(std::move(match)) {}
  result<http_response> send(const http_request& req) override {
    auto r = real_->send(req);
    if (r && req.url.find(match_) != std::string::npos && !lost_.exchange(true)) {
      http_response fake;
      fake.status = 500;
      fake.headers = {{"x-ms-error-code", "InternalError"}};
      return fake;
    }
    return r;
  }
  bool lost() const { return lost_; }

private:
  std::shared_ptr<http_transport> real_;
  std::string match_;
  std::atomic<bool> lost_{false};
};

class BlobClientIt : public ::testing::Test {
protected:
  void SetUp() override {
    auto acct = parse_connection_string(tests::azurite_connection_string());
    ASSERT_TRUE(acct) << acct.error().describe();
    account = *acct;
    client = make_client();
    container = ascii_lower(tests::unique_name("blobit"));
    auto c = client->create_container(container);
    ASSERT_TRUE(c) << c.error().describe();
  }
  void TearDown() override {
    if (client && !container.empty())
      (void)client->delete_container_if_exists(container);
  }

  std::optional<blob_client> make_client(std::shared_ptr<http_transport> t = nullptr) {
    pipeline_options opts;
    opts.retry.base_delay = std::chrono::milliseconds(1);
    opts.hooks.sleep = [](std::chrono::milliseconds) {}; // retries without waiting
    auto p = pipeline::make(account, std::move(opts), std::move(t));
    EXPECT_TRUE(p) << p.error().describe();
    if (!p)
      return std::nullopt;
    return blob_client(std::move(*p));
  }

  storage_account account;
  std::optional<blob_client> client;
  std::string container;
};

TEST_F(BlobClientIt, ContainerCreateTwiceConflictsAndIfNotExistsReportsIt) {
  auto again = client->create_container(container);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::conflict);
  EXPECT_EQ(again.error().service_code, "ContainerAlreadyExists");
  auto ine = client->create_container_if_not_exists(container);
  ASSERT_TRUE(ine) << ine.error().describe();
  EXPECT_FALSE(*ine);

  const std::string other = ascii_lower(tests::unique_name("blobit"));
  auto created = client->create_container_if_not_exists(other);
  ASSERT_TRUE(created) << created.error().describe();
  EXPECT_TRUE(*created);
  auto del = client->delete_container(other);
  ASSERT_TRUE(del) << del.error().describe();
  auto gone = client->delete_container(other);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
  auto gone_ok = client->delete_container_if_exists(other);
  ASSERT_TRUE(gone_ok) << gone_ok.error().describe();
  EXPECT_FALSE(*gone_ok);
}

TEST_F(BlobClientIt, PutBlobStoresMd5TypeAndMetadataAndGetReturnsThem) {
  const std::string body = "{\"DATA\": \"hello\"}\n\n{\"DATA\": \"world\"}\n";
  put_blob_options o;
  o.content_type = "application/json";
  o.metadata = {{"count", "2"}, {"First_TS", "2026-11-21T00:00:00Z"}};
  auto put = client->put_blob(container, "dest/2026/11/21/a.json", body, o);
  ASSERT_TRUE(put) << put.error().describe();
  EXPECT_FALSE(put->etag.empty());
  EXPECT_EQ(put->content_md5, base64_encode(md5(body)));
  EXPECT_TRUE(put->date.has_value());
  EXPECT_FALSE(put->recovered);

  auto got = client->get_blob(container, "dest/2026/11/21/a.json");
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(got->body, body);
  EXPECT_EQ(got->properties.etag, put->etag);
  EXPECT_EQ(got->properties.content_md5, base64_encode(md5(body)));
  EXPECT_EQ(got->properties.content_type, "application/json");
  EXPECT_EQ(got->properties.content_length, body.size());
  EXPECT_EQ(got->properties.type, blob_type::block);
  EXPECT_EQ(got->properties.metadata.at("count"), "2");
  EXPECT_EQ(got->properties.metadata.at("first_ts"), "2026-11-21T00:00:00Z");
  EXPECT_TRUE(got->date.has_value());
}

TEST_F(BlobClientIt, CreateOnlyPutTwiceIsConflict) {
  put_blob_options o;
  o.create_only = true;
  auto first = client->put_blob(container, "once.txt", "one", o);
  ASSERT_TRUE(first) << first.error().describe();
  auto second = client->put_blob(container, "once.txt", "two", o);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, errc::conflict);
  EXPECT_EQ(second.error().service_code, "BlobAlreadyExists");
  auto got = client->get_blob(container, "once.txt");
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(got->body, "one");
}

TEST_F(BlobClientIt, IfMatchWithStaleEtagIsPreconditionFailed) {
  auto v1 = client->put_blob(container, "cas.txt", "v1");
  ASSERT_TRUE(v1) << v1.error().describe();
  put_blob_options o;
  o.if_match = v1->etag;
  auto v2 = client->put_blob(container, "cas.txt", "v2", o);
  ASSERT_TRUE(v2) << v2.error().describe();
  EXPECT_NE(v2->etag, v1->etag);
  auto stale = client->put_blob(container, "cas.txt", "v3", o); // still v1's ETag
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::precondition_failed);
  auto got = client->get_blob(container, "cas.txt");
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(got->body, "v2");
}

TEST_F(BlobClientIt, RetriedCreateOnlyPutThatLandedIsRecovered) {
  auto lossy = std::make_shared<lose_first_response>(*make_curl_transport(), "recovered.txt");
  auto c = make_client(lossy);
  ASSERT_TRUE(c);
  put_blob_options o;
  o.create_only = true;
  auto put = c->put_blob(container, "recovered.txt", "payload", o);
  ASSERT_TRUE(put) << put.error().describe();
  EXPECT_TRUE(lossy->lost());
  EXPECT_TRUE(put->recovered);
  EXPECT_FALSE(put->etag.empty());
  // A different body under the same name stays a conflict.
  auto other = client->put_blob(container, "recovered.txt", "different", o);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, errc::conflict);
}

TEST_F(BlobClientIt, StagedUploadOfFiveBlocksReassemblesExactly) {
  const std::string body = pattern(5 * 1000 - 7, 5); // 5 blocks, the last one short
  upload_options o;
  o.single_put_max_bytes = 1000;
  o.block_bytes = 1000;
  o.blob.content_type = "application/x-ndjson";
  o.blob.metadata = {{"blocks", "5"}};
  auto up = client->upload(container, "staged/big.ndjson", body, o);
  ASSERT_TRUE(up) << up.error().describe();
  EXPECT_EQ(up->content_md5, base64_encode(md5(body)));

  auto got = client->get_blob(container, "staged/big.ndjson");
  ASSERT_TRUE(got) << got.error().describe();
  ASSERT_EQ(got->body.size(), body.size());
  EXPECT_TRUE(got->body == body);
  EXPECT_EQ(got->properties.content_md5, base64_encode(md5(body))); // whole-blob MD5 stored
  EXPECT_EQ(got->properties.content_type, "application/x-ndjson");
  EXPECT_EQ(got->properties.metadata.at("blocks"), "5");

  // Small bodies take the single Put Blob path.
  auto small = client->upload(container, "staged/small", "tiny", o);
  ASSERT_TRUE(small) << small.error().describe();
  EXPECT_EQ(client->get_blob(container, "staged/small")->body, "tiny");
}

TEST_F(BlobClientIt, BlockListRulesAreCheckedAndServiceRejectsUnknownBlocks) {
  auto id0 = make_block_id(0), id1 = make_block_id(1);
  ASSERT_TRUE(id0 && id1);
  ASSERT_TRUE(client->put_block(container, "manual", *id0, "AAA"));
  ASSERT_TRUE(client->put_block(container, "manual", *id1, "BBB"));
  auto bad_len = client->put_block_list(container, "manual", {*id0, base64_encode("x")});
  ASSERT_FALSE(bad_len);
  EXPECT_EQ(bad_len.error().code, errc::invalid_argument);
  EXPECT_EQ(bad_len.error().http_status, 0); // refused before sending

  auto unknown = client->put_block_list(container, "manual", {*id0, *make_block_id(7)});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, errc::bad_request);
  EXPECT_EQ(unknown.error().service_code, "InvalidBlockList");

  auto ok = client->put_block_list(container, "manual", {*id1, *id0});
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_EQ(client->get_blob(container, "manual")->body, "BBBAAA");
}

TEST_F(BlobClientIt, AppendBlobWithPositionsAndLimits) {
  create_append_blob_options co;
  co.create_only = true;
  co.content_type = "application/x-ndjson";
  auto created = client->create_append_blob(container, "log.ndjson", co);
  ASSERT_TRUE(created) << created.error().describe();
  auto twice = client->create_append_blob(container, "log.ndjson", co);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, errc::conflict);

  append_block_options ao;
  ao.expected_offset = 0;
  auto a1 = client->append_block(container, "log.ndjson", "line one\n", ao);
  ASSERT_TRUE(a1) << a1.error().describe();
  EXPECT_EQ(a1->offset, 0u);
  EXPECT_EQ(a1->committed_block_count, 1u);
  EXPECT_FALSE(a1->recovered);

  ao.expected_offset = 9;
  auto a2 = client->append_block(container, "log.ndjson", "line two\n", ao);
  ASSERT_TRUE(a2) << a2.error().describe();
  EXPECT_EQ(a2->offset, 9u);
  EXPECT_EQ(a2->committed_block_count, 2u);

  ao.expected_offset = 9; // stale: the blob is 18 bytes long now
  auto wrong = client->append_block(container, "log.ndjson", "line three\n", ao);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, errc::precondition_failed);
  EXPECT_EQ(wrong.error().service_code, "AppendPositionConditionNotMet");

  append_block_options capped;
  capped.max_size = 20;
  auto too_big = client->append_block(container, "log.ndjson", "line three\n", capped);
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().code, errc::precondition_failed);
  EXPECT_EQ(too_big.error().service_code, "MaxBlobSizeConditionNotMet");

  auto empty = client->append_block(container, "log.ndjson", "");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, errc::invalid_argument);

  auto props = client->get_properties(container, "log.ndjson");
  ASSERT_TRUE(props) << props.error().describe();
  EXPECT_EQ(props->type, blob_type::append);
  EXPECT_EQ(props->content_length, 18u);
  EXPECT_EQ(props->committed_block_count, 2u);
  EXPECT_EQ(props->content_type, "application/x-ndjson");
  EXPECT_EQ(client->get_blob(container, "log.ndjson")->body, "line one\nline two\n");
}

TEST_F(BlobClientIt, RetriedAppendThatLandedIsRecoveredNotAConflict) {
  ASSERT_TRUE(client->create_append_blob(container, "retry.log"));
  ASSERT_TRUE(client->append_block(container, "retry.log", "first\n"));
  auto lossy = std::make_shared<lose_first_response>(*make_curl_transport(), "comp=appendblock");
  auto c = make_client(lossy);
  ASSERT_TRUE(c);
  append_block_options ao;
  ao.expected_offset = 6;
  auto a = c->append_block(container, "retry.log", "second\n", ao);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_TRUE(lossy->lost());
  EXPECT_TRUE(a->recovered);
  EXPECT_EQ(a->offset, 6u);
  EXPECT_EQ(a->committed_block_count, 2u);
  EXPECT_EQ(client->get_blob(container, "retry.log")->body, "first\nsecond\n"); // once, not twice

  // Someone else's bytes at the expected offset stay a precondition failure.
  auto lossy2 = std::make_shared<lose_first_response>(*make_curl_transport(), "comp=appendblock");
  auto c2 = make_client(lossy2);
  ASSERT_TRUE(c2);
  ASSERT_TRUE(client->append_block(container, "retry.log", "theirs\n"));
  ao.expected_offset = 13;
  auto mine = c2->append_block(container, "retry.log", "mine!!\n", ao); // first attempt: 412
  ASSERT_FALSE(mine);
  EXPECT_EQ(mine.error().code, errc::precondition_failed);
}

TEST_F(BlobClientIt, RangeReads) {
  const std::string body = "0123456789abcdefghij";
  ASSERT_TRUE(client->put_blob(container, "range.bin", body));
  get_blob_options g;
  g.range = byte_range{5, 10};
  auto mid = client->get_blob(container, "range.bin", g);
  ASSERT_TRUE(mid) << mid.error().describe();
  EXPECT_EQ(mid->body, "56789abcde");
  EXPECT_EQ(mid->range_offset, 5u);
  EXPECT_EQ(mid->properties.content_length, body.size()); // whole blob, from Content-Range
  EXPECT_EQ(mid->properties.content_md5, base64_encode(md5(body)));

  g.range = byte_range{15, std::nullopt};
  auto tail = client->get_blob(container, "range.bin", g);
  ASSERT_TRUE(tail) << tail.error().describe();
  EXPECT_EQ(tail->body, "fghij");

  g.range = byte_range{100, 5};
  auto beyond = client->get_blob(container, "range.bin", g);
  ASSERT_FALSE(beyond);
  EXPECT_EQ(beyond.error().http_status, 416);

  g.range = byte_range{0, 0};
  auto empty = client->get_blob(container, "range.bin", g);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, errc::invalid_argument);
}

TEST_F(BlobClientIt, MetadataRoundTripAndConditionalSet) {
  ASSERT_TRUE(client->put_blob(container, "meta.txt", "m"));
  auto set = client->set_metadata(container, "meta.txt", {{"Owner", "persistor-1"}, {"n", "42"}});
  ASSERT_TRUE(set) << set.error().describe();
  auto props = client->get_properties(container, "meta.txt");
  ASSERT_TRUE(props) << props.error().describe();
  EXPECT_EQ(props->etag, set->etag);
  EXPECT_EQ(props->metadata, (metadata_map{{"owner", "persistor-1"}, {"n", "42"}}));
  EXPECT_EQ(props->content_length, 1u);
  EXPECT_EQ(props->content_md5, base64_encode(md5("m")));

  blob_condition_options stale;
  stale.if_match = "\"0x8D0000000000000\"";
  auto refused = client->set_metadata(container, "meta.txt", {{"n", "43"}}, stale);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::precondition_failed);

  auto cleared = client->set_metadata(container, "meta.txt", {});
  ASSERT_TRUE(cleared) << cleared.error().describe();
  EXPECT_TRUE(client->get_properties(container, "meta.txt")->metadata.empty());

  auto bad = client->set_metadata(container, "meta.txt", {{"not-an-identifier", "x"}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
}

TEST_F(BlobClientIt, ListWithPrefixDelimiterMetadataAndPaging) {
  const std::vector<std::string> names = {"a/1.json", "a/2.json", "a/3.json", "a/4.json",
                                          "a/5.json", "a/6.json", "a/7.json", "a/sub/x.json",
                                          "b/1.json", "top.json"};
  for (const auto& n : names) {
    put_blob_options o;
    o.metadata = {{"name_len", std::to_string(n.size())}};
    ASSERT_TRUE(client->put_blob(container, n, "x", o)) << n;
  }

  // Prefix "a/" with 3 per page: 8 blobs → pages of 3, 3, 2.
  list_blobs_options lo;
  lo.prefix = "a/";
  lo.max_results = 3;
  lo.include_metadata = true;
  auto pager = client->list_blobs_pager(container, lo);
  std::vector<std::string> seen;
  int pages = 0;
  while (true) {
    auto page = pager.next();
    ASSERT_TRUE(page) << page.error().describe();
    if (!*page)
      break;
    ++pages;
    ASSERT_LE((*page)->blobs.size(), 3u);
    for (const auto& b : (*page)->blobs) {
      seen.push_back(b.name);
      EXPECT_EQ(b.properties.metadata.at("name_len"), std::to_string(b.name.size()));
      EXPECT_EQ(b.properties.content_length, 1u);
      EXPECT_EQ(b.properties.type, blob_type::block);
      EXPECT_FALSE(b.properties.etag.empty());
    }
  }
  EXPECT_EQ(pages, 3);
  EXPECT_TRUE(pager.done());
  EXPECT_EQ(seen, std::vector<std::string>(names.begin(), names.begin() + 8));

  // Delimiter: top level rolls up into a/ and b/.
  list_blobs_options dl;
  dl.delimiter = "/";
  auto top = client->list_blobs(container, dl);
  ASSERT_TRUE(top) << top.error().describe();
  ASSERT_EQ(top->blobs.size(), 1u);
  EXPECT_EQ(top->blobs[0].name, "top.json");
  EXPECT_TRUE(top->blobs[0].properties.metadata.empty()); // not requested
  EXPECT_EQ(top->prefixes, (std::vector<std::string>{"a/", "b/"}));
  EXPECT_TRUE(top->next_marker.empty());

  dl.prefix = "a/";
  auto sub = client->list_blobs(container, dl);
  ASSERT_TRUE(sub) << sub.error().describe();
  EXPECT_EQ(sub->blobs.size(), 7u);
  EXPECT_EQ(sub->prefixes, std::vector<std::string>{"a/sub/"});

  list_blobs_options too_many;
  too_many.max_results = 5001;
  EXPECT_EQ(client->list_blobs(container, too_many).error().code, errc::invalid_argument);
  auto missing = client->list_blobs(ascii_lower(tests::unique_name("nocontainer")));
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
}

TEST_F(BlobClientIt, DeleteBlobAndMissingBlobErrors) {
  auto put = client->put_blob(container, "dir/with space+plus.txt", "bye");
  ASSERT_TRUE(put) << put.error().describe();
  blob_condition_options stale;
  stale.if_match = "\"0x8D0000000000000\"";
  auto refused = client->delete_blob(container, "dir/with space+plus.txt", stale);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::precondition_failed);
  blob_condition_options current;
  current.if_match = put->etag;
  auto del = client->delete_blob(container, "dir/with space+plus.txt", current);
  ASSERT_TRUE(del) << del.error().describe();

  auto get = client->get_blob(container, "dir/with space+plus.txt");
  ASSERT_FALSE(get);
  EXPECT_EQ(get.error().code, errc::not_found);
  EXPECT_EQ(get.error().service_code, "BlobNotFound");
  auto head = client->get_properties(container, "dir/with space+plus.txt");
  ASSERT_FALSE(head);
  EXPECT_EQ(head.error().code, errc::not_found);
  auto again = client->delete_blob(container, "dir/with space+plus.txt");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::not_found);
}

TEST_F(BlobClientIt, UnicodeAndReservedCharactersInNamesRoundTrip) {
  const std::string name = "caf\xC3\xA9/#hash?q=1&x%20y;[z].txt";
  ASSERT_TRUE(client->put_blob(container, name, "u")) << name;
  auto got = client->get_blob(container, name);
  ASSERT_TRUE(got) << got.error().describe();
  EXPECT_EQ(got->body, "u");
  list_blobs_options lo;
  lo.prefix = "caf\xC3\xA9/";
  auto list = client->list_blobs(container, lo);
  ASSERT_TRUE(list) << list.error().describe();
  ASSERT_EQ(list->blobs.size(), 1u);
  EXPECT_EQ(list->blobs[0].name, name);
}

TEST_F(BlobClientIt, InvalidInputIsRefusedBeforeSending) {
  auto bad_container = client->put_blob("Bad_Container", "x", "y");
  ASSERT_FALSE(bad_container);
  EXPECT_EQ(bad_container.error().code, errc::invalid_argument);
  EXPECT_EQ(bad_container.error().http_status, 0);
  auto bad_blob = client->put_blob(container, "ends/", "y");
  ASSERT_FALSE(bad_blob);
  EXPECT_EQ(bad_blob.error().code, errc::invalid_argument);
  put_blob_options o;
  o.metadata = {{"big", std::string(9000, 'v')}};
  auto big = client->put_blob(container, "x", "y", o);
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, errc::limit_exceeded);
  upload_options uo;
  uo.single_put_max_bytes = 10;
  uo.block_bytes = 1;
  auto too_many_blocks = client->upload(container, "x", std::string(50'001, 'z'), uo);
  ASSERT_FALSE(too_many_blocks);
  EXPECT_EQ(too_many_blocks.error().code, errc::limit_exceeded);
}

} // namespace
} // namespace shoal::storage
