#include "workers/claim/key_escape.hpp"

#include "storage/encoding.hpp"
#include "storage/key_escape.hpp"

#include <cstdio>

namespace shoal::workers {

result<std::string> escape_key(std::string_view id) {
  if (id.empty())
    return fail(errc::invalid_argument, "record id is empty");
  if (!storage::utf16_length(id))
    return fail(errc::invalid_argument, "record id is not valid UTF-8");
  std::string out = storage::escape_table_key(id);
  const std::size_t out_units = storage::utf16_length(out).value_or(0);
  if (out_units > max_escaped_key_chars)
    return fail(errc::limit_exceeded, "record id too long: its escaped key has " +
                                          std::to_string(out_units) + " characters, at most " +
                                          std::to_string(max_escaped_key_chars) + " allowed");
  return out;
}

result<std::string> unescape_key(std::string_view key) {
  auto out = storage::unescape_table_key(key);
  if (!out)
    return fail(errc::parse, out.error().message);
  if (!storage::utf16_length(*out))
    return fail(errc::parse, "escaped key '" + std::string(key) + "' is not UTF-8 once unescaped");
  return std::move(*out);
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
