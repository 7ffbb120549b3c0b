#include "workers/key_escape.hpp"

#include <cstdio>

namespace shoal::workers {
namespace {

// True for the bytes escape_key turns into %XX on their own (ASCII); C1 controls are two-byte
// sequences C2 80..C2 9F and are handled by the caller.
bool escaped_ascii(unsigned char c) noexcept {
  return c < 0x20 || c == 0x7F || c == '%' || c == '/' || c == '\\' || c == '#' || c == '?';
}

// Validates UTF-8 and counts UTF-16 units in one pass; false on malformed input.
bool utf8_units(std::string_view s, std::size_t& units) noexcept {
  units = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned char c = *p;
    int extra;
    char32_t cp;
    if (c < 0x80) { extra = 0; cp = c; }
    else if ((c & 0xE0) == 0xC0) { extra = 1; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { extra = 2; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { extra = 3; cp = c & 0x07; }
    else return false;
    if (end - p <= extra)
      return false;
    for (int i = 1; i <= extra; ++i) {
      if ((p[i] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    static constexpr char32_t min_for[] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_for[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    units += extra == 3 ? 2 : 1;
    p += extra + 1;
  }
  return true;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_escaped(std::string& out, unsigned char c) {
  static constexpr char digits[] = "0123456789ABCDEF";
  out += '%';
  out += digits[c >> 4];
  out += digits[c & 0xF];
}

} // namespace

result<std::string> escape_key(std::string_view id) {
  if (id.empty())
    return fail(errc::invalid_argument, "record id is empty");
  std::size_t units = 0;
  if (!utf8_units(id, units))
    return fail(errc::invalid_argument, "record id is not valid UTF-8");
  std::string out;
  out.reserve(id.size() + 8);
  for (std::size_t i = 0; i < id.size(); ++i) {
    auto c = static_cast<unsigned char>(id[i]);
    if (escaped_ascii(c)) {
      append_escaped(out, c);
    } else if (c == 0xC2 && i + 1 < id.size() && static_cast<unsigned char>(id[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(id[i + 1]) <= 0x9F) {
      // U+0080..U+009F (C1 controls): both bytes escaped.
      append_escaped(out, c);
      append_escaped(out, static_cast<unsigned char>(id[++i]));
    } else {
      out += static_cast<char>(c);
    }
  }
  std::size_t out_units = 0;
  (void)utf8_units(out, out_units);
  if (out_units > max_escaped_key_chars)
    return fail(errc::limit_exceeded, "record id too long: its escaped key has " +
                                          std::to_string(out_units) + " characters, at most " +
                                          std::to_string(max_escaped_key_chars) + " allowed");
  return out;
}

result<std::string> unescape_key(std::string_view key) {
  std::string out;
  out.reserve(key.size());
  for (std::size_t i = 0; i < key.size(); ++i) {
    if (key[i] != '%') {
      out += key[i];
      continue;
    }
    if (i + 2 >= key.size())
      return fail(errc::parse, "escaped key '" + std::string(key) + "': '%' without two hex digits");
    int hi = hex_value(key[i + 1]);
    int lo = hex_value(key[i + 2]);
    if (hi < 0 || lo < 0)
      return fail(errc::parse, "escaped key '" + std::string(key) + "': bad %XX escape");
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  std::size_t units = 0;
  if (!utf8_units(out, units))
    return fail(errc::parse, "escaped key '" + std::string(key) + "' is not UTF-8 once unescaped");
  return out;
}

result<void> validate_queue_name(std::string_view queue) {
  if (queue.empty() || queue.size() > 64)
    return fail(errc::invalid_argument, "queue name must have 1 to 64 characters");
  for (char c : queue) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok)
      return fail(errc::invalid_argument, "queue name '" + std::string(queue) +
                                              "' may hold only ASCII letters, digits and '_'");
  }
  return {};
}

std::string partition_key(std::string_view queue, std::uint32_t shard) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "-%02x", shard & 0xFFu);
  return std::string(queue) + buf;
}

} // namespace shoal::workers
