// queue_client against the real Azurite (fixture `azurite`).

#include "storage/connection_string.hpp"
#include "storage/encoding.hpp"
#include "storage/queue_client.hpp"

#include "tests/support/azurite.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <string>

namespace shoal::storage {
namespace {

using std::chrono::seconds;

class QueueClientIt : public ::testing::Test {
protected:
  void SetUp() override {
    auto acct = parse_connection_string(tests::azurite_connection_string());
    ASSERT_TRUE(acct) << acct.error().describe();
    auto p = pipeline::make(*acct);
    ASSERT_TRUE(p) << p.error().describe();
    client.emplace(std::move(*p));
    queue = ascii_lower(tests::unique_name("queueit"));
    auto c = client->create_queue(queue);
    ASSERT_TRUE(c) << c.error().describe();
    EXPECT_TRUE(*c);
  }
  void TearDown() override {
    if (client && !queue.empty())
      (void)client->delete_queue(queue);
  }

  queue_message get_one(seconds visibility = seconds{30}) {
    get_messages_options g;
    g.visibility_timeout = visibility;
    auto msgs = client->get_messages(queue, g);
    EXPECT_TRUE(msgs) << msgs.error().describe();
    if (!msgs || msgs->size() != 1) {
      ADD_FAILURE() << "expected exactly one message";
      return {};
    }
    return msgs->front();
  }

  std::optional<queue_client> client;
  std::string queue;
};

TEST_F(QueueClientIt, CreateIsIdempotentAndDeleteReportsMissingQueues) {
  auto again = client->create_queue(queue);
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_FALSE(*again); // 204: already there
  const std::string other = ascii_lower(tests::unique_name("queueit"));
  ASSERT_TRUE(client->create_queue(other));
  ASSERT_TRUE(client->delete_queue(other));
  auto gone = client->delete_queue(other);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
  auto bad = client->create_queue("q1");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_EQ(bad.error().http_status, 0);
}

TEST_F(QueueClientIt, PutGetUpdateDeleteWithDequeueCountRising) {
  auto put = client->put_message(queue, "hello <queue> & co");
  ASSERT_TRUE(put) << put.error().describe();
  EXPECT_FALSE(put->message_id.empty());
  EXPECT_FALSE(put->pop_receipt.empty());
  ASSERT_TRUE(put->insertion_time && put->expiration_time);

  queue_message m1 = get_one();
  EXPECT_EQ(m1.message_id, put->message_id);
  EXPECT_EQ(m1.text, "hello <queue> & co");
  EXPECT_EQ(m1.dequeue_count, 1u);
  EXPECT_FALSE(m1.pop_receipt.empty());
  ASSERT_TRUE(m1.time_next_visible && m1.insertion_time);
  EXPECT_GT(*m1.time_next_visible, *m1.insertion_time);

  // Invisible now: a second get finds nothing.
  auto none = client->get_messages(queue);
  ASSERT_TRUE(none) << none.error().describe();
  EXPECT_TRUE(none->empty());

  // Make it visible again at once (no sleeping) with new text; the receipt changes.
  update_message_options u;
  u.visibility_timeout = seconds{0};
  u.text = "hello again";
  auto upd = client->update_message(queue, m1.message_id, m1.pop_receipt, u);
  ASSERT_TRUE(upd) << upd.error().describe();
  EXPECT_NE(upd->pop_receipt, m1.pop_receipt);
  EXPECT_TRUE(upd->time_next_visible.has_value());

  queue_message m2 = get_one();
  EXPECT_EQ(m2.message_id, m1.message_id);
  EXPECT_EQ(m2.text, "hello again");
  EXPECT_EQ(m2.dequeue_count, 2u);

  auto del = client->delete_message(queue, m2.message_id, m2.pop_receipt);
  ASSERT_TRUE(del) << del.error().describe();
  auto gone = client->delete_message(queue, m2.message_id, m2.pop_receipt);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, errc::not_found);
}

TEST_F(QueueClientIt, StalePopReceiptIsAClearPreconditionFailure) {
  ASSERT_TRUE(client->put_message(queue, "x"));
  queue_message m = get_one();
  update_message_options u;
  u.visibility_timeout = seconds{60};
  auto upd = client->update_message(queue, m.message_id, m.pop_receipt, u);
  ASSERT_TRUE(upd) << upd.error().describe();

  auto stale = client->delete_message(queue, m.message_id, m.pop_receipt); // the old receipt
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, errc::precondition_failed);
  EXPECT_EQ(stale.error().service_code, "PopReceiptMismatch");
  EXPECT_EQ(stale.error().http_status, 400);
  EXPECT_NE(stale.error().message.find("pop receipt is stale"), std::string::npos)
      << stale.error().message;
  auto stale_upd = client->update_message(queue, m.message_id, m.pop_receipt, u);
  ASSERT_FALSE(stale_upd);
  EXPECT_EQ(stale_upd.error().code, errc::precondition_failed);

  auto fresh = client->delete_message(queue, m.message_id, upd->pop_receipt);
  ASSERT_TRUE(fresh) << fresh.error().describe();
}

TEST_F(QueueClientIt, PeekNeitherHidesNorCounts) {
  ASSERT_TRUE(client->put_message(queue, "peeked"));
  peek_messages_options p;
  p.count = 32;
  auto peek = client->peek_messages(queue, p);
  ASSERT_TRUE(peek) << peek.error().describe();
  ASSERT_EQ(peek->size(), 1u);
  EXPECT_EQ(peek->front().text, "peeked");
  EXPECT_TRUE(peek->front().pop_receipt.empty());
  EXPECT_EQ(peek->front().dequeue_count, 0u);
  queue_message m = get_one();
  EXPECT_EQ(m.dequeue_count, 1u);
  auto cannot = client->delete_message(queue, m.message_id, "");
  ASSERT_FALSE(cannot);
  EXPECT_EQ(cannot.error().code, errc::invalid_argument);
}

TEST_F(QueueClientIt, GetsUpTo32AndRefuses33ClientSide) {
  for (int i = 0; i < 33; ++i)
    ASSERT_TRUE(client->put_message(queue, "m" + std::to_string(i)));
  auto count = client->approximate_message_count(queue);
  ASSERT_TRUE(count) << count.error().describe();
  EXPECT_EQ(*count, 33u);

  get_messages_options g;
  g.count = 33;
  auto refused = client->get_messages(queue, g);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::invalid_argument);
  EXPECT_EQ(refused.error().http_status, 0);
  EXPECT_NE(refused.error().message.find("1-32"), std::string::npos);
  g.count = 0;
  EXPECT_FALSE(client->get_messages(queue, g));
  peek_messages_options p;
  p.count = 33;
  EXPECT_FALSE(client->peek_messages(queue, p));

  g.count = 32;
  auto batch = client->get_messages(queue, g);
  ASSERT_TRUE(batch) << batch.error().describe();
  EXPECT_EQ(batch->size(), 32u);
  g.count = 32;
  auto rest = client->get_messages(queue, g);
  ASSERT_TRUE(rest) << rest.error().describe();
  EXPECT_EQ(rest->size(), 1u);

  ASSERT_TRUE(client->clear_messages(queue));
  auto after = client->approximate_message_count(queue);
  ASSERT_TRUE(after) << after.error().describe();
  EXPECT_EQ(*after, 0u);
}

TEST_F(QueueClientIt, VisibilityTtlAndTheirRanges) {
  put_message_options hidden;
  hidden.visibility_timeout = seconds{3600};
  ASSERT_TRUE(client->put_message(queue, "later", hidden));
  auto none = client->get_messages(queue);
  ASSERT_TRUE(none) << none.error().describe();
  EXPECT_TRUE(none->empty());

  put_message_options forever;
  forever.ttl = message_ttl_infinite;
  auto f = client->put_message(queue, "forever", forever);
  ASSERT_TRUE(f) << f.error().describe();
  ASSERT_TRUE(f->expiration_time.has_value());
  // The service says 9999-12-31, beyond system_clock's range: reported as time_point::max().
  EXPECT_EQ(*f->expiration_time, std::chrono::system_clock::time_point::max());

  put_message_options shortlived;
  shortlived.ttl = seconds{60};
  auto s = client->put_message(queue, "short", shortlived);
  ASSERT_TRUE(s) << s.error().describe();
  ASSERT_TRUE(s->expiration_time && s->insertion_time);
  EXPECT_EQ(std::chrono::duration_cast<seconds>(*s->expiration_time - *s->insertion_time).count(), 60);

  put_message_options bad;
  bad.ttl = seconds{60};
  bad.visibility_timeout = seconds{60}; // must be < TTL
  EXPECT_EQ(client->put_message(queue, "x", bad).error().code, errc::invalid_argument);
  bad = {};
  bad.ttl = seconds{0};
  EXPECT_EQ(client->put_message(queue, "x", bad).error().code, errc::invalid_argument);
  bad = {};
  bad.visibility_timeout = seconds{604'801};
  EXPECT_EQ(client->put_message(queue, "x", bad).error().code, errc::invalid_argument);
  get_messages_options g;
  g.visibility_timeout = seconds{0};
  EXPECT_EQ(client->get_messages(queue, g).error().code, errc::invalid_argument);
}

TEST_F(QueueClientIt, BinaryBase64AndRawTextRoundTrip) {
  std::string bytes;
  for (int i = 0; i < 256; ++i)
    bytes += static_cast<char>(i);
  ASSERT_TRUE(client->put_message(queue, bytes));
  queue_message b = get_one();
  EXPECT_TRUE(b.text == bytes);
  EXPECT_FALSE(b.undecodable);
  ASSERT_TRUE(client->delete_message(queue, b.message_id, b.pop_receipt));

  put_message_options raw;
  raw.encoding = message_encoding::raw;
  const std::string text = "{\"k\": \"<v> & 'w'\", \"u\": \"\xC3\xA9\"}\r\n\tend";
  ASSERT_TRUE(client->put_message(queue, text, raw));
  get_messages_options g;
  g.encoding = message_encoding::raw;
  auto msgs = client->get_messages(queue, g);
  ASSERT_TRUE(msgs) << msgs.error().describe();
  ASSERT_EQ(msgs->size(), 1u);
  EXPECT_EQ(msgs->front().text, text);
  // Read with the wrong (base64) expectation, a raw text is flagged rather than lost.
  update_message_options u;
  ASSERT_TRUE(client->update_message(queue, msgs->front().message_id, msgs->front().pop_receipt, u));
  queue_message again = get_one();
  EXPECT_TRUE(again.undecodable);
  EXPECT_EQ(again.text, text);
}

TEST_F(QueueClientIt, OversizedMessagesAreRefusedClientSide) {
  auto max = client->put_message(queue, std::string(49'152, 'x')); // 65,536 base64 characters
  ASSERT_TRUE(max) << max.error().describe();
  auto over = client->put_message(queue, std::string(49'153, 'x'));
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, errc::limit_exceeded);
  EXPECT_EQ(over.error().http_status, 0);
  queue_message m = get_one();
  EXPECT_EQ(m.text.size(), 49'152u);
}

TEST_F(QueueClientIt, MissingQueueIsNotFound) {
  const std::string missing = ascii_lower(tests::unique_name("noqueue"));
  auto put = client->put_message(missing, "x");
  ASSERT_FALSE(put);
  EXPECT_EQ(put.error().code, errc::not_found);
  auto count = client->approximate_message_count(missing);
  ASSERT_FALSE(count);
  EXPECT_EQ(count.error().code, errc::not_found);
}

} // namespace
} // namespace shoal::storage
