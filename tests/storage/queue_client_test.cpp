// queue_client over a scripted transport: request shapes, answer parsing and the stale-receipt
// mapping — deterministic, no network.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/encoding.hpp"
#include "storage/queue_client.hpp"

#include "tests/support/fake_storage.hpp"
#include "tests/support/fake_transport.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>

namespace shoal::storage {
namespace {

using tests::fake_transport;

using tests::header_of;

// The shared fixture (tests/support/fake_storage.hpp), under this suite's name.
class QueueClientTest : public tests::fake_storage_test {};

TEST_F(QueueClientTest, StaleReceiptBecomesPreconditionFailed) {
  fake->respond(400, {{"x-ms-error-code", "PopReceiptMismatch"}},
                "<?xml version=\"1.0\"?><Error><Code>PopReceiptMismatch</Code><Message>The "
                "specified pop receipt did not match.</Message></Error>");
  auto r = queues->delete_message("q-1", "id 1", "rcpt+/=");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::precondition_failed);
  EXPECT_EQ(r.error().service_code, "PopReceiptMismatch");
  EXPECT_NE(r.error().message.find("pop receipt is stale"), std::string::npos);
  const std::string url = fake->requests()[0].url;
  EXPECT_NE(url.find("/q-1/messages/id%201"), std::string::npos) << url;
  EXPECT_NE(url.find("popreceipt=rcpt%2B%2F%3D"), std::string::npos) << url;
}

TEST_F(QueueClientTest, PutMessageBuildsBodyAndQuery) {
  fake->respond(201, {},
                "<QueueMessagesList><QueueMessage><MessageId>m1</MessageId><PopReceipt>r1"
                "</PopReceipt></QueueMessage></QueueMessagesList>");
  put_message_options o;
  o.visibility_timeout = std::chrono::seconds{5};
  o.ttl = message_ttl_infinite;
  o.encoding = message_encoding::raw;
  auto r = queues->put_message("q-1", "a<b", o);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->message_id, "m1");
  EXPECT_EQ(r->pop_receipt, "r1");
  const http_request req = fake->requests()[0];
  EXPECT_EQ(req.method, http_method::post);
  EXPECT_EQ(req.body, "<QueueMessage><MessageText>a&lt;b</MessageText></QueueMessage>");
  EXPECT_NE(req.url.find("visibilitytimeout=5"), std::string::npos) << req.url;
  EXPECT_NE(req.url.find("messagettl=-1"), std::string::npos) << req.url;
  EXPECT_EQ(header_of(req, "Content-Type"), "application/xml");
}

TEST_F(QueueClientTest, UpdateWithoutNewReceiptIsBadResponse) {
  fake->respond(204, {});
  auto r = queues->update_message("q-1", "m1", "r1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_response);
  fake->respond(204, {{"x-ms-popreceipt", "r2"},
                      {"x-ms-time-next-visible", "Sat, 21 Nov 2026 11:58:31 GMT"}});
  auto ok = queues->update_message("q-1", "m1", "r1");
  ASSERT_TRUE(ok) << ok.error().describe();
  EXPECT_EQ(ok->pop_receipt, "r2");
  EXPECT_TRUE(ok->time_next_visible);
  EXPECT_TRUE(fake->requests()[1].body.empty()); // no text: visibility only
}

TEST_F(QueueClientTest, MalformedMessageListIsBadResponse) {
  fake->respond(200, {}, "<QueueMessagesList><QueueMessage>");
  auto r = queues->get_messages("q-1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::bad_response);
  fake->respond(200, {{"x-ms-approximate-messages-count", "many"}});
  EXPECT_EQ(queues->approximate_message_count("q-1").error().code, errc::bad_response);
}

} // namespace
} // namespace shoal::storage
