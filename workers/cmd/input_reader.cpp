#include "workers/cmd/input_reader.hpp"

#include "workers/json_limits.hpp"
#include "workers/persistor/format.hpp"

#include <algorithm>
#include <istream>
#include <iterator>

namespace shoal::workers {
namespace {

bool space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

bool blank(std::string_view line) { return line.find_first_not_of(" \t\r") == std::string_view::npos; }

} // namespace

bool is_json_array(std::string_view text) {
  bool multiline = false;
  if (!persistor::json_accept(text, multiline))
    return false;
  std::size_t i = 0;
  while (i < text.size() && space(text[i]))
    ++i;
  return i < text.size() && text[i] == '[';
}

json_array_cursor::json_array_cursor(std::string_view text) : s_(text) {
  while (i_ < s_.size() && space(s_[i_]))
    ++i_;
  if (i_ < s_.size() && s_[i_] == '[')
    ++i_;
  else
    done_ = true;
}

std::optional<std::string_view> json_array_cursor::next() {
  if (done_)
    return std::nullopt;
  while (i_ < s_.size() && (space(s_[i_]) || s_[i_] == ','))
    ++i_;
  if (i_ >= s_.size() || s_[i_] == ']') {
    done_ = true;
    return std::nullopt;
  }
  // Valid JSON: only strings (with their escapes) and nesting need tracking. O(element bytes).
  const std::size_t start = i_;
  std::size_t depth = 0;
  for (; i_ < s_.size(); ++i_) {
    const char c = s_[i_];
    if (c == '"') {
      for (++i_; i_ < s_.size() && s_[i_] != '"'; ++i_)
        if (s_[i_] == '\\')
          ++i_;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (depth == 0)
        break; // the array's own ']'
      --depth;
    } else if (c == ',' && depth == 0) {
      break;
    }
  }
  std::size_t end = i_;
  while (end > start && space(s_[end - 1]))
    --end;
  ++count_;
  return s_.substr(start, end - start);
}

void append_minified(std::string& out, std::string_view json) {
  out.reserve(out.size() + json.size());
  std::size_t run = 0; // start of the bytes not appended yet
  for (std::size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '"') {
      for (++i; i < json.size() && json[i] != '"'; ++i)
        if (json[i] == '\\')
          ++i;
    } else if (space(c)) {
      out.append(json, run, i - run);
      run = i + 1;
    }
  }
  if (run < json.size())
    out.append(json, run, json.size() - run);
}

result<std::vector<std::string>> csv_fields(std::string_view record, std::size_t line_number) {
  const std::string_view line = record;
  std::vector<std::string> out(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        out.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else if (c != '\r') {
      out.back() += c;
    }
  }
  if (quoted)
    return fail(errc::parse, "line " + std::to_string(line_number) + ": unclosed quote");
  return out;
}

result<input_format> choose_input_format(std::string_view requested, std::string_view path, std::istream& in) {
  if (requested == "json")
    return input_format::json;
  if (requested == "ndjson")
    return input_format::ndjson;
  if (requested == "csv")
    return input_format::csv;
  if (requested != "auto")
    return fail(errc::invalid_argument,
                "unknown input format '" + std::string(requested) + "' (auto, json, ndjson or csv)");
  if (path.ends_with(".csv"))
    return input_format::csv;
  if (path.ends_with(".ndjson") || path.ends_with(".jsonl"))
    return input_format::ndjson;
  if (path.ends_with(".json"))
    return input_format::json;
  int c = 0;
  while ((c = in.peek()) != std::char_traits<char>::eof() && space(static_cast<char>(c)))
    in.get();
  return c == '[' ? input_format::json : input_format::ndjson;
}

input_reader::input_reader(std::istream& in, input_format format) : in_(&in), format_(format) {}
input_reader::input_reader(input_reader&&) noexcept = default;
input_reader& input_reader::operator=(input_reader&&) noexcept = default;
input_reader::~input_reader() = default;

result<input_reader> input_reader::open(std::istream& in, input_format format, std::string origin) {
  input_reader r(in, format);
  if (format == input_format::json) {
    r.text_ = std::make_unique<std::string>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    // The array adds one level to its elements' own max_json_depth.
    if (json_depth(*r.text_, max_json_depth + 1) > max_json_depth + 1)
      return fail(errc::limit_exceeded, origin + ": an element nests deeper than " +
                                            std::to_string(max_json_depth) + " levels");
    if (!is_json_array(*r.text_))
      return fail(errc::parse, origin + " is not a JSON array (not valid JSON, or another top-level value)");
    r.cursor_.emplace(*r.text_);
  } else if (format == input_format::csv) {
    std::string text;
    std::size_t first = 0;
    if (!r.next_csv_record(text, first))
      return fail(errc::parse, origin + ": empty CSV (no header record)");
    auto h = csv_fields(text, first);
    if (!h)
      return fail(errc::parse, origin + ": CSV header: " + h.error().message);
    r.header_ = std::move(*h);
  }
  return r;
}

bool input_reader::next_csv_record(std::string& text, std::size_t& first_line) {
  text.clear();
  bool open_quote = false; // the quotes so far are odd: a quoted field goes on to the next line
  std::string line;
  while (std::getline(*in_, line)) {
    ++line_;
    if (text.empty() && !open_quote) {
      if (blank(line))
        continue;
      first_line = line_;
    } else {
      text += '\n';
    }
    text += line;
    open_quote ^= (std::count(line.begin(), line.end(), '"') % 2) != 0;
    if (!open_quote)
      return true;
  }
  return !text.empty(); // at the end inside a quoted field: csv_fields names the unclosed quote
}

std::optional<input_item> input_reader::next() {
  input_item item;
  switch (format_) {
  case input_format::json: {
    auto e = cursor_->next();
    if (!e)
      return std::nullopt;
    item.number = cursor_->count();
    item.text.assign(*e);
    return item;
  }
  case input_format::ndjson: {
    std::string line;
    while (std::getline(*in_, line)) {
      ++line_;
      if (!line.empty() && line.back() == '\r')
        line.pop_back();
      if (blank(line))
        continue;
      item.number = line_;
      item.text = std::move(line);
      return item;
    }
    return std::nullopt;
  }
  case input_format::csv: {
    if (!next_csv_record(item.text, item.number))
      return std::nullopt;
    if (auto f = csv_fields(item.text, item.number))
      item.fields = std::move(*f);
    else
      item.problem = f.error().message;
    return item;
  }
  }
  return std::nullopt;
}

} // namespace shoal::workers
