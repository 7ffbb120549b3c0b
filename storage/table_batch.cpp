// The wire format of entity group transactions (reference §5): building the multipart/mixed
// request with one changeset, and a lenient parser of the multipart response.

#include "storage/table_batch.hpp"

#include "storage/encoding.hpp"

#include <nlohmann/json.hpp>

#include <charconv>

namespace shoal::storage::detail {

namespace {

void append_quoted_key(std::string& out, std::string_view key) {
  std::string doubled;
  doubled.reserve(key.size() + 2);
  for (char c : key) {
    doubled += c;
    if (c == '\'')
      doubled += '\'';
  }
  out += url_encode(doubled);
}

// The boundary parameter of a multipart Content-Type, unquoted; "" if none.
std::string boundary_of(std::string_view content_type) {
  std::string lc = ascii_lower(content_type);
  auto pos = lc.find("boundary=");
  if (pos == std::string::npos)
    return {};
  std::string_view b = content_type.substr(pos + 9);
  if (auto semi = b.find(';'); semi != std::string_view::npos)
    b = b.substr(0, semi);
  b = trim_space(b);
  if (b.size() >= 2 && b.front() == '"' && b.back() == '"')
    b = b.substr(1, b.size() - 2);
  return std::string(b);
}

// Splits `s` into lines (LF or CRLF), consuming from `pos`; returns false at the end.
bool next_line(std::string_view s, std::size_t& pos, std::string_view& line) {
  if (pos >= s.size())
    return false;
  auto nl = s.find('\n', pos);
  std::size_t end = nl == std::string_view::npos ? s.size() : nl;
  line = s.substr(pos, end - pos);
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  pos = nl == std::string_view::npos ? s.size() : nl + 1;
  return true;
}

void parse_header_line(std::string_view line, std::vector<std::pair<std::string, std::string>>& out) {
  auto colon = line.find(':');
  if (colon == std::string_view::npos)
    return;
  out.emplace_back(ascii_lower(trim_space(line.substr(0, colon))), std::string(trim_space(line.substr(colon + 1))));
}

// The segments between `--boundary` delimiter lines (preamble and epilogue dropped).
std::vector<std::string_view> split_multipart(std::string_view body, std::string_view boundary) {
  std::vector<std::string_view> parts;
  const std::string delim = "--" + std::string(boundary);
  std::size_t pos = 0, line_start = 0;
  std::optional<std::size_t> part_start;
  std::string_view line;
  while (line_start = pos, next_line(body, pos, line)) {
    std::string_view t = trim_space(line);
    if (t.starts_with(delim)) {
      if (part_start)
        parts.push_back(body.substr(*part_start, line_start - *part_start));
      part_start.reset();
      if (t.substr(delim.size()).starts_with("--"))
        break; // close delimiter
      part_start = pos;
    }
  }
  if (part_start && *part_start < body.size()) // missing close delimiter: keep what is there
    parts.push_back(body.substr(*part_start));
  return parts;
}

void parse_segment(std::string_view seg, int depth, std::vector<batch_part>& out) {
  // MIME headers of the segment.
  std::vector<std::pair<std::string, std::string>> mime;
  std::size_t pos = 0, line_start = 0;
  std::string_view line;
  while (line_start = pos, next_line(seg, pos, line)) {
    if (trim_space(line).empty()) {
      if (!mime.empty())
        break;
      continue; // tolerate blank lines before the headers
    }
    if (trim_space(line).starts_with("HTTP/")) { // no MIME headers: rewind onto the status line
      pos = line_start;
      break;
    }
    parse_header_line(line, mime);
  }
  for (const auto& [k, v] : mime)
    if (k == "content-type" && ascii_lower(v).starts_with("multipart/")) {
      if (depth > 2)
        return;
      std::string inner = boundary_of(v);
      if (inner.empty())
        return;
      for (std::string_view p : split_multipart(seg.substr(pos), inner))
        parse_segment(p, depth + 1, out);
      return;
    }
  // An application/http part: skip anything up to the status line (Azurite may put a stray
  // boundary line there), then the HTTP headers, a blank line and the body.
  while (next_line(seg, pos, line)) {
    std::string_view t = trim_space(line);
    if (!t.starts_with("HTTP/"))
      continue;
    batch_part part;
    part.headers = std::move(mime);
    auto sp = t.find(' ');
    if (sp == std::string_view::npos)
      return;
    std::string_view code = t.substr(sp + 1, 3);
    std::from_chars(code.data(), code.data() + code.size(), part.status);
    while (next_line(seg, pos, line)) {
      if (trim_space(line).empty())
        break;
      parse_header_line(line, part.headers);
    }
    part.body = std::string(trim_space(seg.substr(std::min(pos, seg.size()))));
    out.push_back(std::move(part));
    return;
  }
}

} // namespace

std::string entity_path(std::string_view table, std::string_view pk, std::string_view rk) {
  std::string out;
  out.reserve(table.size() + pk.size() + rk.size() + 32);
  out += '/';
  out += table;
  out += "(PartitionKey='";
  append_quoted_key(out, pk);
  out += "',RowKey='";
  append_quoted_key(out, rk);
  out += "')";
  return out;
}

batch_body build_batch_body(std::string_view table_endpoint, std::string_view table,
                            const std::vector<table_operation>& ops, std::string_view batch_id,
                            std::string_view changeset_id) {
  const std::string batch = "batch_" + std::string(batch_id);
  const std::string changeset = "changeset_" + std::string(changeset_id);
  std::string b;
  b.reserve(ops.size() * 512 + 256);
  b += "--" + batch + "\r\nContent-Type: multipart/mixed; boundary=" + changeset + "\r\n\r\n";
  for (const table_operation& op : ops) {
    b += "--" + changeset + "\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n";
    const char* verb = "POST";
    bool keyed = true, with_body = true, conditional = false;
    switch (op.kind) {
    case table_operation_kind::insert: keyed = false; break;
    case table_operation_kind::update: verb = "PUT"; conditional = true; break;
    case table_operation_kind::merge: verb = "MERGE"; conditional = true; break;
    case table_operation_kind::insert_or_replace: verb = "PUT"; break;
    case table_operation_kind::insert_or_merge: verb = "MERGE"; break;
    case table_operation_kind::delete_entity:
      verb = "DELETE";
      conditional = true;
      with_body = false;
      break;
    }
    b += verb;
    b += ' ';
    b += table_endpoint;
    if (keyed)
      b += entity_path(table, op.entity.partition_key, op.entity.row_key);
    else {
      b += '/';
      b += table;
    }
    b += " HTTP/1.1\r\n";
    if (with_body)
      b += "Content-Type: application/json\r\n";
    b += "Accept: application/json;odata=minimalmetadata\r\nPrefer: return-no-content\r\nDataServiceVersion: 3.0;\r\n";
    if (conditional) {
      b += "If-Match: ";
      b += op.if_match.empty() ? std::string_view("*") : std::string_view(op.if_match);
      b += "\r\n";
    }
    b += "\r\n";
    if (with_body)
      b += entity_to_json(op.entity);
    b += "\r\n";
  }
  b += "--" + changeset + "--\r\n--" + batch + "--\r\n";
  return {"multipart/mixed; boundary=" + batch, std::move(b)};
}

result<std::vector<batch_part>> parse_batch_response(std::string_view content_type, std::string_view body) {
  std::string boundary = boundary_of(content_type);
  if (boundary.empty()) {
    error e;
    e.code = errc::bad_response;
    e.message = "batch response Content-Type '" + std::string(content_type) + "' has no boundary";
    return std::unexpected(e);
  }
  std::vector<batch_part> parts;
  for (std::string_view seg : split_multipart(body, boundary))
    parse_segment(seg, 0, parts);
  if (parts.empty()) {
    error e;
    e.code = errc::bad_response;
    e.message = "batch response holds no HTTP response part";
    return std::unexpected(e);
  }
  return parts;
}

std::pair<std::string, std::string> parse_odata_error(std::string_view body) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return {};
  auto err = j.find("odata.error");
  if (err == j.end() || !err->is_object())
    return {};
  std::string code, message;
  if (auto c = err->find("code"); c != err->end() && c->is_string())
    code = c->get<std::string>();
  if (auto m = err->find("message"); m != err->end()) {
    if (m->is_string())
      message = m->get<std::string>();
    else if (m->is_object())
      if (auto v = m->find("value"); v != m->end() && v->is_string())
        message = v->get<std::string>();
  }
  return {code, message};
}

std::optional<std::size_t> failed_operation_index(const batch_part& part) {
  auto [code, message] = parse_odata_error(part.body);
  std::size_t digits = 0;
  while (digits < message.size() && message[digits] >= '0' && message[digits] <= '9')
    ++digits;
  if (digits > 0 && digits < message.size() && message[digits] == ':') {
    std::size_t idx = 0;
    std::from_chars(message.data(), message.data() + digits, idx);
    return idx;
  }
  if (auto id = part.header("content-id")) {
    std::size_t one_based = 0;
    auto [p, ec] = std::from_chars(id->data(), id->data() + id->size(), one_based);
    if (ec == std::errc{} && one_based > 0)
      return one_based - 1;
  }
  return std::nullopt;
}

} // namespace shoal::storage::detail
