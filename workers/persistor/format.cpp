#include "workers/persistor/format.hpp"

#include "storage/encoding.hpp"
#include "workers/json_limits.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace shoal::workers::persistor {
namespace {

// -- byte scans -----------------------------------------------------------------------------------
// Formatting a record is a scan for the few bytes that need work: in a JSON string, '"', '\\',
// control characters (< 0x20) and the lead bytes of multi-byte UTF-8 (>= 0x80, checked). Runs of
// other bytes are skipped 32 bytes per step (SSE2, part of every x86-64) and copied with one
// append; there is no second pass over the payload.

constexpr bool special(unsigned char c) { return c < 0x20 || c >= 0x80 || c == '"' || c == '\\'; }

// The first special byte in [p, e), or e. O(bytes), no allocation.
inline const char* skip_plain(const char* p, const char* e) {
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i bslash = _mm_set1_epi8('\\');
  const __m128i space = _mm_set1_epi8(0x20);
  // Signed compare: bytes >= 0x80 are negative, so "< 0x20" catches them with the controls.
  auto mask = [&](const char* q) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    return _mm_or_si128(_mm_cmplt_epi8(v, space),
                        _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)));
  };
  while (e - p >= 32) {
    const unsigned lo = static_cast<unsigned>(_mm_movemask_epi8(mask(p)));
    const unsigned hi = static_cast<unsigned>(_mm_movemask_epi8(mask(p + 16)));
    if ((lo | hi) != 0)
      return p + (lo != 0 ? __builtin_ctz(lo) : 16 + __builtin_ctz(hi));
    p += 32;
  }
  if (e - p >= 16) {
    const unsigned m = static_cast<unsigned>(_mm_movemask_epi8(mask(p)));
    if (m != 0)
      return p + __builtin_ctz(m);
    p += 16;
  }
#endif
  while (p < e && !special(static_cast<unsigned char>(*p)))
    ++p;
  return p;
}

// UTF-8: storage::utf8_sequence_length's rules (storage/encoding.hpp), storage::valid_utf8.
using storage::utf8_sequence_length;
using storage::valid_utf8;

// The JSON escape of a quote, backslash or control character (storage::append_json_string's).
inline void append_escape(std::string& out, unsigned char c) {
  static constexpr char hex[] = "0123456789abcdef";
  switch (c) {
  case '"': out.append("\\\"", 2); break;
  case '\\': out.append("\\\\", 2); break;
  case '\n': out.append("\\n", 2); break;
  case '\r': out.append("\\r", 2); break;
  case '\t': out.append("\\t", 2); break;
  case '\b': out.append("\\b", 2); break;
  case '\f': out.append("\\f", 2); break;
  default: {
    const char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
    out.append(u, 6);
  }
  }
}

// Appends `s` as a JSON string literal, byte for byte what storage::append_json_string writes.
// With Check, `s` is also checked to be well-formed UTF-8 in the same pass; if it is not, `out`
// is restored to its size before the call and false is returned. One pass, no allocation beyond
// the growth of `out`.
template <bool Check> bool append_string(std::string& out, std::string_view s) {
  const std::size_t start = out.size();
  out.push_back('"');
  const char* p = s.data();
  const char* const e = p + s.size();
  const char* run = p; // start of the bytes not yet appended
  while ((p = skip_plain(p, e)) != e) {
    const auto c = static_cast<unsigned char>(*p);
    if (c >= 0x80) {
      if constexpr (Check) {
        const std::size_t n = utf8_sequence_length(p, e);
        if (n == 0) {
          out.resize(start);
          return false;
        }
        p += n;
      } else {
        ++p;
      }
      continue;
    }
    out.append(run, static_cast<std::size_t>(p - run));
    append_escape(out, c);
    run = ++p;
  }
  out.append(run, static_cast<std::size_t>(e - run));
  out.push_back('"');
  return true;
}

void append_json_string(std::string& out, std::string_view s) { append_string<false>(out, s); }

// Appends base64(bytes) as a JSON string (its alphabet needs no escapes).
void append_base64_string(std::string& out, std::string_view bytes) {
  out += '"';
  storage::base64_append(out, bytes);
  out += '"';
}

// -- times ----------------------------------------------------------------------------------------

// format_time's text through <chrono> and snprintf: the reference, used for years outside
// 0..9999 (where the text is not 24 characters).
std::string format_time_slow(unix_ms t) {
  using namespace std::chrono;
  const sys_time<milliseconds> tp{milliseconds{t}};
  const auto dp = floor<days>(tp);
  const year_month_day ymd{dp};
  const hh_mm_ss hms{tp - dp};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02ld.%03ldZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<long>(hms.hours().count()), static_cast<long>(hms.minutes().count()),
                static_cast<long>(hms.seconds().count()), static_cast<long>(hms.subseconds().count()));
  return buf;
}

// Writes format_time(t) into buf[0, 24) and returns true when its year is 0..9999 (then the
// text has exactly 24 characters); false otherwise. Integer arithmetic only (days to civil date:
// H. Hinnant's algorithm), ~20 ns instead of ~300 for the snprintf path.
bool time_text(unix_ms t, char* buf) {
  constexpr std::int64_t day_ms = 86'400'000;
  std::int64_t days = t / day_ms;
  std::int64_t ms = t % day_ms;
  if (ms < 0) {
    ms += day_ms;
    --days;
  }
  const std::int64_t z = days + 719'468;
  const std::int64_t era = (z >= 0 ? z : z - 146'096) / 146'097;
  const auto doe = static_cast<unsigned>(z - era * 146'097);                   // [0, 146096]
  const unsigned yoe = (doe - doe / 1460 + doe / 36'524 - doe / 146'096) / 365; // [0, 399]
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                // [0, 365]
  const unsigned mp = (5 * doy + 2) / 153;                                     // [0, 11]
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;                             // [1, 31]
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;                                // [1, 12]
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
  if (y < 0 || y > 9999)
    return false;
  const auto two = [&](int at, unsigned v) {
    buf[at] = static_cast<char>('0' + v / 10);
    buf[at + 1] = static_cast<char>('0' + v % 10);
  };
  const auto yy = static_cast<unsigned>(y);
  two(0, yy / 100);
  two(2, yy % 100);
  buf[4] = '-';
  two(5, m);
  buf[7] = '-';
  two(8, d);
  buf[10] = 'T';
  const auto msu = static_cast<unsigned>(ms);
  two(11, msu / 3'600'000);
  buf[13] = ':';
  two(14, msu / 60'000 % 60);
  buf[16] = ':';
  two(17, msu / 1000 % 60);
  buf[19] = '.';
  buf[20] = static_cast<char>('0' + msu % 1000 / 100);
  two(21, msu % 100);
  buf[23] = 'Z';
  return true;
}

// Appends format_time(t) as a JSON string.
void append_time_string(std::string& out, unix_ms t) {
  char buf[26];
  if (!time_text(t, buf + 1)) {
    append_json_string(out, format_time_slow(t));
    return;
  }
  buf[0] = '"';
  buf[25] = '"';
  out.append(buf, sizeof buf);
}

bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size())
    return false;
  int v = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i])))
      return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

std::optional<unix_ms> civil(int y, int mo, int d, int h, int mi, int se, int ms) {
  using namespace std::chrono;
  year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || se > 60)
    return std::nullopt;
  auto days = sys_days(ymd).time_since_epoch().count();
  return ((static_cast<unix_ms>(days) * 24 + h) * 60 + mi) * 60'000 +
         static_cast<unix_ms>(se) * 1000 + ms;
}

// Unix seconds (|v| < 1e11) or milliseconds, as milliseconds; nullopt when not finite or beyond
// ±9.2e18 ms, where the conversion to an integer would be undefined.
std::optional<unix_ms> unix_ms_of(double v) {
  const double ms = (v >= 1e11 || v <= -1e11) ? v : v * 1000.0;
  if (!(ms > -9.2e18 && ms < 9.2e18))
    return std::nullopt;
  return static_cast<unix_ms>(ms);
}

// Date "YYYY-MM-DD" or "YYYY/MM/DD", then optional [T or space] HH:MM[:SS[.fff]] [Z|±hh:mm].
std::optional<unix_ms> parse_calendar(std::string_view s) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0, ms = 0;
  if (s.size() < 10 || !digits(s, 0, 4, y) || !digits(s, 5, 2, mo) || !digits(s, 8, 2, d))
    return std::nullopt;
  const char sep = s[4];
  if ((sep != '-' && sep != '/') || s[7] != sep)
    return std::nullopt;
  std::size_t p = 10;
  unix_ms offset_ms = 0;
  if (p < s.size()) {
    if (s[p] != 'T' && s[p] != 't' && s[p] != ' ')
      return std::nullopt;
    ++p;
    if (!digits(s, p, 2, h) || p + 2 >= s.size() || s[p + 2] != ':' || !digits(s, p + 3, 2, mi))
      return std::nullopt;
    p += 5;
    if (p < s.size() && s[p] == ':') {
      if (!digits(s, p + 1, 2, se))
        return std::nullopt;
      p += 3;
      if (p < s.size() && (s[p] == '.' || s[p] == ',')) {
        ++p;
        int scale = 100, n = 0;
        while (p < s.size() && std::isdigit(static_cast<unsigned char>(s[p]))) {
          ms += (s[p] - '0') * scale;
          scale /= 10;
          ++p;
          ++n;
        }
        if (n == 0)
          return std::nullopt;
      }
    }
    if (p < s.size()) {
      if (s[p] == 'Z' || s[p] == 'z') {
        ++p;
      } else if (s[p] == '+' || s[p] == '-') {
        int oh = 0, om = 0;
        const int sign = s[p] == '-' ? -1 : 1;
        if (!digits(s, p + 1, 2, oh))
          return std::nullopt;
        std::size_t q = p + 3;
        if (q < s.size() && s[q] == ':')
          ++q;
        if (!digits(s, q, 2, om))
          return std::nullopt;
        p = q + 2;
        offset_ms = sign * (static_cast<unix_ms>(oh) * 60 + om) * 60'000;
      }
    }
    if (p != s.size())
      return std::nullopt;
  }
  auto t = civil(y, mo, d, h, mi, se, ms);
  if (!t)
    return std::nullopt;
  return *t - offset_ms;
}


} // namespace

result<record_format> parse_format(std::string_view s) {
  if (s == "persistor-v1")
    return record_format::persistor_v1;
  if (s == "ndjson")
    return record_format::ndjson;
  return fail(errc::invalid_argument,
              "unknown format '" + std::string(s) + "' (persistor-v1 or ndjson)");
}

std::string_view to_string(record_format f) noexcept {
  return f == record_format::ndjson ? "ndjson" : "persistor-v1";
}

result<unix_ms> parse_event_time(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  if (text.empty())
    return fail(errc::parse, "empty event time");
  bool numeric = true;
  for (std::size_t i = 0; i < text.size(); ++i)
    numeric = numeric && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.' ||
                          (i == 0 && text[i] == '-'));
  if (numeric) {
    double v = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || ptr != text.data() + text.size())
      return fail(errc::parse, "event time '" + std::string(text) + "' is not a number");
    if (auto ms = unix_ms_of(v))
      return *ms;
    return fail(errc::parse, "event time '" + std::string(text.substr(0, 64)) + "' is out of range");
  }
  if (auto t = parse_calendar(text))
    return *t;
  return fail(errc::parse, "event time '" + std::string(text.substr(0, 64)) +
                               "' is not ISO-8601, YYYY/MM/DD HH:MM or Unix seconds/ms");
}

std::string format_time(unix_ms t) {
  char buf[24];
  if (!time_text(t, buf))
    return format_time_slow(t);
  return std::string(buf, sizeof buf);
}

result<partition_depth> parse_partition_depth(std::string_view s) {
  if (s == "day")
    return partition_depth::day;
  if (s == "hour")
    return partition_depth::hour;
  if (s == "month")
    return partition_depth::month;
  return fail(errc::invalid_argument, "unknown partition '" + std::string(s) + "' (day, hour or month)");
}

std::string_view to_string(partition_depth d) noexcept {
  return d == partition_depth::hour ? "hour" : d == partition_depth::month ? "month" : "day";
}

std::string partition_of(unix_ms t, partition_depth depth) {
  char buf[24];
  std::string s;
  if (time_text(t, buf))
    s.assign(buf, sizeof buf);
  else
    s = format_time_slow(t); // YYYY-MM-DDTHH:... (or a year of other width)
  std::string out;
  out.reserve(13);
  out.append(s, 0, 4).append(1, '/').append(s, 5, 2);
  if (depth != partition_depth::month)
    out.append(1, '/').append(s, 8, 2);
  if (depth == partition_depth::hour)
    out.append(1, '/').append(s, 11, 2);
  return out;
}

std::int64_t partition_period(unix_ms t, partition_depth depth) noexcept {
  constexpr std::int64_t hour_ms = 3'600'000, day_ms = 86'400'000;
  const auto floor_div = [](std::int64_t a, std::int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); };
  if (depth == partition_depth::hour)
    return floor_div(t, hour_ms);
  const std::int64_t days = floor_div(t, day_ms);
  if (depth == partition_depth::day)
    return days;
  // Days to the civil year and month (H. Hinnant's algorithm, as time_text): year * 12 + month.
  const std::int64_t z = days + 719'468;
  const std::int64_t era = (z >= 0 ? z : z - 146'096) / 146'097;
  const auto doe = static_cast<unsigned>(z - era * 146'097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36'524 - doe / 146'096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
  return y * 12 + static_cast<std::int64_t>(m) - 1;
}

std::string partition_date(std::string_view p) {
  if (p.size() < 7 || p[4] != '/')
    return {};
  std::string d;
  d.reserve(10);
  d.append(p.substr(0, 4)).append(1, '-').append(p.substr(5, 2)).append(1, '-');
  if (p.size() >= 10 && p[7] == '/')
    d.append(p.substr(8, 2));
  else
    d.append("01"); // a month partition: its first day
  return d;
}

std::string_view partition_of_blob(std::string_view name) noexcept {
  const auto first = name.find('/');
  const auto last = name.rfind('/');
  if (first == std::string_view::npos || last == first)
    return {};
  return name.substr(first + 1, last - first - 1);
}

result<void> validate_dest(std::string_view dest) {
  if (dest.empty() || dest.size() > 128 || dest == "." || dest == "..")
    return fail(errc::invalid_argument, "dest '" + std::string(dest.substr(0, 128)) +
                                            "' must be 1 to 128 characters, not '.' or '..'");
  for (char ch : dest)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.')
      return fail(errc::invalid_argument,
                  "dest '" + std::string(dest) + "' may hold only letters, digits, '-', '_' and '.'");
  return {};
}

std::string blob_name(std::string_view dest, std::string_view partition, std::string_view host,
                      std::string_view persistor, std::uint64_t seq) {
  char num[24];
  std::snprintf(num, sizeof num, "%08llu", static_cast<unsigned long long>(seq));
  std::string out;
  out.reserve(dest.size() + partition.size() + host.size() + persistor.size() + 24);
  out.append(dest).append(1, '/').append(partition).append(1, '/').append(host).append(1, '-');
  out.append(persistor).append(1, '-').append(num).append(".json");
  return out;
}

namespace {

// One-pass strict JSON checker (RFC 8259), no allocation: O(bytes), nesting in a fixed stack.
struct json_checker {
  const char* p;
  const char* e;
  bool newline = false; // a CR or LF was seen (only possible as whitespace)

  static bool digit(char c) { return c >= '0' && c <= '9'; }
  void ws() {
    while (p < e) {
      const char c = *p;
      if (c == ' ' || c == '\t')
        ++p;
      else if (c == '\n' || c == '\r') {
        newline = true;
        ++p;
      } else
        break;
    }
  }
  bool literal(std::string_view w) {
    if (static_cast<std::size_t>(e - p) < w.size() || std::string_view(p, w.size()) != w)
      return false;
    p += w.size();
    return true;
  }
  bool hex4(unsigned& v) {
    if (e - p < 4)
      return false;
    v = 0;
    for (int i = 0; i < 4; ++i, ++p) {
      const char c = *p;
      v <<= 4;
      if (digit(c))
        v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<unsigned>(c - 'A' + 10);
      else
        return false;
    }
    return true;
  }
  // A string at '"': escapes checked, control characters refused, multi-byte UTF-8 checked to be
  // well-formed (outside strings any byte >= 0x80 is refused by the grammar), so an accepted
  // text is valid UTF-8 as a whole. Runs of plain bytes are skipped by skip_plain.
  bool string() {
    ++p;
    while ((p = skip_plain(p, e)) < e) {
      const auto c = static_cast<unsigned char>(*p);
      if (c == '"') {
        ++p;
        return true;
      }
      if (c >= 0x80) {
        const std::size_t n = utf8_sequence_length(p, e);
        if (n == 0)
          return false;
        p += n;
        continue;
      }
      if (c != '\\')
        return false; // a control character
      if (++p >= e)
        return false;
      switch (*p++) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        break;
      case 'u': {
        unsigned v = 0;
        if (!hex4(v))
          return false;
        if (v >= 0xDC00 && v <= 0xDFFF)
          return false; // a low surrogate must follow a high one
        if (v >= 0xD800 && v <= 0xDBFF) {
          unsigned w = 0;
          if (e - p < 2 || p[0] != '\\' || p[1] != 'u')
            return false;
          p += 2;
          if (!hex4(w) || w < 0xDC00 || w > 0xDFFF)
            return false;
        }
        break;
      }
      default:
        return false;
      }
    }
    return false;
  }
  bool number() {
    const char* const start = p;
    if (*p == '-')
      ++p;
    if (p >= e)
      return false;
    const char* const int_begin = p;
    if (*p == '0')
      ++p;
    else if (*p >= '1' && *p <= '9')
      while (p < e && digit(*p))
        ++p;
    else
      return false;
    const auto int_digits = static_cast<long>(p - int_begin);
    if (p < e && *p == '.') {
      if (++p >= e || !digit(*p))
        return false;
      while (p < e && digit(*p))
        ++p;
    }
    long exponent = 0;
    if (p < e && (*p == 'e' || *p == 'E')) {
      bool negative = false;
      if (++p < e && (*p == '+' || *p == '-'))
        negative = *p++ == '-';
      if (p >= e || !digit(*p))
        return false;
      while (p < e && digit(*p)) {
        exponent = std::min(exponent * 10 + (*p - '0'), 1'000'000L);
        ++p;
      }
      if (negative)
        exponent = -exponent;
    }
    // nlohmann refuses a number a double cannot hold ("number overflow": ±inf), so must we: one
    // below 10^308 surely fits; beyond that from_chars decides (it says out_of_range for both
    // overflow and underflow; underflow, a tiny or zero value, is accepted like nlohmann does).
    if (int_digits + exponent <= 308)
      return true;
    return !overflows(start, p);
  }
  // Whether the number token [b, end) is beyond a double's range (rare: see number()).
  static bool overflows(const char* b, const char* end) {
    double v = 0;
    if (std::from_chars(b, end, v).ec != std::errc::result_out_of_range)
      return false;
    // Out of range: an overflow when the value is at least 1, i.e. when the decimal exponent of
    // its first non-zero digit is >= 0; otherwise an underflow.
    long int_len = 0, first = -1, i = 0; // integer digits, index of the first non-zero digit
    bool fraction = false;
    const char* q = b;
    for (; q < end && *q != 'e' && *q != 'E'; ++q) {
      if (*q == '.') {
        fraction = true;
        continue;
      }
      if (*q < '0' || *q > '9')
        continue; // the sign
      int_len += fraction ? 0 : 1;
      if (first < 0 && *q != '0')
        first = i;
      ++i;
    }
    if (first < 0)
      return false; // zero
    long exponent = 0;
    bool negative = false;
    if (q < end) {
      ++q;
      if (q < end && (*q == '+' || *q == '-'))
        negative = *q++ == '-';
      for (; q < end; ++q)
        exponent = std::min(exponent * 10 + (*q - '0'), 1'000'000L);
    }
    return int_len - 1 - first + (negative ? -exponent : exponent) >= 0;
  }
  // 1 = one JSON value and nothing else, 0 = not JSON, -1 = nested deeper than the stack.
  int run() {
    char stack[512];
    std::size_t depth = 0;
    ws();
    while (true) {
      // A value.
      if (p >= e)
        return 0;
      bool opened = false;
      switch (*p) {
      case '{':
      case '[': {
        const char close = *p == '{' ? '}' : ']';
        ++p;
        ws();
        if (p < e && *p == close) {
          ++p;
          break;
        }
        if (depth == sizeof stack)
          return -1;
        stack[depth++] = close;
        opened = true;
        break;
      }
      case '"':
        if (!string())
          return 0;
        break;
      case 't':
        if (!literal("true"))
          return 0;
        break;
      case 'f':
        if (!literal("false"))
          return 0;
        break;
      case 'n':
        if (!literal("null"))
          return 0;
        break;
      default:
        if (*p != '-' && !digit(*p))
          return 0;
        if (!number())
          return 0;
      }
      // After a value: close containers, or find the next member / element.
      while (!opened) {
        ws();
        if (depth == 0)
          return p == e ? 1 : 0;
        if (p >= e)
          return 0;
        if (*p == stack[depth - 1]) {
          ++p;
          --depth;
          continue;
        }
        if (*p != ',')
          return 0;
        ++p;
        ws();
        break;
      }
      if (depth > 0 && stack[depth - 1] == '}') { // a member: key, colon, then its value
        if (p >= e || *p != '"' || !string())
          return 0;
        ws();
        if (p >= e || *p != ':')
          return 0;
        ++p;
      }
      ws();
    }
  }
};


// Appends `s` as a JSON string when it is valid UTF-8, else `fallback` (checked in the same pass).
void append_checked_or(std::string& out, std::string_view s, std::string_view fallback) {
  if (!append_string<true>(out, s))
    append_json_string(out, fallback);
}

// Appends `s` as a JSON string when it is valid UTF-8, else base64(s) as one.
void append_checked_or_base64(std::string& out, std::string_view s) {
  if (!append_string<true>(out, s))
    append_base64_string(out, s);
}

void append_meta(std::string& out, const record& r, bool utf8) {
  out += "{\"message_id\":";
  append_checked_or(out, r.message_id, "?");
  out += ",\"producer\":";
  append_checked_or(out, r.producer, "?");
  if (!r.producer_key.empty()) { // the admitted CURVE key: who sent it, for audits
    out += ",\"producer_key\":";
    append_checked_or(out, r.producer_key, "?");
  }
  out += ",\"dest\":";
  append_json_string(out, r.dest);
  out += ",\"event_time\":";
  append_time_string(out, r.event_time);
  out += ",\"ingest_time\":";
  append_time_string(out, r.ingest_time);
  out += ",\"properties\":{";
  bool first = true;
  for (const auto& [k, v] : r.properties) {
    if (!first)
      out += ',';
    first = false;
    append_checked_or_base64(out, k);
    out += ':';
    append_checked_or_base64(out, v);
  }
  if (!utf8) {
    if (!first)
      out += ',';
    out += "\"encoding\":\"base64\"";
  }
  out += "}}";
}

// Appends the ndjson "data" value of a payload: the payload itself when it is one JSON value on
// one line (checked with its UTF-8 in one pass, then copied with one append), re-serialized
// when it is JSON spread over lines, a JSON string when it is UTF-8 but not JSON. False (nothing
// appended) when it is not UTF-8.
bool append_ndjson_data(std::string& out, const std::string& payload) {
  json_checker c{payload.data(), payload.data() + payload.size()};
  const int verdict = c.run();
  bool json = verdict == 1;
  bool multiline = c.newline;
  if (verdict < 0) { // deeper than the checker's stack: nlohmann's accept decides (iterative)
    json = valid_utf8(payload) && nlohmann::json::accept(payload);
    multiline = payload.find_first_of("\r\n") != std::string::npos;
  }
  if (!json)
    return append_string<true>(out, payload);
  if (!multiline) {
    out += payload;
  } else if (verdict < 0) {
    // Too deep for nlohmann's recursive dump (check_payload refuses such a record before it
    // gets here). In valid JSON a CR or LF can only be white space (inside strings they are
    // escaped), so dropping them leaves the same value on one line.
    for (const char ch : payload)
      if (ch != '\n' && ch != '\r')
        out += ch;
  } else {
    out += nlohmann::json::parse(payload).dump();
  }
  return true;
}

// event_time_of through a nlohmann DOM: the reference, and the path for what the fast path
// leaves out. Cost: one full parse of the payload.
result<unix_ms> event_time_dom(std::string_view payload, std::string_view field) {
  auto j = nlohmann::json::parse(payload, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return fail(errc::parse, "payload is not a JSON object, no event-time field '" +
                                 std::string(field) + "'");
  const nlohmann::json* cur = &j;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = field.find('.', start);
    const std::string part(field.substr(start, dot == std::string_view::npos ? field.npos : dot - start));
    if (!cur->is_object())
      return fail(errc::parse, "event-time field '" + std::string(field) + "' missing");
    auto it = cur->find(part);
    if (it == cur->end())
      return fail(errc::parse, "event-time field '" + std::string(field) + "' missing");
    cur = &*it;
    if (dot == std::string_view::npos)
      break;
    start = dot + 1;
  }
  if (cur->is_string())
    return parse_event_time(cur->get_ref<const std::string&>());
  if (cur->is_number_integer() || cur->is_number_unsigned()) {
    const auto v = cur->get<std::int64_t>();
    return (v >= 100'000'000'000 || v <= -100'000'000'000) ? v : v * 1000;
  }
  if (cur->is_number_float()) {
    if (auto ms = unix_ms_of(cur->get<double>()))
      return *ms;
    return fail(errc::parse, "event-time field '" + std::string(field) + "' is out of range");
  }
  return fail(errc::parse, "event-time field '" + std::string(field) + "' is not a string or number");
}

// After a validated JSON value at p: its end. Strings are skipped to their closing quote,
// containers by bracket depth (strings inside skipped whole). `p` must point at a value of a text
// json_checker accepted.
const char* skip_value(const char* p, const char* e) {
  auto skip_string = [e](const char* q) { // q at '"': returns just past the closing quote
    ++q;
    while (true) {
      q = skip_plain(q, e); // stops at '"', '\\' and bytes >= 0x80 (no controls: validated)
      if (q >= e)
        return e;
      if (*q == '"')
        return q + 1;
      q += *q == '\\' ? 2 : 1; // an escape: the next byte never closes the string
    }
  };
  if (*p == '"')
    return skip_string(p);
  if (*p == '{' || *p == '[') {
    std::size_t depth = 0;
    while (p < e) {
      const char c = *p;
      if (c == '"') {
        p = skip_string(p);
        continue;
      }
      if (c == '{' || c == '[')
        ++depth;
      else if ((c == '}' || c == ']') && --depth == 0)
        return p + 1;
      ++p;
    }
    return e;
  }
  while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' && *p != '\n' &&
         *p != '\r')
    ++p;
  return p;
}

const char* skip_ws(const char* p, const char* e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    ++p;
  return p;
}

// event_time_of without a DOM: the payload is checked by json_checker (one pass, no allocation),
// then the path is walked over the text, keeping the last member of each name (as nlohmann
// does). nullopt when the reference must decide: a byte-order mark, nesting deeper than the
// checker's stack, a key with escapes, a string value with escapes, an integer of more than 18
// digits or a number out of double's range. Cost: O(bytes), no allocation but error texts.
std::optional<result<unix_ms>> event_time_fast(std::string_view payload, std::string_view field) {
  if (payload.starts_with("\xef\xbb\xbf"))
    return std::nullopt;
  json_checker c{payload.data(), payload.data() + payload.size()};
  const int verdict = c.run();
  if (verdict < 0)
    return std::nullopt;
  const char* const e = payload.data() + payload.size();
  const char* p = verdict == 1 ? skip_ws(payload.data(), e) : e;
  if (p == e || *p != '{')
    return fail(errc::parse, "payload is not a JSON object, no event-time field '" +
                                 std::string(field) + "'");
  auto missing = [&] { return fail(errc::parse, "event-time field '" + std::string(field) + "' missing"); };
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = field.find('.', start);
    const std::string_view part = field.substr(start, dot == std::string_view::npos ? field.npos : dot - start);
    if (*p != '{')
      return missing();
    const char* found = nullptr; // the value of the last member named `part`
    p = skip_ws(p + 1, e);
    while (p < e && *p == '"') {
      const char* k = p + 1;
      const char* q = k;
      while (*q != '"' && *q != '\\')
        ++q;
      if (*q == '\\')
        return std::nullopt; // an escaped key: compare it unescaped in the reference
      const std::string_view key(k, static_cast<std::size_t>(q - k));
      p = skip_ws(q + 1, e);    // at ':'
      p = skip_ws(p + 1, e);    // at the value
      if (key == part)
        found = p;
      p = skip_ws(skip_value(p, e), e); // at ',' or '}'
      if (*p == ',')
        p = skip_ws(p + 1, e);
    }
    if (!found)
      return missing();
    p = found;
    if (dot == std::string_view::npos)
      break;
    start = dot + 1;
  }
  const char* end = skip_value(p, e);
  const std::string_view token(p, static_cast<std::size_t>(end - p));
  if (*p == '"') {
    const std::string_view text = token.substr(1, token.size() - 2);
    if (text.find('\\') != std::string_view::npos)
      return std::nullopt; // escapes: the reference unescapes
    return parse_event_time(text);
  }
  if (*p == '-' || (*p >= '0' && *p <= '9')) {
    if (token.find_first_of(".eE") != std::string_view::npos) {
      double v = 0;
      if (std::from_chars(token.data(), token.data() + token.size(), v).ec != std::errc{})
        return std::nullopt; // out of double's range: the reference decides
      if (auto ms = unix_ms_of(v))
        return *ms;
      return fail(errc::parse, "event-time field '" + std::string(field) + "' is out of range");
    }
    if (token.size() - (*p == '-' ? 1 : 0) > 18)
      return std::nullopt; // may not fit in int64: the reference's integer rules decide
    std::int64_t v = 0;
    (void)std::from_chars(token.data(), token.data() + token.size(), v); // <= 18 digits: fits
    return (v >= 100'000'000'000 || v <= -100'000'000'000) ? v : v * 1000;
  }
  return fail(errc::parse, "event-time field '" + std::string(field) + "' is not a string or number");
}

} // namespace

result<unix_ms> event_time_of(std::string_view payload, std::string_view field) {
  if (auto fast = event_time_fast(payload, field))
    return std::move(*fast);
  return event_time_dom(payload, field);
}

bool json_accept(std::string_view text, bool& multiline) {
  json_checker c{text.data(), text.data() + text.size()};
  const int r = c.run();
  if (r < 0) { // deeper than our stack: let nlohmann decide (it has no depth limit)
    multiline = text.find_first_of("\r\n") != std::string_view::npos;
    return valid_utf8(text) && nlohmann::json::accept(text);
  }
  multiline = c.newline;
  return r == 1;
}

result<void> check_payload(const record& r, record_format format) {
  // persistor-v1 carries any payload as a JSON string and walks nothing; ndjson embeds it as
  // JSON, which the ETL walks recursively: refuse what it could not walk (json_limits.hpp).
  if (format != record_format::ndjson)
    return {};
  if (auto ok = check_json_depth(r.payload, "payload"); !ok)
    return fail(errc::invalid_argument,
                ok.error().message + "; an ndjson blob embeds it as JSON, which the ETL could not load");
  return {};
}

std::size_t append_record(std::string& out, record_format format, const record& r) {
  const std::size_t before = out.size();
  bool utf8 = true;
  if (format == record_format::persistor_v1) {
    out += "{\"DATA\":";
    if (!append_string<true>(out, r.payload)) {
      utf8 = false;
      append_base64_string(out, r.payload);
    }
    out += ",\"METADATA\":";
    append_meta(out, r, utf8);
    out += "}\n\n";
  } else {
    out += "{\"data\":";
    if (!append_ndjson_data(out, r.payload)) {
      utf8 = false;
      append_base64_string(out, r.payload);
    }
    out += ",\"meta\":";
    append_meta(out, r, utf8);
    out += "}\n";
  }
  return out.size() - before;
}

std::map<std::string, std::string> blob_metadata(const batch_summary& s, record_format format) {
  return {{"count", std::to_string(s.record_count)},
          {"first_event_time", format_time(s.first_event_time)},
          {"last_event_time", format_time(s.last_event_time)},
          {"format", std::string(to_string(format))}};
}

} // namespace shoal::workers::persistor
