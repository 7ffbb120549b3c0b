#pragma once
// Small encoders the storage clients share: base64, percent-encoding, digests, HTTP/ISO dates
// and the ASCII text helpers of HTTP and connection-string parsing.

#include "storage/error.hpp"

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace shoal::storage {

/// `c` with A-Z mapped to a-z; every other byte unchanged (HTTP header names, RFC 9110 §5.1,
/// are ASCII and case-insensitive). Thread-safe (pure).
inline char ascii_lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
/// A copy of `s` with A-Z mapped to a-z (ascii_lower per byte). Thread-safe (pure).
std::string ascii_lower(std::string_view s);
/// True when `a` and `b` are equal ignoring ASCII case. Thread-safe (pure).
bool ascii_iequals(std::string_view a, std::string_view b) noexcept;
/// `s` without leading and trailing ASCII white space (space, tab, CR, LF, FF, VT). Thread-safe.
std::string_view trim_space(std::string_view s) noexcept;

/// `s` between single quotes, as error messages name a container, blob or queue. Thread-safe.
inline std::string single_quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

/// Standard base64 (RFC 4648 §4) with padding, no line breaks, through OpenSSL's
/// EVP_EncodeBlock: the one base64 of shoal. Thread-safe (pure).
std::string base64_encode(std::string_view bytes);
/// Appends base64_encode(bytes) to `out` (no copy of the encoded text). Thread-safe.
void base64_append(std::string& out, std::string_view bytes);
/// Decodes standard base64 (RFC 4648 §4, padding required, through EVP_DecodeBlock);
/// whitespace, a '=' before the end and characters outside the alphabet are refused.
/// Errors: invalid_argument naming the offset of the first bad character (or the bad length).
/// Thread-safe (pure).
[[nodiscard]] result<std::string> base64_decode(std::string_view text);

/// Percent-encodes everything except RFC 3986 unreserved characters (and '/' when `keep_slash`).
std::string url_encode(std::string_view s, bool keep_slash = false);
/// Decodes %XX escapes ('+' is kept as '+'). Errors: invalid_argument on a bad escape.
[[nodiscard]] result<std::string> url_decode(std::string_view s);
/// The value 0..15 of hex digit `c` (either case), or -1 when `c` is not one. Thread-safe (pure).
int hex_value(char c) noexcept;

/// Length (2 to 4) of the well-formed UTF-8 sequence starting at `p` (with *p >= 0x80) within
/// [p, e), or 0 when there is none: a continuation or invalid lead byte, a truncated sequence,
/// an overlong form, a surrogate (U+D800..DFFF) or a code point above U+10FFFF (RFC 3629 §4).
/// The one statement of those rules in shoal (transport/codec.cpp, below storage, keeps its
/// own copy). Thread-safe (pure).
inline std::size_t utf8_sequence_length(const char* p, const char* e) noexcept {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  const std::ptrdiff_t left = e - p;
  const unsigned c = u[0];
  auto cont = [&](int i) { return (u[i] & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF)
    return left >= 2 && cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !cont(1) || !cont(2))
      return 0;
    if ((c == 0xE0 && u[1] < 0xA0) || (c == 0xED && u[1] >= 0xA0))
      return 0; // overlong, surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !cont(1) || !cont(2) || !cont(3))
      return 0;
    if ((c == 0xF0 && u[1] < 0x90) || (c == 0xF4 && u[1] >= 0x90))
      return 0; // overlong, above U+10FFFF
    return 4;
  }
  return 0; // 0x80..0xC1 (continuation, overlong 2-byte lead), 0xF5..0xFF
}

/// The code point of the well-formed sequence of `n` bytes (utf8_sequence_length's answer,
/// 1 for ASCII) at `p`. Thread-safe (pure).
inline char32_t utf8_decode(const char* p, std::size_t n) noexcept {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  if (n == 1)
    return u[0];
  char32_t cp = u[0] & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (std::size_t i = 1; i < n; ++i)
    cp = (cp << 6) | (u[i] & 0x3F);
  return cp;
}

/// True when `s` is well-formed UTF-8 (utf8_sequence_length's rules). ASCII runs are skipped
/// 16 bytes per step (SSE2). The one UTF-8 validator of shoal above transport. Thread-safe.
bool valid_utf8(std::string_view s) noexcept;

/// UTF-16 code units of UTF-8 `s` (Azure counts key and string lengths in them), or nullopt if
/// `s` is not valid UTF-8 (bad lead or continuation bytes, overlong forms, surrogates,
/// code points above U+10FFFF). Thread-safe (pure).
std::optional<std::size_t> utf16_length(std::string_view s) noexcept;

/// Appends `s` as a JSON string literal, quotes included, escaping `"`, `\` and control
/// characters (RFC 8259 §7); other bytes are copied as they are, so `s` must be valid UTF-8.
/// Thread-safe.
void append_json_string(std::string& out, std::string_view s);

/// Raw 16-byte MD5 digest of `bytes` (for Content-MD5, base64 it).
std::string md5(std::string_view bytes);
/// Raw 32-byte HMAC-SHA256 of `msg` under `key`.
std::string hmac_sha256(std::string_view key, std::string_view msg);

/// RFC 1123 date in GMT, e.g. "Sat, 21 Nov 2026 11:58:31 GMT" (the x-ms-date form).
std::string format_http_date(std::chrono::system_clock::time_point t);
/// Parses the RFC 1123 form of an HTTP `Date` header. Errors: invalid_argument.
/// Dates past system_clock's range (April 2262; Azure uses 9999-12-31 for "never") give
/// time_point::max().
[[nodiscard]] result<std::chrono::system_clock::time_point> parse_http_date(std::string_view s);

/// ISO-8601 UTC (RFC 3339) with `fraction_digits` (0-7, clamped) fractional digits, truncated:
/// 7 gives the Edm.DateTime form "2024-01-02T03:04:05.1234567Z", 0 "2024-01-02T03:04:05Z" (what
/// the CLI prints). The one time formatter of shoal. Thread-safe (pure).
std::string format_iso8601(std::chrono::system_clock::time_point t, int fraction_digits = 7);
/// Parses ISO-8601 UTC ("Z" or "+00:00"), 0-7 fractional digits. Errors: invalid_argument.
/// Dates past April 2262 give time_point::max().
[[nodiscard]] result<std::chrono::system_clock::time_point> parse_iso8601(std::string_view s);

} // namespace shoal::storage
