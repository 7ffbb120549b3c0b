// Event time: reading it from a payload (a walk over the checked text, nlohmann as the
// reference), parsing its text (ISO-8601, YYYY/MM/DD HH:MM, Unix s/ms) and formatting it.
#include "workers/persistor/format_internal.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <optional>

namespace shoal::workers::persistor {
namespace detail {

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

} // namespace detail

namespace {

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

namespace detail {

// Appends format_time(t) as a JSON string.
void append_time_string(std::string& out, unix_ms t) {
  char buf[26];
  if (!time_text(t, buf + 1)) {
    append_json_string(out, detail::format_time_slow(t));
    return;
  }
  buf[0] = '"';
  buf[25] = '"';
  out.append(buf, sizeof buf);
}

} // namespace detail

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
    return detail::format_time_slow(t);
  return std::string(buf, sizeof buf);
}

namespace detail {

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

} // namespace detail

namespace {

// After a validated JSON value at p: its end. Strings are skipped to their closing quote,
// containers by bracket depth (strings inside skipped whole). `p` must point at a value of a text
// detail::check_json accepted.
const char* skip_value(const char* p, const char* e) {
  auto skip_string = [e](const char* q) { // q at '"': returns just past the closing quote
    ++q;
    while (true) {
      q = detail::skip_plain(q, e); // stops at '"', '\\' and bytes >= 0x80 (no controls: validated)
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

// event_time_of without a DOM: the payload is checked by detail::check_json (one pass, no allocation),
// then the path is walked over the text, keeping the last member of each name (as nlohmann
// does). nullopt when the reference must decide: a byte-order mark, nesting deeper than the
// checker's stack, a key with escapes, a string value with escapes, an integer of more than 18
// digits or a number out of double's range. Cost: O(bytes), no allocation but error texts.
std::optional<result<unix_ms>> event_time_fast(std::string_view payload, std::string_view field) {
  if (payload.starts_with("\xef\xbb\xbf"))
    return std::nullopt;
  const int verdict = detail::check_json(payload).result;
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
  return detail::event_time_dom(payload, field);
}

} // namespace shoal::workers::persistor
