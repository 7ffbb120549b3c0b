#pragma once
// Internal to shoal::storage (table_*.cpp and their unit tests): UTF-8 helpers shared by the
// entity validation and the filter builder, and the JSON entry points the client reuses.
// Includes nlohmann-json; never include it from a public header.

#include "storage/encoding.hpp"
#include "storage/error.hpp"
#include "storage/table_entity.hpp"

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <string_view>

namespace shoal::storage::detail {

/// Calls `fn(char32_t)` for each code point of UTF-8 `s`. Returns false (stopping early) on
/// malformed input: bad lead/continuation bytes, overlong forms, surrogates, > U+10FFFF.
template <class F> bool for_each_code_point(std::string_view s, F&& fn) {
  const char* p = s.data();
  const char* const end = p + s.size();
  while (p < end) {
    const std::size_t n = static_cast<unsigned char>(*p) < 0x80 ? 1 : utf8_sequence_length(p, end);
    if (n == 0)
      return false;
    fn(utf8_decode(p, n));
    p += n;
  }
  return true;
}

/// Length of `s` in UTF-16 code units (what the service counts); for malformed input, bytes.
inline std::size_t utf16_units(std::string_view s) noexcept {
  std::size_t n = 0;
  // Fast path: count bytes that are not continuation bytes, plus one more per 4-byte lead.
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80)
      ++n;
    if ((c & 0xF8) == 0xF0)
      ++n;
  }
  return n;
}

/// Converts one parsed JSON entity object (minimal/full metadata). Errors: bad_response.
/// May throw nlohmann exceptions: callers catch them.
result<table_entity> entity_from_json_object(const nlohmann::json& j);

} // namespace shoal::storage::detail
