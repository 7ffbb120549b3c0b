// Queue message bodies (build and parse), text encoding and queue-side validation.

#include "storage/encoding.hpp"
#include "storage/queue_client.hpp"
#include "storage/xml_codec.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace shoal::storage {
namespace {

const std::string get_body =
    "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList>"
    "<QueueMessage><MessageId>5974b586-0df3-4e2d-ad0c-18e3892bfca2</MessageId>"
    "<InsertionTime>Fri, 09 Oct 2009 21:04:30 GMT</InsertionTime>"
    "<ExpirationTime>Fri, 16 Oct 2009 21:04:30 GMT</ExpirationTime>"
    "<PopReceipt>YzQ4Yzg1MDItYTc0Ny00OWNjLTkxYTUtZGM0MDFiZDAwYzEw</PopReceipt>"
    "<TimeNextVisible>Fri, 09 Oct 2009 23:29:20 GMT</TimeNextVisible>"
    "<DequeueCount>2</DequeueCount><MessageText>aGVsbG8gPHdvcmxkPg==</MessageText></QueueMessage>"
    "<QueueMessage><MessageId>id-2</MessageId><PopReceipt>r2</PopReceipt>"
    "<DequeueCount>1</DequeueCount><MessageText>not base64 &amp; raw</MessageText></QueueMessage>"
    "</QueueMessagesList>";

TEST(QueueXmlTest, ParsesMessagesAndDecodesBase64) {
  auto msgs = xml::parse_queue_messages(get_body, message_encoding::base64);
  ASSERT_TRUE(msgs) << msgs.error().describe();
  ASSERT_EQ(msgs->size(), 2u);
  const queue_message& m = (*msgs)[0];
  EXPECT_EQ(m.message_id, "5974b586-0df3-4e2d-ad0c-18e3892bfca2");
  EXPECT_EQ(m.pop_receipt, "YzQ4Yzg1MDItYTc0Ny00OWNjLTkxYTUtZGM0MDFiZDAwYzEw");
  EXPECT_EQ(m.dequeue_count, 2u);
  EXPECT_EQ(m.text, "hello <world>");
  EXPECT_FALSE(m.undecodable);
  ASSERT_TRUE(m.insertion_time && m.expiration_time && m.time_next_visible);
  EXPECT_EQ(format_http_date(*m.time_next_visible), "Fri, 09 Oct 2009 23:29:20 GMT");
  // A text that is not base64 is kept raw and flagged instead of failing the whole batch.
  EXPECT_TRUE((*msgs)[1].undecodable);
  EXPECT_EQ((*msgs)[1].text, "not base64 & raw");
  EXPECT_FALSE((*msgs)[1].insertion_time);
}

TEST(QueueXmlTest, NeverExpiringMessagesSaturateInsteadOfOverflowing) {
  auto msgs = xml::parse_queue_messages(
      "<QueueMessagesList><QueueMessage><MessageId>i</MessageId>"
      "<ExpirationTime>Fri, 31 Dec 9999 23:59:59 GMT</ExpirationTime></QueueMessage>"
      "</QueueMessagesList>",
      message_encoding::base64);
  ASSERT_TRUE(msgs) << msgs.error().describe();
  EXPECT_EQ((*msgs)[0].expiration_time, std::chrono::system_clock::time_point::max());
}

TEST(QueueXmlTest, RawEncodingKeepsText) {
  auto msgs = xml::parse_queue_messages(get_body, message_encoding::raw);
  ASSERT_TRUE(msgs) << msgs.error().describe();
  EXPECT_EQ((*msgs)[0].text, "aGVsbG8gPHdvcmxkPg==");
  EXPECT_FALSE((*msgs)[1].undecodable);
}

TEST(QueueXmlTest, EmptyListIsNoMessages) {
  auto msgs = xml::parse_queue_messages(
      "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList />", message_encoding::base64);
  ASSERT_TRUE(msgs) << msgs.error().describe();
  EXPECT_TRUE(msgs->empty());
}

TEST(QueueXmlTest, MalformedBodiesAreBadResponses) {
  for (const char* bad : {
           "", "<QueueMessagesList>", "<EnumerationResults/>",
           "<QueueMessagesList><QueueMessage><PopReceipt>r</PopReceipt></QueueMessage>"
           "</QueueMessagesList>",
           "<QueueMessagesList><QueueMessage><MessageId>i</MessageId><DequeueCount>-1"
           "</DequeueCount></QueueMessage></QueueMessagesList>",
           "<QueueMessagesList><QueueMessage><MessageId>i</MessageId><InsertionTime>soon"
           "</InsertionTime></QueueMessage></QueueMessagesList>"}) {
    auto r = xml::parse_queue_messages(bad, message_encoding::base64);
    ASSERT_FALSE(r) << "accepted: " << bad;
    EXPECT_EQ(r.error().code, errc::bad_response) << bad;
  }
  for (std::size_t n = 0; n < get_body.size(); ++n) {
    auto r = xml::parse_queue_messages(std::string_view(get_body).substr(0, n),
                                       message_encoding::base64);
    if (!r) {
      EXPECT_EQ(r.error().code, errc::bad_response);
    }
  }
}

TEST(QueueXmlTest, BuildsEscapedMessageBody) {
  EXPECT_EQ(xml::build_queue_message("a<b & c>\r"),
            "<QueueMessage><MessageText>a&lt;b &amp; c&gt;&#13;</MessageText></QueueMessage>");
  // What we build, we parse back byte for byte (CR included).
  std::string body = "<QueueMessagesList><QueueMessage><MessageId>x</MessageId><MessageText>" +
                     xml::escape("l1\r\nl2 <&>\"'") + "</MessageText></QueueMessage></QueueMessagesList>";
  auto msgs = xml::parse_queue_messages(body, message_encoding::raw);
  ASSERT_TRUE(msgs) << msgs.error().describe();
  EXPECT_EQ((*msgs)[0].text, "l1\r\nl2 <&>\"'");
}

TEST(QueueValidationTest, QueueNames) {
  for (const char* ok : {"abc", "work-items", "q00", "0q1"})
    EXPECT_TRUE(validate_queue_name(ok)) << ok;
  for (const char* bad : {"q1", "Queue", "a_b", "-ab", "ab-", "a--b", "a.b", ""}) {
    auto r = validate_queue_name(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_NE(r.error().message.find("queue name"), std::string::npos);
  }
  EXPECT_FALSE(validate_queue_name(std::string(64, 'a')));
  EXPECT_TRUE(validate_queue_name(std::string(63, 'a')));
}

TEST(QueueValidationTest, MessageSizeCountsEncodedBytes) {
  // 49,152 bytes encode to exactly 65,536 base64 characters: the largest binary payload.
  auto max = encode_message_text(std::string(49'152, '\x01'), message_encoding::base64);
  ASSERT_TRUE(max) << max.error().describe();
  EXPECT_EQ(max->size(), 65'536u);
  auto over = encode_message_text(std::string(49'153, 'x'), message_encoding::base64);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, errc::limit_exceeded);
  EXPECT_NE(over.error().message.find("65536"), std::string::npos) << over.error().message;

  EXPECT_TRUE(encode_message_text(std::string(65'536, 'x'), message_encoding::raw));
  EXPECT_FALSE(encode_message_text(std::string(65'537, 'x'), message_encoding::raw));
  auto ctrl = encode_message_text("bell\x07", message_encoding::raw);
  ASSERT_FALSE(ctrl);
  EXPECT_EQ(ctrl.error().code, errc::invalid_argument);
  EXPECT_FALSE(encode_message_text("\xC3", message_encoding::raw)); // invalid UTF-8
  EXPECT_EQ(*encode_message_text("hi", message_encoding::base64), "aGk=");
}

} // namespace
} // namespace shoal::storage
