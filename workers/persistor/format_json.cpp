// JSON text for the record formats: string escaping with SSE2 byte scans, base64 strings, and
// the one-pass strict JSON checker (RFC 8259) behind json_accept.
#include "workers/persistor/format_internal.hpp"

#include "storage/encoding.hpp"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cstring>

namespace shoal::workers::persistor::detail {
namespace {

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

} // namespace

void append_json_string(std::string& out, std::string_view s) { append_string<false>(out, s); }

bool append_checked_json_string(std::string& out, std::string_view s) { return append_string<true>(out, s); }

// Appends base64(bytes) as a JSON string (its alphabet needs no escapes).
void append_base64_string(std::string& out, std::string_view bytes) {
  out += '"';
  storage::base64_append(out, bytes);
  out += '"';
}

json_verdict check_json(std::string_view text) noexcept {
  json_checker c{text.data(), text.data() + text.size()};
  const int r = c.run();
  return {r, c.newline};
}

} // namespace shoal::workers::persistor::detail

namespace shoal::workers::persistor {

bool json_accept(std::string_view text, bool& multiline) {
  const detail::json_verdict v = detail::check_json(text);
  if (v.result < 0) { // deeper than our stack: let nlohmann decide (it has no depth limit)
    multiline = text.find_first_of("\r\n") != std::string_view::npos;
    return storage::valid_utf8(text) && nlohmann::json::accept(text);
  }
  multiline = v.newline;
  return v.result == 1;
}

} // namespace shoal::workers::persistor
