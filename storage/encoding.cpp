#include "storage/encoding.hpp"

#include "storage/table_detail.hpp"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <ctime>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace shoal::storage {
namespace {

constexpr char hex_digits[] = "0123456789ABCDEF";

bool is_unreserved(unsigned char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

constexpr const char* day_names[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr const char* month_names[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// Parses exactly `n` decimal digits at s[pos..], advancing pos. -1 on failure.
int parse_digits(std::string_view s, std::size_t& pos, std::size_t n) noexcept {
  if (pos + n > s.size())
    return -1;
  int v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const char c = s[pos + i];
    if (c < '0' || c > '9')
      return -1;
    v = v * 10 + (c - '0');
  }
  pos += n;
  return v;
}

bool expect_char(std::string_view s, std::size_t& pos, char c) noexcept {
  if (pos < s.size() && s[pos] == c) {
    ++pos;
    return true;
  }
  return false;
}

// "hh:mm:ss" at s[pos] (two digits each, not range-checked: make_time does that); advances pos.
bool parse_hms(std::string_view s, std::size_t& pos, int& h, int& mi, int& sec) noexcept {
  h = parse_digits(s, pos, 2);
  if (h < 0 || !expect_char(s, pos, ':'))
    return false;
  mi = parse_digits(s, pos, 2);
  if (mi < 0 || !expect_char(s, pos, ':'))
    return false;
  sec = parse_digits(s, pos, 2);
  return sec >= 0;
}

// Validated civil date + time → time point (UTC). nullopt-like: returns false on a bad field.
bool make_time(int y, int mo, int d, int h, int mi, int sec,
               std::chrono::system_clock::time_point& out) noexcept {
  using namespace std::chrono;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60)
    return false;
  // system_clock counts nanoseconds in 64 bits: it ends in April 2262. Later dates (Azure
  // writes 9999-12-31 for "never expires") saturate to time_point::max() instead of wrapping.
  const auto secs = sys_seconds{sys_days{ymd}} + hours{h} + minutes{mi} + seconds{sec};
  if (secs >= time_point_cast<seconds>(system_clock::time_point::max())) {
    out = system_clock::time_point::max();
    return true;
  }
  out = time_point_cast<system_clock::duration>(secs);
  return true;
}

struct civil_time {
  int year, month, day, hour, minute, second, weekday; // weekday 0 = Sunday
  std::int64_t sub_second_ns;                          // [0, 1e9)
};

civil_time to_civil(std::chrono::system_clock::time_point t) noexcept {
  using namespace std::chrono;
  const auto ns = time_point_cast<nanoseconds>(t);
  const auto day_point = floor<days>(ns);
  const year_month_day ymd{day_point};
  const hh_mm_ss hms{ns - day_point};
  const auto secs_floor = floor<seconds>(ns - day_point);
  return civil_time{static_cast<int>(ymd.year()),
                    static_cast<int>(static_cast<unsigned>(ymd.month())),
                    static_cast<int>(static_cast<unsigned>(ymd.day())),
                    static_cast<int>(hms.hours().count()),
                    static_cast<int>(hms.minutes().count()),
                    static_cast<int>(hms.seconds().count()),
                    static_cast<int>(weekday{day_point}.c_encoding()),
                    (ns - day_point - secs_floor).count()};
}

} // namespace

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    c = ascii_lower(c);
  return out;
}

bool ascii_iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i]))
      return false;
  return true;
}

std::string_view trim_space(std::string_view s) noexcept {
  constexpr std::string_view space = " \t\r\n\f\v";
  const auto b = s.find_first_not_of(space);
  if (b == std::string_view::npos)
    return {};
  return s.substr(b, s.find_last_not_of(space) - b + 1);
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

void base64_append(std::string& out, std::string_view bytes) {
  // EVP_EncodeBlock takes an int length: whole 3-byte groups of at most 768 MiB at a time.
  constexpr std::size_t chunk = std::size_t{3} << 28;
  const std::size_t start = out.size();
  out.resize(start + (bytes.size() + 2) / 3 * 4);
  auto* o = reinterpret_cast<unsigned char*>(out.data() + start);
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  for (std::size_t i = 0; i < bytes.size(); i += chunk) {
    const std::size_t n = std::min(chunk, bytes.size() - i);
    o += ::EVP_EncodeBlock(o, p + i, static_cast<int>(n));
  }
}

std::string base64_encode(std::string_view bytes) {
  std::string out;
  base64_append(out, bytes);
  return out;
}

result<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0)
    return std::unexpected(error::invalid("base64: length is not a multiple of 4"));
  std::size_t pad = 0;
  if (!text.empty() && text.back() == '=')
    pad = (text.size() >= 2 && text[text.size() - 2] == '=') ? 2 : 1;
  // EVP_DecodeBlock reads '=' as zero bits anywhere and trims surrounding whitespace: the first
  // is refused here, the second shows as a shorter result below.
  if (const auto eq = text.find('='); eq < text.size() - pad)
    return std::unexpected(error::invalid("base64: invalid character at offset " + std::to_string(eq)));
  constexpr std::size_t chunk = std::size_t{4} << 28; // whole 4-character groups, 1 GiB
  std::string out;
  out.resize(text.size() / 4 * 3);
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  for (std::size_t i = 0; i < text.size(); i += chunk) {
    const std::size_t n = std::min(chunk, text.size() - i);
    const int got = ::EVP_DecodeBlock(o + i / 4 * 3, p + i, static_cast<int>(n));
    if (got < 0 || static_cast<std::size_t>(got) != n / 4 * 3) {
      std::size_t bad = i;
      while (bad < i + n && (std::isalnum(static_cast<unsigned char>(text[bad])) || text[bad] == '+' ||
                             text[bad] == '/' || text[bad] == '='))
        ++bad;
      return std::unexpected(error::invalid("base64: invalid character at offset " + std::to_string(bad)));
    }
  }
  out.resize(out.size() - pad);
  return out;
}

std::string url_encode(std::string_view s, bool keep_slash) {
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (is_unreserved(c) || (keep_slash && c == '/')) {
      out += ch;
    } else {
      out += '%';
      out += hex_digits[c >> 4];
      out += hex_digits[c & 15];
    }
  }
  return out;
}

result<std::string> url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    const int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
    const int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0)
      return std::unexpected(
          error::invalid("url_decode: bad percent escape at offset " + std::to_string(i)));
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string md5(std::string_view bytes) {
  std::string out(16, '\0');
  unsigned int len = 0;
  // EVP_Digest is the non-deprecated OpenSSL 3 one-shot; it cannot fail for MD5 in practice.
  if (EVP_Digest(bytes.data(), bytes.size(), reinterpret_cast<unsigned char*>(out.data()), &len,
                 EVP_md5(), nullptr) != 1 ||
      len != 16)
    out.clear();
  return out;
}

std::string hmac_sha256(std::string_view key, std::string_view msg) {
  std::string out(32, '\0');
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
           reinterpret_cast<unsigned char*>(out.data()), &len) == nullptr ||
      len != 32)
    out.clear();
  return out;
}

std::string format_http_date(std::chrono::system_clock::time_point t) {
  const civil_time c = to_civil(t);
  char buf[40];
  const int n = std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                              day_names[c.weekday], c.day, month_names[c.month - 1], c.year,
                              c.hour, c.minute, c.second);
  return std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
}

result<std::chrono::system_clock::time_point> parse_http_date(std::string_view s) {
  // "Sat, 21 Nov 2026 11:58:31 GMT" (RFC 7231 IMF-fixdate, the form Azure sends).
  const auto bad = [&] {
    return std::unexpected(error::invalid("not an RFC 1123 HTTP date: '" + std::string(s) + "'"));
  };
  std::size_t pos = 0;
  if (s.size() < 29)
    return bad();
  bool day_ok = false;
  for (const char* d : day_names)
    day_ok = day_ok || s.substr(0, 3) == d;
  pos = 3;
  if (!day_ok || !expect_char(s, pos, ',') || !expect_char(s, pos, ' '))
    return bad();
  const int day = parse_digits(s, pos, 2);
  if (day < 0 || !expect_char(s, pos, ' ') || pos + 3 > s.size())
    return bad();
  int month = 0;
  for (int m = 0; m < 12; ++m)
    if (s.substr(pos, 3) == month_names[m])
      month = m + 1;
  pos += 3;
  if (month == 0 || !expect_char(s, pos, ' '))
    return bad();
  const int year = parse_digits(s, pos, 4);
  int h = 0, mi = 0, sec = 0;
  if (year < 0 || !expect_char(s, pos, ' ') || !parse_hms(s, pos, h, mi, sec) || s.substr(pos) != " GMT")
    return bad();
  std::chrono::system_clock::time_point out;
  if (!make_time(year, month, day, h, mi, sec, out))
    return bad();
  return out;
}

std::string format_iso8601(std::chrono::system_clock::time_point t, int fraction_digits) {
  const civil_time c = to_civil(t);
  char buf[48];
  int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d", c.year, c.month, c.day,
                        c.hour, c.minute, c.second);
  const int digits = std::clamp(fraction_digits, 0, 7);
  if (n > 0 && digits > 0) {
    // Edm.DateTime carries 100 ns ticks: at most 7 fractional digits, truncated.
    long long frac = static_cast<long long>(c.sub_second_ns / 100);
    for (int d = 7; d > digits; --d)
      frac /= 10;
    n += std::snprintf(buf + n, sizeof buf - static_cast<std::size_t>(n), ".%0*lld", digits, frac);
  }
  if (n > 0 && static_cast<std::size_t>(n) + 1 < sizeof buf)
    buf[n++] = 'Z';
  return std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
}

result<std::chrono::system_clock::time_point> parse_iso8601(std::string_view s) {
  const auto bad = [&] {
    return std::unexpected(error::invalid("not an ISO-8601 UTC time: '" + std::string(s) + "'"));
  };
  std::size_t pos = 0;
  const int year = parse_digits(s, pos, 4);
  if (year < 0 || !expect_char(s, pos, '-'))
    return bad();
  const int month = parse_digits(s, pos, 2);
  if (month < 0 || !expect_char(s, pos, '-'))
    return bad();
  const int day = parse_digits(s, pos, 2);
  int h = 0, mi = 0, sec = 0;
  if (day < 0 || !expect_char(s, pos, 'T') || !parse_hms(s, pos, h, mi, sec))
    return bad();
  std::int64_t frac_ns = 0;
  if (expect_char(s, pos, '.')) {
    std::size_t digits = 0;
    std::int64_t scale = 100'000'000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (++digits > 7)
        return bad();
      frac_ns += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (digits == 0)
      return bad();
  }
  const std::string_view zone = s.substr(pos);
  if (zone != "Z" && zone != "+00:00")
    return bad();
  std::chrono::system_clock::time_point out;
  if (!make_time(year, month, day, h, mi, sec, out))
    return bad();
  if (out == std::chrono::system_clock::time_point::max())
    return out;
  return out + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                   std::chrono::nanoseconds{frac_ns});
}

bool valid_utf8(std::string_view s) noexcept {
  const char* p = s.data();
  const char* const e = p + s.size();
  while (p < e) {
#if defined(__SSE2__)
    // ASCII runs: 16 bytes per step while no byte has its high bit set.
    while (e - p >= 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const unsigned m = static_cast<unsigned>(_mm_movemask_epi8(v));
      if (m != 0) {
        p += __builtin_ctz(m);
        break;
      }
      p += 16;
    }
    if (p == e)
      break;
#endif
    if (static_cast<unsigned char>(*p) < 0x80) {
      ++p;
      continue;
    }
    const std::size_t n = utf8_sequence_length(p, e);
    if (n == 0)
      return false;
    p += n;
  }
  return true;
}

std::optional<std::size_t> utf16_length(std::string_view s) noexcept {
  std::size_t units = 0;
  if (!detail::for_each_code_point(s, [&](char32_t cp) { units += cp > 0xFFFF ? 2 : 1; }))
    return std::nullopt;
  return units;
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0; // bytes since the last escape, appended in one go
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    case '\b': out += "\\b"; break;
    case '\f': out += "\\f"; break;
    default:
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

} // namespace shoal::storage
