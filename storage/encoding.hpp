#pragma once
// Small encoders the storage clients share: base64, percent-encoding, digests and HTTP/ISO dates.

#include "storage/error.hpp"

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace shoal::storage {

/// Standard base64 (RFC 4648 §4) with padding, no line breaks.
std::string base64_encode(std::string_view bytes);
/// Decodes standard base64; whitespace is not allowed. Errors: invalid_argument.
[[nodiscard]] result<std::string> base64_decode(std::string_view text);

/// Percent-encodes everything except RFC 3986 unreserved characters (and '/' when `keep_slash`).
std::string url_encode(std::string_view s, bool keep_slash = false);
/// Decodes %XX escapes ('+' is kept as '+'). Errors: invalid_argument on a bad escape.
[[nodiscard]] result<std::string> url_decode(std::string_view s);
/// The value 0..15 of hex digit `c` (either case), or -1 when `c` is not one. Thread-safe (pure).
int hex_value(char c) noexcept;

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

/// ISO-8601 UTC with 7 fractional digits, e.g. "2024-01-02T03:04:05.1234567Z" (Edm.DateTime).
std::string format_iso8601(std::chrono::system_clock::time_point t);
/// Parses ISO-8601 UTC ("Z" or "+00:00"), 0-7 fractional digits. Errors: invalid_argument.
/// Dates past April 2262 give time_point::max().
[[nodiscard]] result<std::chrono::system_clock::time_point> parse_iso8601(std::string_view s);

} // namespace shoal::storage
