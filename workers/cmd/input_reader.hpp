#pragma once
// Reading input records, the one reader of `shoal send`, `shoal records enqueue` and `shoal run`
// (in shoal::cmd: only the commands read users' files): a JSON array, NDJSON or CSV (RFC 4180)
// read one item at a time (input_reader). A JSON array is checked once with
// persistor::json_accept (one allocation-free pass), then its elements are cut out where they
// stand, without a DOM (issue 14: `shoal send` spent most of its CPU parsing flights-200k into a
// nlohmann tree and dumping every element back to text).
//
//   std::ifstream in(path, std::ios::binary);
//   auto format = choose_input_format("auto", path, in);
//   auto r = input_reader::open(in, *format, path);      // json: checked whole; csv: header read
//   while (auto item = r->next()) { … item->text, item->fields, item->problem … }

#include "workers/error.hpp"

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
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

/// The fields of one CSV record (RFC 4180 §2): fields separated by ',', a field in double
/// quotes may hold ',', '""' (one quote) and line breaks (kept as they stand); '\r' outside
/// quotes is dropped, so CRLF lines read as LF ones. `record` is the whole record (input_reader
/// joins the lines of a quoted field that spans them). Errors: parse "line N: unclosed quote"
/// (N = `line_number`, the record's first line, 1-based) when a quoted field does not end.
/// Thread-safe (pure).
[[nodiscard]] result<std::vector<std::string>> csv_fields(std::string_view record, std::size_t line_number);

/// The input formats of `shoal send` and `shoal records enqueue`.
enum class input_format : std::uint8_t { json, ndjson, csv };

/// `requested` "json", "ndjson" or "csv" as named; "auto" by `path`'s extension (.csv → csv,
/// .ndjson or .jsonl → ndjson, .json → json), else by the first byte of `in` that is not white
/// space ('[' → json, anything else → ndjson; the white space is consumed). Errors:
/// invalid_argument for any other `requested`.
[[nodiscard]] result<input_format> choose_input_format(std::string_view requested, std::string_view path,
                                                       std::istream& in);

/// One item of an input, as it stands in it.
struct input_item {
  std::size_t number = 0;          ///< json: the element's index; ndjson, csv: its first line (1-based)
  std::string text;                ///< json: the element's text; ndjson: the line without its CR;
                                   ///< csv: the record's text (its lines joined by '\n')
  std::vector<std::string> fields; ///< csv: the record's fields (empty when `problem` is set)
  std::string problem;             ///< csv: why it could not be split ("line N: unclosed quote")
};

/// Reads a JSON array, NDJSON or CSV input one item at a time. json: the whole input is read and
/// checked at open(); ndjson and csv are streamed a line at a time (a CSV record whose quoted
/// field spans lines is read whole). Blank lines are skipped. What an item means (a payload, an
/// id) is the caller's. Owner only (not thread-safe); borrows `in` until destroyed.
class input_reader {
public:
  /// Opens `in` as `format`; `origin` names it in errors. Errors: parse when a json input is not
  /// one JSON array ("<origin> is not a JSON array …"), limit_exceeded when one of its elements
  /// nests deeper than max_json_depth (json_limits.hpp), parse when a csv input has no header
  /// record or a broken one.
  [[nodiscard]] static result<input_reader> open(std::istream& in, input_format format, std::string origin);

  input_reader(input_reader&&) noexcept;
  input_reader& operator=(input_reader&&) noexcept;
  ~input_reader();

  input_format format() const noexcept { return format_; }
  /// csv: the header record's fields; empty for json and ndjson.
  const std::vector<std::string>& header() const noexcept { return header_; }
  /// The next item, or nullopt after the last.
  std::optional<input_item> next();

private:
  input_reader(std::istream& in, input_format format);
  // csv: the next record's lines (a quoted field may span them) and where it starts.
  bool next_csv_record(std::string& text, std::size_t& first_line);

  std::istream* in_;
  input_format format_;
  std::vector<std::string> header_;
  std::unique_ptr<std::string> text_;           // json: the whole input (stable for cursor_)
  std::optional<json_array_cursor> cursor_;     // json: over *text_
  std::size_t line_ = 0;                        // ndjson, csv: lines read
};

} // namespace shoal::workers
