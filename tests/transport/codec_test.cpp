#include "transport/codec.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace shoal::transport {
namespace {

using bytes = std::vector<std::uint8_t>;

// A hand-written MessagePack writer, independent of the encoder under test, for building
// valid and deliberately broken frames byte by byte.
struct mp {
  bytes b;
  mp& raw(std::initializer_list<int> xs) { for (int x : xs) b.push_back(static_cast<std::uint8_t>(x)); return *this; }
  mp& be(std::uint64_t v, int w) { for (int i = w - 1; i >= 0; --i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i))); return *this; }
  mp& map(std::uint32_t n) { if (n < 16) return raw({0x80 | static_cast<int>(n)}); raw({0xdf}); return be(n, 4); }
  mp& arr(std::uint32_t n) { if (n < 16) return raw({0x90 | static_cast<int>(n)}); raw({0xdd}); return be(n, 4); }
  mp& str(std::string_view s) {
    if (s.size() < 32) raw({0xa0 | static_cast<int>(s.size())});
    else if (s.size() < 256) { raw({0xd9}); be(s.size(), 1); }
    else { raw({0xda}); be(s.size(), 2); }
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  mp& bin(std::size_t n, std::uint8_t fill = 0xab) { raw({0xc4}); be(n, 1); b.insert(b.end(), n, fill); return *this; }
  mp& uint(std::uint64_t v) { if (v < 128) return raw({static_cast<int>(v)}); raw({0xcf}); return be(v, 8); }
  mp& nil() { return raw({0xc0}); }
  // The five required keys with valid values; `skip` omits one of them.
  mp& required(std::string_view skip = "") {
    if (skip != "v") str("v").uint(1);
    if (skip != "id") str("id").bin(16);
    if (skip != "kind") str("kind").str("a.b");
    if (skip != "from") str("from").str("x@y@z");
    if (skip != "ts") str("ts").uint(5);
    return *this;
  }
};

envelope full() {
  envelope e;
  e.id = new_message_id();
  e.kind = "persist.record";
  e.from = "persistor@worker-1@host-a";
  e.to = "claimer@worker-2@host-b";
  e.corr = new_message_id();
  e.ts_ns = 1'763'700'000'123'456'789ull;
  e.deadline_ns = 1'763'700'005'000'000'000ull;
  e.attempt = 3;
  e.gen = 0xffff'ffff'ffff'ffffull;
  e.hdr = {{"ct", "application/json"}, {"trace", "4bf92f3577b34da6a3ce929d0e0e4736"}};
  e.body = bytes(1000, 0x5a);
  return e;
}

envelope minimal() {
  envelope e;
  e.id = new_message_id();
  e.kind = "ctl.heartbeat";
  e.from = "supervisor@sup@h";
  e.ts_ns = 42;
  return e;
}

errc decode_code(const bytes& b, const decode_limits& lim = {}) {
  auto r = decode(b, lim);
  EXPECT_FALSE(r) << "decoded a frame that should be rejected";
  return r ? errc{} : r.error().code;
}

// -- round trips --------------------------------------------------------------------------------

TEST(EnvelopeTest, UnixNowIsTheWallClockInNanoseconds) {
  const auto before = std::chrono::system_clock::now();
  const std::uint64_t ns = unix_now_ns();
  const auto after = std::chrono::system_clock::now();
  const auto as_ns = [](auto t) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
  };
  EXPECT_LE(as_ns(before), ns);
  EXPECT_LE(ns, as_ns(after));
}

TEST(CodecTest, RoundTripsEveryFieldAndUsageExample) {
  envelope e = full();
  std::vector<std::uint8_t> buf;
  auto enc = encode(e, buf);
  ASSERT_TRUE(enc) << enc.error().describe();
  EXPECT_EQ(buf.size(), encoded_size(e));
  auto dec = decode(buf);
  ASSERT_TRUE(dec) << dec.error().describe();
  EXPECT_EQ(*dec, e);
}

TEST(CodecTest, RoundTripsEachOptionalFieldAloneAndAbsent) {
  const envelope base = minimal();
  std::vector<envelope> cases(8, base);
  cases[1].to = "a@b@c";
  cases[2].corr = new_message_id();
  cases[3].deadline_ns = 99;
  cases[4].attempt = 1;
  cases[5].gen = 7;
  cases[6].hdr = {{"ct", "text/plain"}};
  cases[7].body = {1, 2, 3};
  for (std::size_t i = 0; i < cases.size(); ++i) {
    auto enc = encode(cases[i]);
    ASSERT_TRUE(enc) << i << ": " << enc.error().describe();
    auto dec = decode(*enc);
    ASSERT_TRUE(dec) << i << ": " << dec.error().describe();
    EXPECT_EQ(*dec, cases[i]) << "case " << i;
  }
}

TEST(CodecTest, EncodedSizeIsExactAtEveryLengthBoundary) {
  for (std::size_t n : {0, 1, 31, 32, 255, 256, 65535, 65536, 100000}) {
    envelope e = full();
    e.body.assign(n, 1);
    e.ts_ns = n * 1000003;
    e.from = std::string(n % 257 == 0 ? 1 : n % 257, 'f');
    auto enc = encode(e);
    ASSERT_TRUE(enc) << n << ": " << enc.error().describe();
    EXPECT_EQ(enc->size(), encoded_size(e)) << n;
    auto dec = decode(*enc);
    ASSERT_TRUE(dec) << dec.error().describe();
    EXPECT_EQ(*dec, e);
  }
  for (std::uint64_t v : {0ull, 127ull, 128ull, 255ull, 256ull, 65535ull, 65536ull,
                          0xffffffffull, 0x100000000ull}) {
    envelope e = minimal();
    e.ts_ns = v;
    e.gen = v;
    auto enc = encode(e);
    ASSERT_TRUE(enc);
    EXPECT_EQ(enc->size(), encoded_size(e)) << v;
    EXPECT_EQ(*decode(*enc), e);
  }
}

TEST(CodecTest, DecodeIntoReusesTheTargetEnvelope) {
  envelope out = full();
  envelope small = minimal();
  auto enc = encode(small);
  ASSERT_TRUE(enc);
  ASSERT_TRUE(decode_into(*enc, out));
  EXPECT_EQ(out, small); // optionals from the previous content are cleared
}

TEST(CodecTest, DecodeIntoReplacesHeadersWhateverTheirOrder) {
  envelope out = minimal();
  out.hdr = {{"a", "1"}, {"b", "2"}, {"c", "3"}};
  out.to = "old@to@x";
  envelope next = minimal();
  next.hdr = {{"b", "20"}, {"d", "40"}};
  ASSERT_TRUE(decode_into(*encode(next), out));
  EXPECT_EQ(out, next);
  // Unsorted keys from a foreign encoder are fine; duplicates are not.
  mp unsorted;
  unsorted.map(6).required().str("hdr").map(2).str("z").str("1").str("a").str("2");
  ASSERT_TRUE(decode_into(unsorted.b, out));
  EXPECT_EQ(out.hdr, (std::map<std::string, std::string>{{"a", "2"}, {"z", "1"}}));
  mp dup;
  dup.map(6).required().str("hdr").map(2).str("a").str("1").str("a").str("2");
  auto r = decode_into(dup.b, out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_value);
}

TEST(CodecTest, EncodeToRefusesAShortBuffer) {
  envelope e = full();
  std::vector<std::uint8_t> small(encoded_size(e) - 1);
  auto r = encode_to(e, small);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
}

// -- the spec's leniencies ----------------------------------------------------------------------

TEST(CodecTest, AcceptsAnyIntegerWidthNilOptionalsAndAnyKeyOrder) {
  mp m;
  m.map(9);
  m.str("ts").raw({0xd3}).be(5, 8);            // int64 holding 5
  m.str("from").str("x@y@z");
  m.str("attempt").raw({0xcd}).be(2, 2);       // uint16
  m.str("to").nil();
  m.str("corr").nil();
  m.str("kind").str("a.b");
  m.str("id").bin(16);
  m.str("v").raw({0xcf}).be(1, 8);             // uint64 holding 1
  m.str("body").nil();
  auto r = decode(m.b);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->ts_ns, 5u);
  EXPECT_EQ(r->attempt, 2u);
  EXPECT_FALSE(r->to);
  EXPECT_FALSE(r->corr);
  EXPECT_TRUE(r->body.empty());
}

TEST(CodecTest, IgnoresUnknownKeysEvenNested) {
  mp m;
  m.map(7).required();
  m.str("future").map(2).str("a").arr(3).uint(1).str("x").map(1).uint(1).nil().str("b").raw({0xd6, 1, 0, 0, 0, 0});
  m.str("f32").raw({0xca, 0, 0, 0, 0});
  auto r = decode(m.b);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->kind, "a.b");
}

// -- every malformed class ----------------------------------------------------------------------

TEST(CodecTest, RejectsEmptyGarbageAndNonMapFrames) {
  EXPECT_EQ(decode_code({}), errc::truncated);
  EXPECT_EQ(decode_code({0xc1}), errc::malformed);
  EXPECT_EQ(decode_code(mp{}.arr(0).b), errc::malformed);
  EXPECT_EQ(decode_code(mp{}.str("hello").b), errc::malformed);
  bytes trailing = mp{}.map(5).required().b;
  trailing.push_back(0x00);
  EXPECT_EQ(decode_code(trailing), errc::malformed);
  EXPECT_EQ(decode_code(mp{}.map(6).required().uint(3).uint(4).b), errc::malformed); // int key
  EXPECT_EQ(decode_code(mp{}.map(6).required().str("x").raw({0xc1}).b), errc::malformed);
}

TEST(CodecTest, RejectsEveryTruncationOfAValidFrame) {
  auto enc = encode(full());
  ASSERT_TRUE(enc);
  for (std::size_t n = 0; n < enc->size(); ++n) {
    bytes prefix(enc->begin(), enc->begin() + static_cast<std::ptrdiff_t>(n));
    auto r = decode(prefix);
    ASSERT_FALSE(r) << "prefix of " << n << " bytes decoded";
    EXPECT_EQ(r.error().code, errc::truncated) << n << ": " << r.error().describe();
  }
}

TEST(CodecTest, RejectsOversizeFramesBeforeParsing) {
  envelope e = minimal();
  e.body.assign(default_max_frame_bytes, 0); // encoding is a little over 1 MiB
  EXPECT_EQ(encode(e).error().code, errc::frame_too_large);
  decode_limits big;
  big.max_frame_bytes = 2 * default_max_frame_bytes;
  auto enc = encode(e, big);
  ASSERT_TRUE(enc) << enc.error().describe();
  EXPECT_EQ(decode_code(*enc), errc::frame_too_large);
  auto ok = decode(*enc, big);
  ASSERT_TRUE(ok) << ok.error().describe();
  // Limits above 64 MiB act as 64 MiB.
  decode_limits huge;
  huge.max_frame_bytes = std::size_t{1} << 40;
  bytes over(hard_max_frame_bytes + 1, 0x80);
  EXPECT_EQ(decode_code(over, huge), errc::frame_too_large);
}

TEST(CodecTest, RejectsMissingRequiredKeys) {
  for (std::string_view k : {"v", "id", "kind", "from", "ts"}) {
    auto r = decode(mp{}.map(4).required(k).b);
    ASSERT_FALSE(r) << k;
    EXPECT_EQ(r.error().code, errc::missing_field) << k;
    EXPECT_NE(r.error().message.find(std::string(k)), std::string::npos) << r.error().message;
  }
}

TEST(CodecTest, RejectsMistypedKnownKeys) {
  struct tc { const char* key; mp value; };
  std::vector<tc> cases;
  cases.push_back({"v", mp{}.str("1")});
  cases.push_back({"id", mp{}.str("0123456789abcdef")});
  cases.push_back({"kind", mp{}.bin(3)});
  cases.push_back({"from", mp{}.uint(1)});
  cases.push_back({"ts", mp{}.raw({0xcb, 0, 0, 0, 0, 0, 0, 0, 0})});
  cases.push_back({"to", mp{}.bin(2)});
  cases.push_back({"corr", mp{}.uint(1)});
  cases.push_back({"deadline", mp{}.str("soon")});
  cases.push_back({"attempt", mp{}.raw({0xc3})});
  cases.push_back({"gen", mp{}.arr(0)});
  cases.push_back({"hdr", mp{}.arr(0)});
  cases.push_back({"hdr", mp{}.map(1).str("ct").uint(1)});
  cases.push_back({"hdr", mp{}.map(1).uint(1).str("x")});
  cases.push_back({"body", mp{}.str("text")});
  cases.push_back({"kind", mp{}.nil()}); // nil only stands for absent optional keys
  for (auto& c : cases) {
    std::string_view key = c.key;
    bool required = key == "v" || key == "id" || key == "kind" || key == "from" || key == "ts";
    mp m;
    m.map(required ? 5 : 6).required(required ? key : "");
    m.str(key);
    m.b.insert(m.b.end(), c.value.b.begin(), c.value.b.end());
    auto r = decode(m.b);
    ASSERT_FALSE(r) << key;
    EXPECT_EQ(r.error().code, errc::wrong_type) << key << ": " << r.error().describe();
  }
}

TEST(CodecTest, RejectsInvalidValues) {
  auto with = [](std::string_view key, mp value, bool replaces_required = false) {
    mp m;
    m.map(replaces_required ? 5 : 6).required(replaces_required ? key : "");
    m.str(key);
    m.b.insert(m.b.end(), value.b.begin(), value.b.end());
    return m.b;
  };
  EXPECT_EQ(decode_code(with("id", mp{}.bin(15), true)), errc::invalid_value);
  EXPECT_EQ(decode_code(with("id", mp{}.bin(17), true)), errc::invalid_value);
  EXPECT_EQ(decode_code(with("corr", mp{}.bin(0))), errc::invalid_value);
  EXPECT_EQ(decode_code(with("kind", mp{}.str(std::string(65, 'k')), true)), errc::invalid_value);
  EXPECT_EQ(decode_code(with("kind", mp{}.str(""), true)), errc::invalid_value);
  EXPECT_EQ(decode_code(with("from", mp{}.str(std::string(257, 'f')), true)), errc::invalid_value);
  EXPECT_EQ(decode_code(with("to", mp{}.str(std::string(257, 't')))), errc::invalid_value);
  EXPECT_EQ(decode_code(with("kind", mp{}.str("\xc3\x28"), true)), errc::invalid_value); // bad UTF-8
  EXPECT_EQ(decode_code(with("from", mp{}.str("\xed\xa0\x80"), true)), errc::invalid_value); // surrogate
  EXPECT_EQ(decode_code(with("ts", mp{}.raw({0xff}), true)), errc::invalid_value); // -1
  EXPECT_EQ(decode_code(with("attempt", mp{}.uint(0))), errc::invalid_value);
  EXPECT_EQ(decode_code(with("attempt", mp{}.uint(0x100000000ull))), errc::invalid_value);
  EXPECT_EQ(decode_code(with("kind", mp{}.str("dup"))), errc::invalid_value); // duplicate key
  EXPECT_EQ(decode_code(with("hdr", mp{}.map(2).str("a").str("1").str("a").str("2"))), errc::invalid_value);
  EXPECT_EQ(decode_code(with("hdr", mp{}.map(1).str("").str("1"))), errc::invalid_value);
  EXPECT_EQ(decode_code(with("hdr", mp{}.map(1).str("a").str(std::string(1025, 'x')))), errc::invalid_value);
}

TEST(CodecTest, RejectsOtherVersionsWhereverTheirKeyIs) {
  mp v2;
  v2.map(5).str("v").uint(2).str("id").bin(16).str("kind").str("a").str("from").str("b").str("ts").uint(1);
  auto r = decode(v2.b);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unsupported_version);
  // A v2 frame may use v1 keys differently; the version is still what gets reported.
  mp late;
  late.map(2).str("id").str("a v2 id is a string").str("v").uint(2);
  auto r2 = decode(late.b);
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error().code, errc::unsupported_version) << r2.error().describe();
  envelope e = minimal();
  e.v = 2;
  EXPECT_EQ(encode(e).error().code, errc::unsupported_version);
}

TEST(CodecTest, RejectsNestingAndSizeBombsWithoutAllocating) {
  // 100 000 nested one-element arrays under an unknown key: depth limit, no stack overflow.
  mp deep;
  deep.map(6).required().str("bomb");
  for (int i = 0; i < 100000; ++i) deep.raw({0x91});
  deep.nil();
  EXPECT_EQ(decode_code(deep.b), errc::limit_exceeded);
  // Declared sizes far beyond the frame fail at once.
  EXPECT_EQ(decode_code(mp{}.raw({0xdf, 0xff, 0xff, 0xff, 0xff}).b), errc::truncated);
  EXPECT_EQ(decode_code(mp{}.map(6).required().str("x").raw({0xdd, 0xff, 0xff, 0xff, 0xff}).b), errc::truncated);
  EXPECT_EQ(decode_code(mp{}.map(6).required().str("body").raw({0xc6, 0xff, 0xff, 0xff, 0xff}).b), errc::truncated);
  EXPECT_EQ(decode_code(mp{}.map(6).required().str("x").raw({0xdb, 0xff, 0xff, 0xff, 0xff}).b), errc::truncated);
  EXPECT_EQ(decode_code(mp{}.map(6).required().str("x").raw({0xc9, 0xff, 0xff, 0xff, 0xff, 1}).b), errc::truncated);
  // Header bombs.
  mp many;
  many.map(6).required().str("hdr").map(33);
  for (int i = 0; i < 33; ++i) many.str("h" + std::to_string(i)).str("v");
  EXPECT_EQ(decode_code(many.b), errc::limit_exceeded);
  mp heavy;
  heavy.map(6).required().str("hdr").map(9);
  for (int i = 0; i < 9; ++i) heavy.str("h" + std::to_string(i)).str(std::string(1000, 'v'));
  EXPECT_EQ(decode_code(heavy.b), errc::limit_exceeded);
}

TEST(CodecTest, ValidateRejectsWhatDecodeWouldReject) {
  auto code = [](envelope e) { auto r = validate(e); return r ? errc{} : r.error().code; };
  envelope e = minimal();
  EXPECT_EQ(code(e), errc{});
  e.kind.clear();
  EXPECT_EQ(code(e), errc::invalid_argument);
  e = minimal();
  e.kind.assign(65, 'k');
  EXPECT_EQ(code(e), errc::invalid_value);
  e = minimal();
  e.attempt = 0;
  EXPECT_EQ(code(e), errc::invalid_value);
  e = minimal();
  for (int i = 0; i < 33; ++i) e.hdr["h" + std::to_string(i)] = "v";
  EXPECT_EQ(code(e), errc::limit_exceeded);
  e = minimal();
  e.to = std::string("\xff");
  EXPECT_EQ(code(e), errc::invalid_value);
}

} // namespace
} // namespace shoal::transport

namespace shoal::transport {
namespace {

// new_message_id: unique, and later ids sort later (the time prefix), so SQL sinks keyed by
// message id append to their index instead of writing a random page per row.
TEST(MessageIdTest, FreshIdsAreUniqueAndSortByCreationTime) {
  std::vector<message_id> ids;
  ids.push_back(new_message_id());
  // Make ids until the millisecond prefix moves on (a condition, not a sleep).
  while (std::equal(ids.back().begin(), ids.back().begin() + 6, ids.front().begin()))
    ids.push_back(new_message_id());
  for (int i = 0; i < 1000; ++i)
    ids.push_back(new_message_id());
  EXPECT_LT(to_hex(ids.front()), to_hex(ids.back())) << "a later millisecond sorts later";
  std::vector<std::string> hex;
  for (const auto& id : ids)
    hex.push_back(to_hex(id));
  std::sort(hex.begin(), hex.end());
  EXPECT_EQ(std::adjacent_find(hex.begin(), hex.end()), hex.end()) << "no id made twice";
  // The prefix is the Unix time in ms: within a minute of now (not 0, not byte-swapped).
  std::uint64_t ms = 0;
  for (int i = 0; i < 6; ++i)
    ms = ms << 8 | ids.back()[static_cast<std::size_t>(i)];
  const auto now = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                  std::chrono::system_clock::now().time_since_epoch())
                                                  .count());
  EXPECT_LE(ms, now);
  EXPECT_GT(ms + 60'000, now);
}

} // namespace
} // namespace shoal::transport
