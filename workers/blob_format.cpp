#include "workers/blob_format.hpp"

#include "workers/json_limits.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace shoal::workers {
namespace {

// Line and column (both 1-based) of byte `pos` of `body`. O(pos); only used for error messages.
std::pair<std::size_t, std::size_t> line_col(std::string_view body, std::size_t pos) {
  pos = std::min(pos, body.size());
  std::size_t line = 1 + static_cast<std::size_t>(std::count(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(pos), '\n'));
  std::size_t last_nl = body.rfind('\n', pos == 0 ? 0 : pos - 1);
  std::size_t col = (last_nl == std::string_view::npos || pos == 0) ? pos + 1 : pos - last_nl;
  return {line, col};
}

std::unexpected<error> parse_error_at(std::string_view body, std::size_t pos, const std::string& what) {
  auto [line, col] = line_col(body, pos);
  return fail(errc::parse, "blob is not parsable at line " + std::to_string(line) + ", column " +
                               std::to_string(col) + " (byte " + std::to_string(pos) + "): " + what);
}

// End (one past the closing brace) of the JSON object starting at body[start] == '{', tracking
// strings and escapes; npos when unterminated. O(object bytes).
std::size_t object_end(std::string_view body, std::size_t start) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = start; i < body.size(); ++i) {
    char c = body[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') ++depth;
    else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return std::string_view::npos;
}

// -- fast path for persistor-v1 records ------------------------------------------------------------
// A strict parser for the exact shape the persistor writes: an object whose values are strings,
// or (METADATA) an object of strings. Anything else — another value type, a duplicate key,
// malformed text — returns false and the record goes through nlohmann::json, which then decides
// (and reports errors with their position). ~5x cheaper than building a DOM per record.

struct fast_parser {
  std::string_view s;
  std::size_t i = 0;

  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  bool u4(unsigned& cp) {
    if (i + 4 > s.size()) return false;
    cp = 0;
    for (int k = 0; k < 4; ++k) {
      int h = hex(s[i + static_cast<std::size_t>(k)]);
      if (h < 0) return false;
      cp = cp * 16 + static_cast<unsigned>(h);
    }
    i += 4;
    return true;
  }
  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) out += static_cast<char>(cp);
    else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  // A JSON string into `out` (unescaped). Raw bytes ≥ 0x80 are copied as they are (the blob is
  // UTF-8; nlohmann would reject invalid UTF-8, so bail on any byte ≥ 0x80 to stay strict).
  bool string(std::string& out) {
    ws();
    if (i >= s.size() || s[i] != '"') return false;
    ++i;
    out.clear();
    while (i < s.size()) {
      std::size_t run = i;
      while (i < s.size() && s[i] != '"' && s[i] != '\\' && static_cast<unsigned char>(s[i]) >= 0x20 &&
             static_cast<unsigned char>(s[i]) < 0x80)
        ++i;
      out.append(s.data() + run, i - run);
      if (i >= s.size()) return false;
      char c = s[i];
      if (c == '"') {
        ++i;
        return true;
      }
      if (c != '\\') return false; // control character or non-ASCII: let nlohmann decide
      if (++i >= s.size()) return false;
      switch (s[i++]) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        unsigned cp = 0;
        if (!u4(cp)) return false;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          unsigned lo = 0;
          if (i + 2 > s.size() || s[i] != '\\' || s[i + 1] != 'u') return false;
          i += 2;
          if (!u4(lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return false;
        }
        utf8(out, cp);
        break;
      }
      default: return false;
      }
    }
    return false;
  }
};

bool fast_persistor_record(std::string_view raw, extracted_record& r) {
  fast_parser p{raw};
  if (!p.eat('{')) return false;
  bool data = false, meta = false;
  std::string key, value;
  while (true) {
    if (!p.string(key) || !p.eat(':')) return false;
    if (key == "DATA" && !data) {
      if (!p.string(r.payload)) return false;
      data = true;
    } else if (key == "METADATA" && !meta) {
      meta = true;
      if (!p.eat('{')) return false;
      if (!p.eat('}')) {
        while (true) {
          if (!p.string(key) || !p.eat(':')) return false;
          if (key == "properties") {
            // The persistor always writes it: an object of strings (not needed here). Without
            // this every persistor-v1 record took the DOM path below.
            if (!p.eat('{')) return false;
            if (!p.eat('}')) {
              while (true) {
                if (!p.string(value) || !p.eat(':') || !p.string(value)) return false;
                if (p.eat(',')) continue;
                if (p.eat('}')) break;
                return false;
              }
            }
            if (p.eat(',')) continue;
            if (p.eat('}')) break;
            return false;
          }
          if (!p.string(value)) return false;
          if (key == "message_id") r.message_id = value;
          else if (key == "producer") r.producer = value;
          else if (key == "event_time") r.event_time = value;
          else if (key == "ingest_time") r.ingest_time = value;
          if (p.eat(',')) continue;
          if (p.eat('}')) break;
          return false;
        }
      }
    } else {
      return false;
    }
    if (p.eat(',')) continue;
    if (p.eat('}')) break;
    return false;
  }
  p.ws();
  if (p.i != raw.size() || !data || r.message_id.empty()) return false;
  return true;
}

std::string text_of(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_null()) return {};
  return j.dump();
}

} // namespace

std::string_view to_string(blob_format f) noexcept {
  return f == blob_format::ndjson ? "ndjson" : "persistor-v1";
}

std::string_view dest_of(std::string_view blob_name) noexcept {
  auto slash = blob_name.find('/');
  return slash == std::string_view::npos ? blob_name : blob_name.substr(0, slash);
}

result<extracted_blob> extract_records(std::string_view body) {
  extracted_blob out;
  bool format_known = false;
  std::size_t pos = 0;
  std::size_t line = 1;
  // Skip a UTF-8 byte order mark.
  if (body.starts_with("\xEF\xBB\xBF")) pos = 3;
  while (true) {
    while (pos < body.size() && (body[pos] == ' ' || body[pos] == '\t' || body[pos] == '\r' || body[pos] == '\n')) {
      if (body[pos] == '\n') ++line;
      ++pos;
    }
    if (pos >= body.size()) break;
    if (body[pos] != '{')
      return parse_error_at(body, pos, std::string("expected '{' starting record ") +
                                           std::to_string(out.records.size() + 1) + ", found '" +
                                           std::string(1, body[pos]) + "'");
    const std::size_t end = object_end(body, pos);
    if (end == std::string_view::npos)
      return parse_error_at(body, pos, "record " + std::to_string(out.records.size() + 1) +
                                           " is not terminated (missing '}' or '\"')");
    extracted_record r;
    r.index = out.records.size();
    r.offset = pos;
    r.line = line;
    r.raw = body.substr(pos, end - pos);
    if ((!format_known || out.format == blob_format::persistor_v1) && fast_persistor_record(r.raw, r)) {
      for (std::size_t i = pos; i < end; ++i)
        if (body[i] == '\n') ++line;
      pos = end;
      out.format = blob_format::persistor_v1;
      format_known = true;
      out.records.push_back(std::move(r));
      continue;
    }
    r.payload.clear();
    r.message_id.clear();
    r.producer.clear();
    r.event_time.clear();
    r.ingest_time.clear();
    // The DOM below is walked recursively (dump of `data`): a record nesting deeper than a
    // payload may (plus its own object) is quarantined unparsed, the rest of the blob loads.
    if (auto deep = check_json_depth(r.raw, "record", max_json_depth + 1); !deep) {
      for (std::size_t i = pos; i < end; ++i)
        if (body[i] == '\n') ++line;
      pos = end;
      r.problem = deep.error().message + " (a payload may nest " + std::to_string(max_json_depth) + ")";
      out.records.push_back(std::move(r));
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(r.raw);
    } catch (const nlohmann::json::parse_error& e) {
      // e.byte is 1-based within the record.
      std::size_t at = pos + (e.byte > 0 ? e.byte - 1 : 0);
      // Drop nlohmann's "[json.exception…] parse error at line 1, column N: " prefix: its
      // position is relative to the record, ours to the blob.
      std::string what = e.what();
      if (auto col = what.find("column "); col != std::string::npos)
        if (auto colon = what.find(": ", col); colon != std::string::npos) what = what.substr(colon + 2);
      return parse_error_at(body, at, "record " + std::to_string(r.index + 1) + ": " + what);
    } catch (const nlohmann::json::exception& e) {
      // Valid JSON that nlohmann cannot hold (a number beyond a double: out_of_range 406): the
      // record is quarantined with the reason, the rest of the blob loads.
      for (std::size_t i = pos; i < end; ++i)
        if (body[i] == '\n') ++line;
      pos = end;
      r.problem = std::string("record cannot be read: ") + e.what();
      out.records.push_back(std::move(r));
      continue;
    }
    for (std::size_t i = pos; i < end; ++i)
      if (body[i] == '\n') ++line;
    pos = end;

    const bool upper = j.contains("DATA") || j.contains("METADATA");
    const bool lower = j.contains("data") || j.contains("meta");
    if (!format_known && (upper || lower)) {
      out.format = upper ? blob_format::persistor_v1 : blob_format::ndjson;
      format_known = true;
    }
    const char* data_key = out.format == blob_format::persistor_v1 ? "DATA" : "data";
    const char* meta_key = out.format == blob_format::persistor_v1 ? "METADATA" : "meta";
    auto data = j.find(data_key);
    if (data == j.end()) {
      r.problem = std::string("record has no \"") + data_key + "\" member";
    } else if (out.format == blob_format::persistor_v1 && !data->is_string()) {
      r.problem = "DATA must be a string (persistor-v1)";
    } else {
      r.payload = out.format == blob_format::persistor_v1 ? data->get<std::string>() : data->dump();
    }
    auto meta = j.find(meta_key);
    if (meta != j.end() && meta->is_object()) {
      if (auto it = meta->find("message_id"); it != meta->end()) r.message_id = text_of(*it);
      if (auto it = meta->find("producer"); it != meta->end()) r.producer = text_of(*it);
      if (auto it = meta->find("event_time"); it != meta->end()) r.event_time = text_of(*it);
      if (auto it = meta->find("ingest_time"); it != meta->end()) r.ingest_time = text_of(*it);
    }
    if (r.problem.empty() && r.message_id.empty())
      r.problem = std::string("record has no ") + meta_key + ".message_id";
    out.records.push_back(std::move(r));
  }
  return out;
}

std::string write_blob(blob_format format, const std::vector<record_to_write>& records) {
  std::string out;
  for (const auto& r : records) {
    nlohmann::json meta = {{"message_id", r.message_id}, {"producer", r.producer},
                           {"event_time", r.event_time}, {"ingest_time", r.event_time}};
    if (format == blob_format::persistor_v1) {
      nlohmann::json j = {{"DATA", r.payload}, {"METADATA", meta}};
      out += j.dump();
      out += "\n\n";
    } else {
      nlohmann::json j;
      j["data"] = nlohmann::json::parse(r.payload, nullptr, false);
      j["meta"] = meta;
      out += j.dump();
      out += '\n';
    }
  }
  return out;
}

} // namespace shoal::workers
