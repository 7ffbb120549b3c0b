#include "workers/key_escape.hpp"

#include "storage/encoding.hpp"

#include <cstdio>

namespace shoal::workers {
namespace {

// True for the bytes escape_key turns into %XX on their own (ASCII); C1 controls are two-byte
// sequences C2 80..C2 9F and are handled by the caller.
bool escaped_ascii(unsigned char c) noexcept {
  return c < 0x20 || c == 0x7F || c == '%' || c == '/' || c == '\\' || c == '#' || c == '?';
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
  if (!storage::utf16_length(id))
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
  const std::size_t out_units = storage::utf16_length(out).value_or(0);
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
  if (!storage::utf16_length(out))
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
