// Unit tests of the claim building blocks: key escaping, sharding, retry backoff, the server
// clock estimate and ETag time parsing, the typed record mapping.

#include "workers/claim/key_escape.hpp"
#include "tests/support/record_table.hpp"
#include "storage/server_clock.hpp"
#include "workers/claim/work_table.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace shoal::workers {
namespace {

using namespace std::chrono;
using namespace std::chrono_literals;

TEST(KeyEscape, EscapesForbiddenCharactersReversibly) {
  auto k = escape_key("a/b\\c#d?e%f");
  ASSERT_TRUE(k) << k.error().describe();
  EXPECT_EQ(*k, "a%2Fb%5Cc%23d%3Fe%25f");
  auto back = unescape_key(*k);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, "a/b\\c#d?e%f");

  const std::string controls = std::string("x\x01\x1f\x7f", 4) + "\xc2\x85" + "\xc3\xa9";
  auto kc = escape_key(controls);
  ASSERT_TRUE(kc);
  EXPECT_EQ(*kc, "x%01%1F%7F%C2%85\xc3\xa9");
  EXPECT_EQ(*unescape_key(*kc), controls);
  EXPECT_EQ(*escape_key("plain-id_1.json"), "plain-id_1.json");
}

TEST(KeyEscape, RejectsEmptyMalformedAndTooLongIds) {
  EXPECT_EQ(escape_key("").error().code, errc::invalid_argument);
  EXPECT_EQ(escape_key("\xff").error().code, errc::invalid_argument);
  EXPECT_TRUE(escape_key(std::string(512, 'a')));
  auto too_long = escape_key(std::string(171, '/')); // 513 characters once escaped
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().code, errc::limit_exceeded);
  EXPECT_NE(too_long.error().message.find("513"), std::string::npos);
  EXPECT_EQ(unescape_key("bad%2").error().code, errc::parse);
  EXPECT_EQ(unescape_key("bad%zz").error().code, errc::parse);
}

TEST(Sharding, UsesFnv1aAndTwoHexDigitPartitions) {
  EXPECT_EQ(fnv1a_32(""), 0x811c9dc5u);
  EXPECT_EQ(fnv1a_32("a"), 0xe40c292cu);
  EXPECT_EQ(fnv1a_32("foobar"), 0xbf9cf968u);
  EXPECT_EQ(shard_of("a", 16), 0xe40c292cu % 16);
  EXPECT_EQ(partition_key("etl", 10), "etl-0a");
  EXPECT_EQ(partition_key("q", 255), "q-ff");
  EXPECT_TRUE(validate_queue_name("etl_blobs2"));
  EXPECT_FALSE(validate_queue_name("a-b"));
  EXPECT_FALSE(validate_queue_name(""));
}

TEST(RetryDelay, DoublesFromBaseUpToTheCapWithTwentyPercentJitter) {
  EXPECT_EQ(retry_delay(1, 200ms, 30s, 0.5), 200ms);
  EXPECT_EQ(retry_delay(2, 200ms, 30s, 0.5), 400ms);
  EXPECT_EQ(retry_delay(4, 200ms, 30s, 0.5), 1600ms);
  EXPECT_EQ(retry_delay(20, 200ms, 30s, 0.5), 30s);
  EXPECT_EQ(retry_delay(1, 200ms, 30s, 0.0), 160ms);
  EXPECT_EQ(retry_delay(1, 200ms, 30s, 1.0), 240ms);
}

TEST(ServerClock, KeepsTheTightestBoundsFromDateAndEtagSamples) {
  steady_clock::time_point t0{};
  steady_clock::time_point now = t0;
  storage::server_clock c([&] { return now; });
  EXPECT_FALSE(c.known());
  EXPECT_FALSE(c.now());
  const auto server = sys_days{2026y / 11 / 21} + 12h;
  // A Date header (1 s resolution) seen over a 100 ms round trip.
  c.observe(server, t0, t0 + 100ms, 1s);
  now = t0 + 100ms;
  ASSERT_TRUE(c.now());
  EXPECT_EQ(*c.now(), server);
  EXPECT_EQ(c.uncertainty(), 1100ms);
  // An ETag time (exact) narrows it.
  c.observe(server + 600ms, t0 + 500ms, t0 + 510ms, 0ns);
  now = t0 + 1510ms;
  EXPECT_EQ(*c.now(), server + 1600ms);
  EXPECT_EQ(c.uncertainty(), 10ms);
  EXPECT_EQ(*c.upper_bound_at(now), server + 1610ms);
}

TEST(EtagTime, ParsesTheDatetimeOfTableEtags) {
  auto t = storage::etag_time("W/\"datetime'2026-11-21T11%3A57%3A51.1914632Z'\"");
  ASSERT_TRUE(t);
  auto expect = sys_days{2026y / 11 / 21} + 11h + 57min + 51s + 191463200ns;
  EXPECT_EQ(duration_cast<nanoseconds>(t->time_since_epoch()), duration_cast<nanoseconds>(expect.time_since_epoch()));
  EXPECT_TRUE(storage::etag_time("W/\"datetime'2026-01-02T03:04:05Z'\""));
  EXPECT_FALSE(storage::etag_time("\"0x8DC1234\""));
}

TEST(RecordStatus, NamesRoundTrip) {
  for (auto s : {record_status::pending, record_status::claimed, record_status::done, record_status::dead})
    EXPECT_EQ(*parse_record_status(to_string(s)), s);
  EXPECT_FALSE(parse_record_status("finished"));
}

struct note {
  std::string id;
  std::int32_t count = 0;
  bool processed = false;
  std::optional<std::string> tag;
};

} // namespace

template <> struct record_schema<note> {
  static constexpr std::string_view table = "notes";
  static constexpr std::string_view partition = "p";
  static constexpr auto key = &note::id;
  static constexpr auto fields = std::make_tuple(field("count", &note::count), field("processed", &note::processed),
                                                 field("tag", &note::tag));
};

namespace {

TEST(RecordMapping, MapsStructsToEntitiesAndBack) {
  note n{"a/b", 3, true, std::nullopt};
  auto e = to_entity(n);
  ASSERT_TRUE(e) << e.error().describe();
  EXPECT_EQ(e->partition_key, "p");
  EXPECT_EQ(e->row_key, "a%2Fb");
  EXPECT_EQ(*e->get<std::int32_t>("count"), 3);
  EXPECT_EQ(e->find("tag"), nullptr) << "nullopt is an omitted property";
  e->set("tag", std::string("t"));
  auto back = from_entity<note>(*e);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_EQ(back->id, "a/b");
  EXPECT_EQ(back->count, 3);
  EXPECT_TRUE(back->processed);
  EXPECT_EQ(back->tag, "t");
  e->set("count", std::string("three"));
  EXPECT_EQ(from_entity<note>(*e).error().code, errc::parse);
}

} // namespace
} // namespace shoal::workers
