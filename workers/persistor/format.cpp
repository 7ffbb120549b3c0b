#include "workers/persistor/format.hpp"

#include "storage/encoding.hpp"

#include <nlohmann/json.hpp>

#include <cctype>
#include <charconv>
#include <cstdio>

namespace shoal::workers::persistor {
namespace {

using storage::append_json_string;

bool valid_utf8(std::string_view s) { return storage::utf16_length(s).has_value(); }

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
    if (v >= 1e11 || v <= -1e11)
      return static_cast<unix_ms>(v);
    return static_cast<unix_ms>(v * 1000.0);
  }
  if (auto t = parse_calendar(text))
    return *t;
  return fail(errc::parse, "event time '" + std::string(text.substr(0, 64)) +
                               "' is not ISO-8601, YYYY/MM/DD HH:MM or Unix seconds/ms");
}

result<unix_ms> event_time_of(std::string_view payload, std::string_view field) {
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
    const double v = cur->get<double>();
    return static_cast<unix_ms>((v >= 1e11 || v <= -1e11) ? v : v * 1000.0);
  }
  return fail(errc::parse, "event-time field '" + std::string(field) + "' is not a string or number");
}

std::string format_time(unix_ms t) {
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

std::string partition_of(unix_ms t) {
  const std::string s = format_time(t); // YYYY-MM-DDTHH:...
  std::string out;
  out.reserve(13);
  out.append(s, 0, 4).append(1, '/').append(s, 5, 2).append(1, '/').append(s, 8, 2).append(1, '/').append(s, 11, 2);
  return out;
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

std::string base64(std::string_view bytes) {
  static constexpr char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const std::uint32_t v = (static_cast<unsigned char>(bytes[i]) << 16) |
                            (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                            static_cast<unsigned char>(bytes[i + 2]);
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += tbl[(v >> 6) & 63];
    out += tbl[v & 63];
  }
  if (i < bytes.size()) {
    std::uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size())
      v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += tbl[(v >> 18) & 63];
    out += tbl[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? tbl[(v >> 6) & 63] : '=';
    out += '=';
  }
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
  bool string() { // at '"'
    ++p;
    while (p < e) {
      const auto c = static_cast<unsigned char>(*p);
      if (c == '"') {
        ++p;
        return true;
      }
      if (c < 0x20)
        return false;
      if (c != '\\') {
        ++p;
        continue;
      }
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
    if (*p == '-')
      ++p;
    if (p >= e)
      return false;
    if (*p == '0')
      ++p;
    else if (*p >= '1' && *p <= '9')
      while (p < e && digit(*p))
        ++p;
    else
      return false;
    if (p < e && *p == '.') {
      if (++p >= e || !digit(*p))
        return false;
      while (p < e && digit(*p))
        ++p;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
      if (++p < e && (*p == '+' || *p == '-'))
        ++p;
      if (p >= e || !digit(*p))
        return false;
      while (p < e && digit(*p))
        ++p;
    }
    return true;
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


void append_meta(std::string& out, const record& r, bool utf8) {
  out += "{\"message_id\":";
  append_json_string(out, valid_utf8(r.message_id) ? std::string_view(r.message_id) : std::string_view("?"));
  out += ",\"producer\":";
  append_json_string(out, valid_utf8(r.producer) ? std::string_view(r.producer) : std::string_view("?"));
  out += ",\"dest\":";
  append_json_string(out, r.dest);
  out += ",\"event_time\":";
  append_json_string(out, format_time(r.event_time));
  out += ",\"ingest_time\":";
  append_json_string(out, format_time(r.ingest_time));
  out += ",\"properties\":{";
  bool first = true;
  for (const auto& [k, v] : r.properties) {
    if (!first)
      out += ',';
    first = false;
    append_json_string(out, valid_utf8(k) ? k : base64(k));
    out += ':';
    append_json_string(out, valid_utf8(v) ? v : base64(v));
  }
  if (!utf8) {
    if (!first)
      out += ',';
    out += "\"encoding\":\"base64\"";
  }
  out += "}}";
}

} // namespace

bool json_accept(std::string_view text, bool& multiline) {
  json_checker c{text.data(), text.data() + text.size()};
  const int r = c.run();
  if (r < 0) { // deeper than our stack: let nlohmann decide (it has no depth limit)
    multiline = text.find_first_of("\r\n") != std::string_view::npos;
    return nlohmann::json::accept(text);
  }
  multiline = c.newline;
  return r == 1;
}

std::size_t append_record(std::string& out, record_format format, const record& r) {
  const std::size_t before = out.size();
  const bool utf8 = valid_utf8(r.payload);
  const std::string encoded = utf8 ? std::string() : base64(r.payload);
  const std::string_view text = utf8 ? std::string_view(r.payload) : std::string_view(encoded);
  if (format == record_format::persistor_v1) {
    out += "{\"DATA\":";
    append_json_string(out, text);
    out += ",\"METADATA\":";
    append_meta(out, r, utf8);
    out += "}\n\n";
  } else {
    out += "{\"data\":";
    // A JSON payload on one line is embedded as it is (checked without building a DOM); one
    // spread over lines is re-serialized; anything else becomes a JSON string.
    bool multiline = false;
    if (utf8 && json_accept(r.payload, multiline)) {
      if (!multiline)
        out += r.payload;
      else
        out += nlohmann::json::parse(r.payload).dump();
    } else {
      append_json_string(out, text);
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
