#include "workers/json_limits.hpp"

#include <algorithm>
#include <string>

namespace shoal::workers {

std::size_t json_depth(std::string_view text, std::size_t limit) noexcept {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false;
  const char* p = text.data();
  const char* const e = p + text.size();
  for (; p < e; ++p) {
    const char c = *p;
    if (in_string) {
      if (c == '\\')
        ++p; // the escaped byte never ends the string
      else if (c == '"')
        in_string = false;
      continue;
    }
    switch (c) {
    case '"': in_string = true; break;
    case '[':
    case '{':
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > limit)
          return limit + 1;
      }
      break;
    case ']':
    case '}':
      if (depth > 0)
        --depth;
      break;
    default: break;
    }
  }
  return deepest;
}

result<void> check_json_depth(std::string_view text, std::string_view what, std::size_t limit) {
  // No more than `limit` brackets cannot nest deeper than `limit`: two counts the compiler
  // vectorises spare almost every record the byte-by-byte scan.
  if (text.size() <= limit)
    return {};
  const auto brackets = static_cast<std::size_t>(std::count(text.begin(), text.end(), '[') +
                                                 std::count(text.begin(), text.end(), '{'));
  if (brackets <= limit)
    return {};
  if (json_depth(text, limit) > limit)
    return fail(errc::limit_exceeded,
                std::string(what) + " nests deeper than " + std::to_string(limit) + " levels");
  return {};
}

} // namespace shoal::workers
