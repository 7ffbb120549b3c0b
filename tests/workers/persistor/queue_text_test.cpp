// Unit tests of how a pull-mode queue message becomes a record (and why a bad one is refused:
// the reason a poison message carries).

#include "workers/persistor/sources.hpp"

#include <gtest/gtest.h>

namespace shoal::workers::persistor {
namespace {

TEST(PersistorQueueText, JsonEnvelopeGivesDestIdTimeAndPayload) {
  auto r = record_from_queue_text(
      R"({"dest":"flights","id":"m7","event_time":"2001/01/05 10:30","data":{"a":1}})", "dflt", "");
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->dest, "flights");
  EXPECT_EQ(r->message_id, "m7");
  EXPECT_EQ(r->payload, R"({"a":1})");
  EXPECT_EQ(partition_of(r->event_time, partition_depth::hour), "2001/01/05/10");
  auto s = record_from_queue_text(R"({"data":"plain"})", "dflt", "");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->dest, "dflt");
  EXPECT_EQ(s->payload, "plain");
  EXPECT_TRUE(s->message_id.empty()); // the puller uses the queue's message id
}

TEST(PersistorQueueText, OtherTextIsThePayloadAndTheFieldGivesTheTime) {
  auto r = record_from_queue_text(R"({"ts":978690600,"x":1})", "dflt", "ts");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->payload, R"({"ts":978690600,"x":1})");
  EXPECT_EQ(r->event_time, 978'690'600'000);
  auto t = record_from_queue_text("just text", "dflt", "ts"); // no field: ingest time, reason kept
  ASSERT_TRUE(t);
  EXPECT_EQ(t->event_time, t->ingest_time);
  EXPECT_FALSE(t->properties["event_time_error"].empty());
}

TEST(PersistorQueueText, BadDestIsRefusedWithAReason) {
  auto r = record_from_queue_text(R"({"dest":"../escape","data":"x"})", "dflt", "");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("dest"), std::string::npos);
  EXPECT_FALSE(record_from_queue_text(R"({"dest":5,"data":"x"})", "dflt", ""));
}

} // namespace
} // namespace shoal::workers::persistor
