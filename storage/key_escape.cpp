#include "storage/key_escape.hpp"

#include "storage/encoding.hpp"

namespace shoal::storage {
namespace {

void append_escaped(std::string& out, unsigned char c) {
  static constexpr char digits[] = "0123456789ABCDEF";
  out += '%';
  out += digits[c >> 4];
  out += digits[c & 0xF];
}

} // namespace

std::string escape_table_key(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() + 8);
  for (std::size_t i = 0; i < raw.size(); ++i) {
    auto c = static_cast<unsigned char>(raw[i]);
    const bool ascii = c < 0x20 || c == 0x7F || c == '%' || c == '/' || c == '\\' || c == '#' || c == '?';
    // U+0080..U+009F (C1 controls) are C2 80..C2 9F in UTF-8: both bytes are escaped.
    const bool c1 = c == 0xC2 && i + 1 < raw.size() && static_cast<unsigned char>(raw[i + 1]) >= 0x80 &&
                    static_cast<unsigned char>(raw[i + 1]) <= 0x9F;
    if (c1) {
      append_escaped(out, c);
      append_escaped(out, static_cast<unsigned char>(raw[++i]));
    } else if (ascii) {
      append_escaped(out, c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

result<std::string> unescape_table_key(std::string_view key) {
  // The same decoding as a URL's (%XX of either case, '+' kept), with a key-specific message.
  auto out = url_decode(key);
  if (!out)
    return std::unexpected(error::invalid("escaped key '" + std::string(key) + "': a '%' not followed by two hex digits"));
  return out;
}

} // namespace shoal::storage
