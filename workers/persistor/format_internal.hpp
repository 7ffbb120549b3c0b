#pragma once
// Private to workers/persistor (format.cpp, format_json.cpp, event_time.cpp) and its tests: the
// JSON text primitives the record formats and the event-time reader share. Not part of the
// persistor's interface; include it from nowhere else.

#include "workers/persistor/format.hpp"

#include <string>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace shoal::workers::persistor::detail {

// -- byte scans -----------------------------------------------------------------------------------
// Formatting a record is a scan for the few bytes that need work: in a JSON string, '"', '\\',
// control characters (< 0x20) and the lead bytes of multi-byte UTF-8 (>= 0x80, checked). Runs of
// other bytes are skipped 32 bytes per step (SSE2, part of every x86-64) and copied with one
// append; there is no second pass over the payload.

constexpr bool special(unsigned char c) { return c < 0x20 || c >= 0x80 || c == '"' || c == '\\'; }

// The first special byte in [p, e), or e. O(bytes), no allocation.
inline const char* skip_plain(const char* p, const char* e) {
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i bslash = _mm_set1_epi8('\\');
  const __m128i space = _mm_set1_epi8(0x20);
  // Signed compare: bytes >= 0x80 are negative, so "< 0x20" catches them with the controls.
  auto mask = [&](const char* q) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
    return _mm_or_si128(_mm_cmplt_epi8(v, space),
                        _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)));
  };
  while (e - p >= 32) {
    const unsigned lo = static_cast<unsigned>(_mm_movemask_epi8(mask(p)));
    const unsigned hi = static_cast<unsigned>(_mm_movemask_epi8(mask(p + 16)));
    if ((lo | hi) != 0)
      return p + (lo != 0 ? __builtin_ctz(lo) : 16 + __builtin_ctz(hi));
    p += 32;
  }
  if (e - p >= 16) {
    const unsigned m = static_cast<unsigned>(_mm_movemask_epi8(mask(p)));
    if (m != 0)
      return p + __builtin_ctz(m);
    p += 16;
  }
#endif
  while (p < e && !special(static_cast<unsigned char>(*p)))
    ++p;
  return p;
}

/// Appends `s` as a JSON string literal, byte for byte what storage::append_json_string writes
/// (bytes >= 0x80 are copied unchecked). O(bytes), no allocation beyond the growth of `out`.
void append_json_string(std::string& out, std::string_view s);

/// Appends `s` as a JSON string literal when it is well-formed UTF-8 (checked in the same pass)
/// and returns true; otherwise restores `out` to its size before the call and returns false.
bool append_checked_json_string(std::string& out, std::string_view s);

/// Appends base64(bytes) as a JSON string (its alphabet needs no escapes).
void append_base64_string(std::string& out, std::string_view bytes);

/// Appends format_time(t) (24 characters for years 0..9999) as a JSON string.
void append_time_string(std::string& out, unix_ms t);

/// The verdict of the one-pass strict JSON checker (RFC 8259) over a whole text.
struct json_verdict {
  int result = 0;       ///< 1: one valid JSON value; 0: not JSON; -1: nested deeper than the
                        ///< checker's fixed stack (the caller decides, e.g. with nlohmann)
  bool newline = false; ///< a CR or LF was seen (in valid JSON only possible as white space)
};

/// Checks `text` (JSON syntax and UTF-8) in one pass. O(bytes), no allocation. Thread-safe.
json_verdict check_json(std::string_view text) noexcept;

/// format_time's text through <chrono> and snprintf: the reference the one-pass formatter is
/// tested against, and what it uses for years outside 0..9999 (where the text is not 24
/// characters). Thread-safe.
std::string format_time_slow(unix_ms t);

/// event_time_of through a nlohmann DOM of the whole payload, then the dotted path: the
/// reference the fast path is tested against, and the path for what the fast path leaves out
/// (payloads it cannot scan alone). Same results and errors as event_time_of. Cost: one full
/// parse. Thread-safe.
result<unix_ms> event_time_dom(std::string_view payload, std::string_view field);

} // namespace shoal::workers::persistor::detail
