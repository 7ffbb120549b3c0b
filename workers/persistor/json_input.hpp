#pragma once
// Reading input records: CSV lines (csv_fields, the one CSV splitter of `shoal send` and
// `shoal records`), and a JSON array without building a DOM (issue 14: `shoal send` spent most of
// its CPU parsing flights-200k into a nlohmann tree and dumping every element back to text).
// The text is checked once with persistor::json_accept (one allocation-free pass), then its
// elements are cut out where they stand.
//
//   if (!is_json_array(text)) …;               // refuses anything but one valid JSON array
//   json_array_cursor c(text);
//   while (auto e = c.next()) { std::string payload; append_minified(payload, *e); … }

#include "workers/error.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers {

/// True when `text` is exactly one valid JSON value (RFC 8259, UTF-8) and that value is an
/// array. One pass, no allocation. Thread-safe (pure).
bool is_json_array(std::string_view text);

/// The elements of a JSON array, in order, as views into the text. The text must have passed
/// is_json_array (the cursor only tracks strings and nesting). Owner only; borrows `text`.
class json_array_cursor {
public:
  explicit json_array_cursor(std::string_view text);
  /// The next element's text (without the whitespace around it), or nullopt after the last.
  std::optional<std::string_view> next();
  /// Elements returned so far.
  std::size_t count() const noexcept { return count_; }

private:
  std::string_view s_;
  std::size_t i_ = 0;
  std::size_t count_ = 0;
  bool done_ = false;
};

/// Appends `json` (valid JSON text) without the whitespace outside its strings: the element as
/// nlohmann::json::dump() writes it except that numbers and escapes keep their spelling.
void append_minified(std::string& out, std::string_view json);

/// The fields of one CSV record held on one line (RFC 4180 §2): fields separated by ',', a
/// field in double quotes may hold ',' and '""' (one quote); '\r' outside quotes is dropped,
/// so CRLF lines read as LF ones. A quoted field may not span lines (both callers read a line
/// at a time). Errors: parse "line N: unclosed quote" (N = `line_number`, 1-based) when a
/// quoted field does not end on the line. Thread-safe (pure).
[[nodiscard]] result<std::vector<std::string>> csv_fields(std::string_view line, std::size_t line_number);

} // namespace shoal::workers
