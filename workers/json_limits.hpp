#pragma once
// Bounds on JSON that shoal did not write, checked before anything walks it recursively.
//
// nlohmann's parser is iterative and its destructor too, but dump(), copies, comparisons, JSON
// pointers and valijson recurse once per level of nesting: a payload of '[' nested 200,000 deep
// (600 KB) overflows the stack of whatever thread touches it. The persistor, the ETL, `shoal
// send` and `shoal records` check the nesting first and refuse what is deeper (persist.reject,
// quarantine, an error line), never crash. Sizes are bounded where the input enters: the frame
// limit (transport/ENVELOPE.md §4), [etl] max_blob_bytes, the file readers of the tools.

#include "workers/error.hpp"

#include <cstddef>
#include <string_view>

namespace shoal::workers {

/// Deepest nesting of arrays and objects accepted in a JSON payload: 128 levels (nlohmann's
/// dump uses a few hundred bytes of stack per level; 128 levels stay far below any thread's
/// stack, and real records nest a handful of levels).
inline constexpr std::size_t max_json_depth = 128;

/// The nesting depth of `text` read as JSON: the most '[' and '{' open at once outside strings
/// (escapes inside strings honoured). Scanning stops as soon as the depth exceeds `limit`, which
/// then returns limit + 1. Not a validator: text that is not JSON gets a number too (0 for a
/// scalar or plain text). O(bytes), no allocation, no recursion. Thread-safe (pure).
std::size_t json_depth(std::string_view text, std::size_t limit = max_json_depth) noexcept;

/// Errors: limit_exceeded ("… nests deeper than 128 levels") when json_depth(text, limit) >
/// limit; `what` names the text in the message ("payload"). Cost: two counts of '[' and '{'
/// (vectorised), and the scan only when there are more than `limit` of them. Thread-safe (pure).
[[nodiscard]] result<void> check_json_depth(std::string_view text, std::string_view what = "JSON",
                                            std::size_t limit = max_json_depth);

} // namespace shoal::workers
