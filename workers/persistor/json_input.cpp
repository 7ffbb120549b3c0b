#include "workers/persistor/json_input.hpp"

#include "workers/persistor/format.hpp"

namespace shoal::workers {
namespace {

bool space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

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

result<std::vector<std::string>> csv_fields(std::string_view line, std::size_t line_number) {
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

} // namespace shoal::workers
