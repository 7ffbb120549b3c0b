// Conformance of the encoder/decoder with the examples of transport/ENVELOPE.md §9.

#include "transport/codec.hpp"
#include "tests/support/azurite.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace shoal::transport {
namespace {

std::string hex(const std::vector<std::uint8_t>& b) {
  static constexpr char d[] = "0123456789abcdef";
  std::string out;
  for (auto x : b) { out += d[x >> 4]; out += d[x & 15]; }
  return out;
}

std::vector<std::uint8_t> unhex(std::string_view h) {
  std::vector<std::uint8_t> out;
  auto val = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out.push_back(static_cast<std::uint8_t>(val(h[i]) * 16 + val(h[i + 1])));
  return out;
}

envelope example_a() {
  envelope e;
  for (int i = 0; i < 16; ++i) e.id[i] = static_cast<std::uint8_t>(i);
  e.kind = "ctl.heartbeat";
  e.from = "worker@worker-1@host-a";
  e.ts_ns = 1763700000000000000ull;
  return e;
}

envelope example_b() {
  envelope e = example_a();
  e.kind = "persist.record";
  e.from = "gateway@supervisor@host-a";
  e.to = "persistor@persistor-1@host-b";
  e.corr.emplace();
  for (int i = 0; i < 16; ++i) (*e.corr)[i] = static_cast<std::uint8_t>(0xf0 + i);
  e.deadline_ns = e.ts_ns + 5'000'000'000ull;
  e.attempt = 2;
  e.gen = 7;
  e.hdr = {{"ct", "application/json"}};
  const std::string body = "{\"id\":1}";
  e.body.assign(body.begin(), body.end());
  return e;
}

// The hex of §9, as printed in ENVELOPE.md (joined lines).
const char* const example_a_hex =
    "85a17601a26964c410000102030405060708090a0b0c0d0e0fa46b696e64ad63"
    "746c2e686561727462656174a466726f6db6776f726b657240776f726b65722d"
    "3140686f73742d61a27473cf1879ebce365b4000";
const char* const example_b_hex =
    "8ca17601a26964c410000102030405060708090a0b0c0d0e0fa46b696e64ae70"
    "6572736973742e7265636f7264a466726f6db967617465776179407375706572"
    "7669736f7240686f73742d61a2746fbc706572736973746f7240706572736973"
    "746f722d3140686f73742d62a4636f7272c410f0f1f2f3f4f5f6f7f8f9fafbfc"
    "fdfeffa27473cf1879ebce365b4000a8646561646c696e65cf1879ebcf606132"
    "00a7617474656d707402a367656e07a368647281a26374b06170706c69636174"
    "696f6e2f6a736f6ea4626f6479c4087b226964223a317d";

TEST(EnvelopeSpecTest, EncoderProducesTheSpecExamplesByteForByte) {
  auto a = encode(example_a());
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(hex(*a), example_a_hex);
  EXPECT_EQ(a->size(), 84u);
  auto b = encode(example_b());
  ASSERT_TRUE(b) << b.error().describe();
  EXPECT_EQ(hex(*b), example_b_hex);
  EXPECT_EQ(b->size(), 215u);
}

TEST(EnvelopeSpecTest, DecoderReadsTheSpecExamples) {
  auto a = decode(unhex(example_a_hex));
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(*a, example_a());
  auto b = decode(unhex(example_b_hex));
  ASSERT_TRUE(b) << b.error().describe();
  EXPECT_EQ(*b, example_b());
}

TEST(EnvelopeSpecTest, SpecDocumentShowsTheSameHex) {
  // The source tree as the test support knows it (not __FILE__: ccache's base_dir makes that
  // relative to the build folder, and the test then skipped itself without a word).
  const auto doc = std::filesystem::path(shoal::tests::source_dir()) / "transport" / "ENVELOPE.md";
  std::ifstream in(doc);
  ASSERT_TRUE(in) << "cannot read " << doc;
  std::stringstream ss;
  ss << in.rdbuf();
  // Join the hex code blocks and look for each example's hex in them.
  std::string joined, line;
  bool in_hex = false;
  std::istringstream lines(ss.str());
  while (std::getline(lines, line)) {
    if (line == "```hex") { in_hex = true; continue; }
    if (line == "```") { in_hex = false; joined += '|'; continue; }
    if (in_hex) joined += line;
  }
  EXPECT_NE(joined.find(std::string(example_a_hex) + "|"), std::string::npos) << "Example A differs";
  EXPECT_NE(joined.find(std::string(example_b_hex) + "|"), std::string::npos) << "Example B differs";
}

TEST(EnvelopeSpecTest, ExampleCIsAcceptedButNotCanonical) {
  // {"ts": int64 5, "v": uint64 1, "id": bin16, "kind": "a.b", "from": "x@y@z", "to": nil,
  //  "future": [1, 2]}
  std::vector<std::uint8_t> c = unhex(
      "87a27473d30000000000000005a176cf0000000000000001a26964c410"
      "00000000000000000000000000000000a46b696e64a3612e62a466726f6da5784079407a"
      "a2746fc0a6667574757265920102");
  auto r = decode(c);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->ts_ns, 5u);
  EXPECT_FALSE(r->to);
  auto canonical = encode(*r);
  ASSERT_TRUE(canonical);
  EXPECT_LT(canonical->size(), c.size());
  EXPECT_EQ(*decode(*canonical), *r);
}

} // namespace
} // namespace shoal::transport
