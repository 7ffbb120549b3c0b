#pragma once
// Internal to shoal::storage (table_*.cpp and their unit tests): UTF-8 helpers shared by the
// entity validation and the filter builder, and the JSON entry points the client reuses.
// Includes nlohmann-json; never include it from a public header.

#include "storage/error.hpp"
#include "storage/table_entity.hpp"

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <string_view>

namespace shoal::storage::detail {

/// Calls `fn(char32_t)` for each code point of UTF-8 `s`. Returns false (stopping early) on
/// malformed input: bad lead/continuation bytes, overlong forms, surrogates, > U+10FFFF.
template <class F> bool for_each_code_point(std::string_view s, F&& fn) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    unsigned char c = *p;
    char32_t cp;
    int extra;
    if (c < 0x80) {
      cp = c;
      extra = 0;
    } else if ((c & 0xE0) == 0xC0) {
      cp = c & 0x1F;
      extra = 1;
    } else if ((c & 0xF0) == 0xE0) {
      cp = c & 0x0F;
      extra = 2;
    } else if ((c & 0xF8) == 0xF0) {
      cp = c & 0x07;
      extra = 3;
    } else {
      return false;
    }
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
    fn(cp);
    p += extra + 1;
  }
  return true;
}

/// True when `s` is well-formed UTF-8.
inline bool valid_utf8(std::string_view s) {
  return for_each_code_point(s, [](char32_t) {});
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
