#include "storage/encoding.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace shoal::storage {
namespace {

using namespace std::chrono;

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const char c : bytes) {
    out += digits[static_cast<unsigned char>(c) >> 4];
    out += digits[static_cast<unsigned char>(c) & 15];
  }
  return out;
}

TEST(EncodingTest, Base64MatchesRfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {
      {"", ""},         {"f", "Zg=="},        {"fo", "Zm8="},        {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(plain), encoded);
    auto d = base64_decode(encoded);
    ASSERT_TRUE(d) << d.error().describe();
    EXPECT_EQ(*d, plain);
  }
}

TEST(EncodingTest, Base64RoundTripsEveryByte) {
  std::string all;
  for (int i = 0; i < 256; ++i)
    all += static_cast<char>(i);
  for (std::size_t n = 0; n <= all.size(); n += 37) {
    const std::string part = all.substr(0, n);
    auto d = base64_decode(base64_encode(part));
    ASSERT_TRUE(d) << d.error().describe();
    EXPECT_EQ(*d, part);
  }
}

TEST(EncodingTest, Base64RejectsMalformedInput) {
  for (const char* bad : {"Zg=", "Zg", "Z===", "Zm9v!A==", "Zg==Zg==", "Zm 9v", "=Zg="}) {
    auto d = base64_decode(bad);
    ASSERT_FALSE(d) << bad;
    EXPECT_EQ(d.error().code, errc::invalid_argument);
  }
}

// OpenSSL's EVP_DecodeBlock trims whitespace and reads '=' anywhere as zero bits: neither may
// get through, and no input crashes the decoder.
TEST(EncodingTest, Base64RejectsWhitespaceInnerPaddingAndJunkWithoutCrashing) {
  for (const char* bad : {"    Zm9v", "Zm9v    ", "Zm9v\n\n\n\n", "\tZm9vYg==\r\n\r\n", "Zm=v", "Zm9vYg=A"}) {
    auto d = base64_decode(bad);
    ASSERT_FALSE(d) << bad;
    EXPECT_EQ(d.error().code, errc::invalid_argument);
    EXPECT_NE(d.error().message.find("base64"), std::string::npos);
  }
  EXPECT_NE(base64_decode("Zm9v!A==").error().message.find("offset 4"), std::string::npos);
  std::string junk;
  for (int i = 0; i < 4096; ++i)
    junk += static_cast<char>((i * 131 + 7) & 0xff);
  EXPECT_FALSE(base64_decode(junk));
}

TEST(EncodingTest, Base64AppendAddsToWhatIsThere) {
  std::string out = "x:";
  base64_append(out, "foobar");
  base64_append(out, "f");
  EXPECT_EQ(out, "x:Zm9vYmFyZg==");
}

// The one UTF-8 validator: RFC 3629's rules, wherever the bad byte sits relative to the 16-byte
// ASCII skip, and the same answers as the code-point walk behind utf16_length.
TEST(EncodingTest, ValidUtf8FollowsRfc3629AtEveryOffset) {
  const std::pair<std::string, bool> cases[] = {
      {"", true},           {"plain ascii", true},      {"\xc3\xa9", true},       {"\xe2\x82\xac", true},
      {"\xf0\x9f\x98\x80", true}, {"\xf4\x8f\xbf\xbf", true}, {"\xc0\xaf", false},     {"\xc1\xbf", false},
      {"\xe0\x80\xaf", false}, {"\xed\xa0\x80", false},   {"\xf0\x80\x80\xaf", false}, {"\xf4\x90\x80\x80", false},
      {"\xf5\x80\x80\x80", false}, {"\x80", false},        {"\xc3", false},         {"\xe2\x82", false},
      {"\xff", false}};
  for (const auto& [text, ok] : cases)
    for (std::size_t pad = 0; pad < 40; ++pad) {
      const std::string before(pad, 'a');
      EXPECT_EQ(valid_utf8(before + text), ok) << pad;
      EXPECT_EQ(valid_utf8(before + text + std::string(pad, 'b')), ok) << pad;
      EXPECT_EQ(utf16_length(before + text).has_value(), ok) << pad;
    }
  std::uint32_t x = 12345;
  int valid = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string bytes;
    for (std::uint32_t n = (x >> 8) % 64; n > 0; --n) {
      x = x * 1103515245u + 12345u;
      bytes += static_cast<char>((x >> 16) % 17 == 0 ? 0x80 + (x >> 8) % 0x80 : 'a' + (x >> 8) % 26);
    }
    x = x * 1103515245u + 12345u;
    valid += valid_utf8(bytes);
    ASSERT_EQ(valid_utf8(bytes), utf16_length(bytes).has_value()) << i;
  }
  EXPECT_GT(valid, 0); // both answers occur
  EXPECT_LT(valid, 5000);
}

TEST(EncodingTest, UrlEncodeKeepsUnreservedOnly) {
  EXPECT_EQ(url_encode("aZ09-_.~"), "aZ09-_.~");
  EXPECT_EQ(url_encode("a b/c?d=e&f'g"), "a%20b%2Fc%3Fd%3De%26f%27g");
  EXPECT_EQ(url_encode("dir/a b.txt", /*keep_slash=*/true), "dir/a%20b.txt");
  EXPECT_EQ(url_encode("\xc3\xa9"), "%C3%A9"); // UTF-8 é
  EXPECT_EQ(url_encode("PartitionKey eq 'x'"), "PartitionKey%20eq%20%27x%27");
}

TEST(EncodingTest, UrlDecodeInvertsEncodeAndRejectsBadEscapes) {
  const std::string s = "a b/c?d=e&f'g+\xc3\xa9%";
  auto d = url_decode(url_encode(s));
  ASSERT_TRUE(d) << d.error().describe();
  EXPECT_EQ(*d, s);
  EXPECT_EQ(*url_decode("a+b%2f"), "a+b/");
  EXPECT_FALSE(url_decode("%"));
  EXPECT_FALSE(url_decode("%4"));
  EXPECT_FALSE(url_decode("%zz"));
}

TEST(EncodingTest, Md5AndHmacMatchKnownVectors) {
  EXPECT_EQ(hex(md5("")), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(hex(md5("abc")), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(base64_encode(md5("")), "1B2M2Y8AsgTpgAmY7PhCfg==");
  // RFC 4231 test case 2.
  EXPECT_EQ(hex(hmac_sha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(EncodingTest, HttpDateFormatsAndParsesRfc1123) {
  const sys_days day = year{2026} / November / 21;
  const auto t = system_clock::time_point{day + hours{11} + minutes{58} + seconds{31}};
  EXPECT_EQ(format_http_date(t), "Sat, 21 Nov 2026 11:58:31 GMT");
  EXPECT_EQ(format_http_date(t + milliseconds{999}), "Sat, 21 Nov 2026 11:58:31 GMT");
  EXPECT_EQ(format_http_date(system_clock::time_point{sys_days{year{1970} / January / 1}}),
            "Thu, 01 Jan 1970 00:00:00 GMT");
  auto p = parse_http_date("Sat, 21 Nov 2026 11:58:31 GMT");
  ASSERT_TRUE(p) << p.error().describe();
  EXPECT_EQ(*p, t);
  auto leap = parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT");
  ASSERT_TRUE(leap) << leap.error().describe();
  EXPECT_EQ(format_http_date(*leap), "Thu, 29 Feb 2024 23:59:59 GMT");
}

TEST(EncodingTest, DatesPastTheClockRangeSaturateInsteadOfWrapping) {
  // Azure reports "never expires" as 9999-12-31; system_clock (ns) ends in 2262.
  auto http = parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT");
  ASSERT_TRUE(http) << http.error().describe();
  EXPECT_EQ(*http, std::chrono::system_clock::time_point::max());
  auto iso = parse_iso8601("9999-12-31T23:59:59.9999999Z");
  ASSERT_TRUE(iso) << iso.error().describe();
  EXPECT_EQ(*iso, std::chrono::system_clock::time_point::max());
  auto before = parse_iso8601("2262-01-01T00:00:00Z");
  ASSERT_TRUE(before);
  EXPECT_LT(*before, std::chrono::system_clock::time_point::max());
}

TEST(EncodingTest, HttpDateRejectsOtherForms) {
  for (const char* bad : {"", "Sat, 21 Nov 2026 11:58:31", "Saturday, 21-Nov-26 11:58:31 GMT",
                          "Sat, 31 Nov 2026 11:58:31 GMT", "Sat, 21 Foo 2026 11:58:31 GMT",
                          "Sat, 21 Nov 2026 25:58:31 GMT", "Sat, 21 Nov 2026 11:58:31 UTC"})
    EXPECT_FALSE(parse_http_date(bad)) << bad;
}

TEST(EncodingTest, Iso8601HasSevenFractionalDigits) {
  const sys_days day = year{2024} / January / 2;
  const auto t = system_clock::time_point{day + hours{3} + minutes{4} + seconds{5}} +
                 duration_cast<system_clock::duration>(nanoseconds{123'456'700});
  EXPECT_EQ(format_iso8601(t), "2024-01-02T03:04:05.1234567Z");
  auto p = parse_iso8601("2024-01-02T03:04:05.1234567Z");
  ASSERT_TRUE(p) << p.error().describe();
  EXPECT_EQ(*p, t);
  EXPECT_EQ(format_iso8601(system_clock::time_point{day}), "2024-01-02T00:00:00.0000000Z");
}

TEST(EncodingTest, Iso8601TruncatesToTheDigitsAsked) {
  const auto t = system_clock::time_point{sys_days{year{2024} / January / 2} + hours{3} + minutes{4} +
                                          seconds{5}} +
                 duration_cast<system_clock::duration>(nanoseconds{987'654'300});
  EXPECT_EQ(format_iso8601(t, 0), "2024-01-02T03:04:05Z");
  EXPECT_EQ(format_iso8601(t, 3), "2024-01-02T03:04:05.987Z");
  EXPECT_EQ(format_iso8601(t, 7), "2024-01-02T03:04:05.9876543Z");
  EXPECT_EQ(format_iso8601(t, 12), "2024-01-02T03:04:05.9876543Z"); // clamped
  EXPECT_EQ(format_iso8601(t, -1), "2024-01-02T03:04:05Z");
  for (int d = 0; d <= 7; ++d)
    EXPECT_TRUE(parse_iso8601(format_iso8601(t, d))) << d;
}

TEST(EncodingTest, Iso8601ParsesShortFractionsAndOffsetZero) {
  const auto base = system_clock::time_point{sys_days{year{2024} / January / 2} + hours{3} +
                                             minutes{4} + seconds{5}};
  EXPECT_EQ(*parse_iso8601("2024-01-02T03:04:05Z"), base);
  EXPECT_EQ(*parse_iso8601("2024-01-02T03:04:05.5Z"), base + milliseconds{500});
  EXPECT_EQ(*parse_iso8601("2024-01-02T03:04:05.120+00:00"), base + milliseconds{120});
  for (const char* bad : {"2024-01-02", "2024-01-02T03:04:05", "2024-01-02T03:04:05.Z",
                          "2024-01-02T03:04:05.12345678Z", "2024-13-02T03:04:05Z",
                          "2024-01-02T03:04:05+01:00", "2024-01-02 03:04:05Z"})
    EXPECT_FALSE(parse_iso8601(bad)) << bad;
}

TEST(EncodingTest, AsciiHelpersFoldOnlyAsciiAndTrimOnlyWhiteSpace) {
  EXPECT_EQ(ascii_lower("Content-MD5 x-MS-Date"), "content-md5 x-ms-date");
  EXPECT_EQ(ascii_lower("\xC3\x89t\xC3\xA9"), "\xC3\x89t\xC3\xA9"); // UTF-8 bytes untouched
  EXPECT_TRUE(ascii_iequals("X-Ms-Version", "x-ms-version"));
  EXPECT_FALSE(ascii_iequals("x-ms-version", "x-ms-versio"));
  EXPECT_FALSE(ascii_iequals("\xC3\x89", "\xC3\xA9"));
  EXPECT_EQ(trim_space(" \t value with  inner space\r\n"), "value with  inner space");
  EXPECT_EQ(trim_space("\f\v"), "");
  EXPECT_EQ(trim_space(""), "");
  EXPECT_EQ(trim_space("x"), "x");
  EXPECT_EQ(single_quoted("c1"), "'c1'");
}

TEST(EncodingTest, ErrorFactoriesSayWhetherARequestWasSent) {
  const error limit = error::exceeded("too big");
  EXPECT_EQ(limit.code, errc::limit_exceeded);
  EXPECT_EQ(limit.attempts, 0);
  EXPECT_FALSE(limit.retryable);
  const error bad = error::malformed_response("no XML");
  EXPECT_EQ(bad.code, errc::bad_response);
  EXPECT_EQ(bad.attempts, 1);
  EXPECT_EQ(bad.message, "no XML");
}

} // namespace
} // namespace shoal::storage
