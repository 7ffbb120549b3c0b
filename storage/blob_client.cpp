#include "storage/blob_client.hpp"

#include "storage/encoding.hpp"
#include "storage/xml_codec.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <utility>

namespace shoal::storage {
namespace {

using headers_t = std::vector<std::pair<std::string, std::string>>;
using time_point = std::chrono::system_clock::time_point;

std::string container_path(std::string_view container) { return "/" + std::string(container); }

std::string blob_path(std::string_view container, std::string_view blob) {
  return "/" + std::string(container) + "/" + url_encode(blob, /*keep_slash=*/true);
}

template <class T> bool parse_unsigned(std::string_view s, T& out) {
  if (s.empty())
    return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && p == s.data() + s.size();
}

std::optional<time_point> date_header(const http_response& r, std::string_view name) {
  if (auto v = r.header(name))
    if (auto t = parse_http_date(*v))
      return *t;
  return std::nullopt;
}

void add_metadata(headers_t& h, const metadata_map& md) {
  for (const auto& [k, v] : md)
    h.emplace_back("x-ms-meta-" + k, v);
}

void add_if_match(headers_t& h, const std::optional<std::string>& etag) {
  if (etag)
    h.emplace_back("If-Match", *etag);
}

// Properties from Get Blob / Get Blob Properties headers. `ranged`: Content-Length and
// Content-MD5 then describe the range, so the whole-blob values come from Content-Range and
// x-ms-blob-content-md5.
result<blob_properties> properties_from(const http_response& r, bool ranged) {
  blob_properties p;
  p.etag = std::string(r.header("etag").value_or(""));
  p.content_type = std::string(r.header("content-type").value_or(""));
  if (auto md5 = r.header("x-ms-blob-content-md5"))
    p.content_md5 = std::string(*md5);
  else if (!ranged)
    p.content_md5 = std::string(r.header("content-md5").value_or(""));
  p.type = blob_type_from(r.header("x-ms-blob-type").value_or(""));
  p.last_modified = date_header(r, "last-modified");
  if (auto n = r.header("x-ms-blob-committed-block-count")) {
    std::uint32_t c = 0;
    if (!parse_unsigned(*n, c))
      return std::unexpected(error::malformed_response("bad x-ms-blob-committed-block-count: " +
                                          std::string(*n)));
    p.committed_block_count = c;
  }
  if (ranged) {
    // "bytes <first>-<last>/<total>"
    std::string_view cr = r.header("content-range").value_or("");
    auto slash = cr.rfind('/');
    if (slash == std::string_view::npos || !parse_unsigned(cr.substr(slash + 1), p.content_length))
      return std::unexpected(error::malformed_response("bad Content-Range on a range read: '" +
                                          std::string(cr) + "'"));
  } else if (auto len = r.header("content-length")) {
    if (!parse_unsigned(*len, p.content_length))
      return std::unexpected(error::malformed_response("bad Content-Length: " + std::string(*len)));
  }
  for (const auto& [k, v] : r.headers)
    if (k.starts_with("x-ms-meta-"))
      p.metadata[k.substr(10)] = v;
  p.date = date_header(r, "date");
  return p;
}

blob_write_result write_result_from(const http_response& r) {
  blob_write_result w;
  w.etag = std::string(r.header("etag").value_or(""));
  w.content_md5 = std::string(r.header("content-md5").value_or(""));
  w.last_modified = date_header(r, "last-modified");
  w.date = date_header(r, "date");
  return w;
}

// A 409/412 that came on a RETRY: the earlier attempt may have landed with its answer lost
// (reference §8). Callers then re-read the blob and compare with what they wrote.
bool is_retry_conflict(const error& e) {
  return e.attempts > 1 && (e.code == errc::conflict || e.code == errc::precondition_failed);
}

blob_write_result recovered_from(const blob_properties& p) {
  blob_write_result w;
  w.etag = p.etag;
  w.content_md5 = p.content_md5;
  w.last_modified = p.last_modified;
  w.date = p.date;
  w.recovered = true;
  return w;
}

result<void> validate_names(std::string_view container, std::string_view blob) {
  if (auto r = validate_container_name(container); !r)
    return r;
  return validate_blob_name(blob);
}

// Container names (the queue client applies the same rules to queue names).
result<void> validate_dns_like_name(std::string_view name, std::string_view what) {
  std::string w(what);
  if (name.size() < 3 || name.size() > 63)
    return std::unexpected(error::invalid(w + " name " + single_quoted(name) + " must be 3-63 characters (has " +
                                          std::to_string(name.size()) + ")"));
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return std::unexpected(error::invalid(
          w + " name " + single_quoted(name) + " may hold only lowercase letters, digits and '-'"));
  if (name.front() == '-' || name.back() == '-')
    return std::unexpected(error::invalid(w + " name " + single_quoted(name) +
                                          " must not start or end with '-'"));
  if (name.find("--") != std::string_view::npos)
    return std::unexpected(error::invalid(w + " name " + single_quoted(name) +
                                          " must not contain consecutive dashes"));
  return {};
}

} // namespace

// -- validation -------------------------------------------------------------------------------------

result<void> validate_container_name(std::string_view name) {
  if (name == "$root" || name == "$logs" || name == "$web")
    return {};
  return validate_dns_like_name(name, "container");
}

result<void> validate_blob_name(std::string_view name) {
  if (name.empty())
    return std::unexpected(error::invalid("blob name must not be empty"));
  auto n = xml::utf8_code_points(name);
  if (!n)
    return std::unexpected(error::invalid("blob name is not valid UTF-8"));
  if (*n > max_blob_name_chars)
    return std::unexpected(error::invalid("blob name must be at most 1024 characters (has " +
                                          std::to_string(*n) + ")"));
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7F)
      return std::unexpected(error::invalid("blob name " + single_quoted(name.substr(0, 64)) +
                                            " contains a control character"));
  char last = name.back();
  if (last == '.' || last == '/' || last == '\\')
    return std::unexpected(error::invalid("blob name " + single_quoted(name.substr(0, 64)) +
                                          " must not end with '.', '/' or '\\'"));
  std::size_t segments = 0;
  for (std::size_t start = 0;;) {
    std::size_t end = name.find('/', start);
    std::string_view seg = name.substr(start, end == std::string_view::npos ? end : end - start);
    ++segments;
    if (seg == "." || seg == "..")
      return std::unexpected(error::invalid("blob name " + single_quoted(name.substr(0, 64)) +
                                            " must not have a '.' or '..' segment"));
    if (end == std::string_view::npos)
      break;
    start = end + 1;
  }
  if (segments > max_blob_name_segments)
    return std::unexpected(error::invalid("blob name must have at most 254 '/'-separated segments (has " +
                                          std::to_string(segments) + ")"));
  return {};
}

result<void> validate_metadata(const metadata_map& metadata) {
  std::size_t total = 0;
  for (auto it = metadata.begin(); it != metadata.end(); ++it) {
    const auto& [k, v] = *it;
    bool ok = !k.empty() && (std::isalpha(static_cast<unsigned char>(k[0])) || k[0] == '_');
    for (char c : k)
      ok = ok && static_cast<unsigned char>(c) < 0x80 &&
           (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
    if (!ok)
      return std::unexpected(error::invalid(
          "metadata name " + single_quoted(k) +
          " must be a C# identifier (ASCII letter or '_', then letters, digits, '_')"));
    for (auto jt = std::next(it); jt != metadata.end(); ++jt)
      if (ascii_iequals(k, jt->first))
        return std::unexpected(error::invalid("metadata names " + single_quoted(k) + " and " +
                                              single_quoted(jt->first) +
                                              " differ only by case (names are case-insensitive)"));
    for (char c : v)
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7F)
        return std::unexpected(error::invalid("metadata value of " + single_quoted(k) +
                                              " must be printable ASCII (encode other bytes)"));
    if (!v.empty() && (v.front() == ' ' || v.back() == ' '))
      return std::unexpected(error::invalid("metadata value of " + single_quoted(k) +
                                            " must not start or end with a space"));
    total += k.size() + v.size();
  }
  if (total > max_metadata_bytes)
    return std::unexpected(error::exceeded("metadata names plus values must total at most 8192 bytes (have " +
                                 std::to_string(total) + ")"));
  return {};
}

result<void> validate_block_ids(const std::vector<std::string>& block_ids) {
  if (block_ids.empty())
    return std::unexpected(error::invalid("a block list must name at least one block"));
  if (block_ids.size() > max_blob_blocks)
    return std::unexpected(error::exceeded("a blob holds at most 50000 blocks (block list has " +
                                 std::to_string(block_ids.size()) + ")"));
  const std::size_t len = block_ids.front().size();
  for (std::size_t i = 0; i < block_ids.size(); ++i) {
    const std::string& id = block_ids[i];
    if (id.size() != len)
      return std::unexpected(error::invalid(
          "all block ids of a blob must have the same length: id #" + std::to_string(i) + " has " +
          std::to_string(id.size()) + " characters, id #0 has " + std::to_string(len)));
    auto raw = base64_decode(id);
    if (!raw || raw->empty())
      return std::unexpected(error::invalid("block id #" + std::to_string(i) + " " + single_quoted(id) +
                                            " is not non-empty base64"));
    if (raw->size() > max_block_id_bytes)
      return std::unexpected(error::invalid("block id #" + std::to_string(i) +
                                            " decodes to more than 64 bytes"));
  }
  return {};
}

result<std::string> make_block_id(std::uint32_t index) {
  if (index >= 100'000'000u)
    return std::unexpected(error::invalid("block index " + std::to_string(index) +
                                          " is beyond the 8-digit block id format"));
  char buf[32];
  std::snprintf(buf, sizeof buf, "shoal-blk-%08u", static_cast<unsigned>(index));
  return base64_encode(buf);
}

std::string_view to_string(blob_type t) noexcept {
  switch (t) {
  case blob_type::block: return "BlockBlob";
  case blob_type::append: return "AppendBlob";
  case blob_type::page: return "PageBlob";
  case blob_type::unknown: break;
  }
  return "Unknown";
}

blob_type blob_type_from(std::string_view s) noexcept {
  if (s == "BlockBlob")
    return blob_type::block;
  if (s == "AppendBlob")
    return blob_type::append;
  if (s == "PageBlob")
    return blob_type::page;
  return blob_type::unknown;
}

// -- containers ---------------------------------------------------------------------------------------

namespace {

// Create Container (PUT) or Delete Container (DELETE) of `container`, `what` naming it in errors.
result<void> container_call(const pipeline& p, http_method method, std::string_view container, const char* what) {
  if (auto v = validate_container_name(container); !v)
    return v;
  storage_request req;
  req.method = method;
  req.path = container_path(container);
  req.query = {{"restype", "container"}};
  auto r = p.send(service::blob, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), what + single_quoted(container)));
  return {};
}

} // namespace

result<void> blob_client::create_container(std::string_view container) const {
  return container_call(pipeline_, http_method::put, container, "create container ");
}

result<bool> blob_client::create_container_if_not_exists(std::string_view container) const {
  auto r = create_container(container);
  if (r)
    return true;
  if (r.error().code == errc::conflict && r.error().service_code == "ContainerAlreadyExists")
    return false;
  return std::unexpected(std::move(r.error()));
}

result<void> blob_client::delete_container(std::string_view container) const {
  return container_call(pipeline_, http_method::del, container, "delete container ");
}

result<bool> blob_client::delete_container_if_exists(std::string_view container) const {
  auto r = delete_container(container);
  if (r)
    return true;
  if (r.error().code == errc::not_found)
    return false;
  return std::unexpected(std::move(r.error()));
}

// -- block blobs -----------------------------------------------------------------------------------

result<blob_write_result> blob_client::put_blob(std::string_view container, std::string_view blob,
                                                std::string_view body,
                                                const put_blob_options& opts) const {
  if (auto v = validate_names(container, blob); !v)
    return std::unexpected(v.error());
  if (auto v = validate_metadata(opts.metadata); !v)
    return std::unexpected(v.error());
  if (body.size() > max_put_blob_bytes)
    return std::unexpected(error::exceeded("Put Blob takes at most 5000 MiB; use upload() to stage blocks"));
  storage_request req;
  req.method = http_method::put;
  req.path = blob_path(container, blob);
  req.headers.emplace_back("x-ms-blob-type", "BlockBlob");
  req.headers.emplace_back("Content-Type", opts.content_type);
  std::string md5;
  if (opts.send_md5) {
    md5 = base64_encode(storage::md5(body));
    req.headers.emplace_back("Content-MD5", md5);
  }
  add_metadata(req.headers, opts.metadata);
  if (opts.create_only)
    req.headers.emplace_back("If-None-Match", "*");
  add_if_match(req.headers, opts.if_match);
  req.body = std::string(body);
  req.timeout = opts.timeout;
  auto r = pipeline_.send(service::blob, std::move(req));
  if (r)
    return write_result_from(*r);
  error e = std::move(r.error());
  // A retried conditional put that meets "already exists" / "condition not met" may have met its
  // own first attempt: the same bytes under the same name mean it did (or an identical write won
  // the race, which is just as good for an idempotent writer).
  if ((opts.create_only || opts.if_match) && opts.send_md5 && is_retry_conflict(e)) {
    if (auto p = get_properties(container, blob);
        p && p->content_md5 == md5 && p->content_length == body.size())
      return recovered_from(*p);
  }
  return std::unexpected(with_context(std::move(e), "put blob " + single_quoted(blob)));
}

result<void> blob_client::put_block(std::string_view container, std::string_view blob,
                                    std::string_view block_id, std::string_view body) const {
  if (auto v = validate_names(container, blob); !v)
    return v;
  if (auto v = validate_block_ids({std::string(block_id)}); !v)
    return v;
  if (body.size() > max_put_block_bytes)
    return std::unexpected(error::exceeded("Put Block takes at most 4000 MiB (have " +
                                 std::to_string(body.size()) + " bytes)"));
  storage_request req;
  req.method = http_method::put;
  req.path = blob_path(container, blob);
  req.query = {{"comp", "block"}, {"blockid", std::string(block_id)}};
  req.headers.emplace_back("Content-Type", "application/octet-stream");
  req.headers.emplace_back("Content-MD5", base64_encode(md5(body)));
  req.body = std::string(body);
  auto r = pipeline_.send(service::blob, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "put block of " + single_quoted(blob)));
  return {};
}

result<blob_write_result> blob_client::put_block_list(std::string_view container,
                                                      std::string_view blob,
                                                      const std::vector<std::string>& block_ids,
                                                      const put_blob_options& opts,
                                                      std::string_view whole_md5) const {
  if (auto v = validate_names(container, blob); !v)
    return std::unexpected(v.error());
  if (auto v = validate_metadata(opts.metadata); !v)
    return std::unexpected(v.error());
  if (auto v = validate_block_ids(block_ids); !v)
    return std::unexpected(v.error());
  storage_request req;
  req.method = http_method::put;
  req.path = blob_path(container, blob);
  req.query = {{"comp", "blocklist"}};
  req.body = xml::build_block_list(block_ids);
  req.headers.emplace_back("Content-Type", "application/xml");
  req.headers.emplace_back("Content-MD5", base64_encode(md5(req.body)));
  req.headers.emplace_back("x-ms-blob-content-type", opts.content_type);
  if (opts.send_md5 && !whole_md5.empty())
    req.headers.emplace_back("x-ms-blob-content-md5", std::string(whole_md5));
  add_metadata(req.headers, opts.metadata);
  if (opts.create_only)
    req.headers.emplace_back("If-None-Match", "*");
  add_if_match(req.headers, opts.if_match);
  req.timeout = opts.timeout;
  auto r = pipeline_.send(service::blob, req);
  if (!r) {
    if ((opts.create_only || opts.if_match) && opts.send_md5 && !whole_md5.empty() &&
        is_retry_conflict(r.error()))
      if (auto p = get_properties(container, blob); p && p->content_md5 == whole_md5)
        return recovered_from(*p);
    return std::unexpected(with_context(std::move(r.error()), "put block list of " + single_quoted(blob)));
  }
  blob_write_result w = write_result_from(*r);
  // The response's Content-MD5 is that of the request body (the XML); report the blob's own.
  w.content_md5 = std::string(whole_md5);
  return w;
}

result<blob_write_result> blob_client::upload(std::string_view container, std::string_view blob,
                                              std::string_view body,
                                              const upload_options& opts) const {
  if (body.size() <= opts.single_put_max_bytes)
    return put_blob(container, blob, body, opts.blob);
  if (auto v = validate_names(container, blob); !v)
    return std::unexpected(v.error());
  if (auto v = validate_metadata(opts.blob.metadata); !v)
    return std::unexpected(v.error());
  if (opts.block_bytes == 0 || opts.block_bytes > max_put_block_bytes)
    return std::unexpected(error::invalid("upload block_bytes must be 1 byte - 4000 MiB"));
  const std::size_t blocks = (body.size() + opts.block_bytes - 1) / opts.block_bytes;
  if (blocks > max_blob_blocks)
    return std::unexpected(error::exceeded("upload of " + std::to_string(body.size()) + " bytes in " +
                                 std::to_string(opts.block_bytes) + "-byte blocks needs " +
                                 std::to_string(blocks) + " blocks; a blob holds at most 50000"));
  std::vector<std::string> ids;
  ids.reserve(blocks);
  for (std::size_t i = 0; i < blocks; ++i) {
    auto id = make_block_id(static_cast<std::uint32_t>(i));
    if (!id)
      return std::unexpected(id.error());
    auto r = put_block(container, blob, *id, body.substr(i * opts.block_bytes, opts.block_bytes));
    if (!r)
      return std::unexpected(r.error());
    ids.push_back(std::move(*id));
  }
  std::string whole = opts.blob.send_md5 ? base64_encode(md5(body)) : std::string();
  return put_block_list(container, blob, ids, opts.blob, whole);
}

// -- append blobs ----------------------------------------------------------------------------------

result<blob_write_result>
blob_client::create_append_blob(std::string_view container, std::string_view blob,
                                const create_append_blob_options& opts) const {
  if (auto v = validate_names(container, blob); !v)
    return std::unexpected(v.error());
  if (auto v = validate_metadata(opts.metadata); !v)
    return std::unexpected(v.error());
  storage_request req;
  req.method = http_method::put;
  req.path = blob_path(container, blob);
  req.headers.emplace_back("x-ms-blob-type", "AppendBlob");
  req.headers.emplace_back("x-ms-blob-content-type", opts.content_type);
  add_metadata(req.headers, opts.metadata);
  if (opts.create_only)
    req.headers.emplace_back("If-None-Match", "*");
  add_if_match(req.headers, opts.if_match);
  auto r = pipeline_.send(service::blob, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "create append blob " + single_quoted(blob)));
  return write_result_from(*r);
}

result<append_result> blob_client::append_block(std::string_view container, std::string_view blob,
                                                std::string_view body,
                                                const append_block_options& opts) const {
  if (auto v = validate_names(container, blob); !v)
    return std::unexpected(v.error());
  if (body.empty())
    return std::unexpected(error::invalid("an append block must hold at least 1 byte"));
  if (body.size() > max_append_block_bytes)
    return std::unexpected(error::exceeded("Append Block takes at most 100 MiB (have " +
                                 std::to_string(body.size()) + " bytes)"));
  storage_request req;
  req.method = http_method::put;
  req.path = blob_path(container, blob);
  req.query = {{"comp", "appendblock"}};
  req.headers.emplace_back("Content-Type", "application/octet-stream");
  if (opts.send_md5)
    req.headers.emplace_back("Content-MD5", base64_encode(md5(body)));
  if (opts.expected_offset)
    req.headers.emplace_back("x-ms-blob-condition-appendpos", std::to_string(*opts.expected_offset));
  if (opts.max_size)
    req.headers.emplace_back("x-ms-blob-condition-maxsize", std::to_string(*opts.max_size));
  add_if_match(req.headers, opts.if_match);
  req.body = std::string(body);
  auto r = pipeline_.send(service::blob, req);
  if (r) {
    append_result a;
    a.etag = std::string(r->header("etag").value_or(""));
    a.date = date_header(*r, "date");
    std::string_view off = r->header("x-ms-blob-append-offset").value_or("");
    std::string_view cnt = r->header("x-ms-blob-committed-block-count").value_or("");
    if (!parse_unsigned(off, a.offset) || !parse_unsigned(cnt, a.committed_block_count))
      return std::unexpected(error::malformed_response("Append Block answered without a valid "
                                          "x-ms-blob-append-offset / committed-block-count ('" +
                                          std::string(off) + "', '" + std::string(cnt) + "')"));
    return a;
  }
  error e = std::move(r.error());
  // Reference §8: if an earlier attempt of this very request landed and only its response was
  // lost, the retry finds the blob longer than expected_offset. It was our append iff our bytes
  // sit at expected_offset; then report success instead of a false precondition failure.
  if (opts.expected_offset && e.attempts > 1 && e.code == errc::precondition_failed &&
      e.service_code == "AppendPositionConditionNotMet") {
    get_blob_options g;
    g.range = byte_range{*opts.expected_offset, body.size()};
    g.verify_md5 = false;
    if (auto got = get_blob(container, blob, g); got && got->body == body) {
      append_result a;
      a.offset = *opts.expected_offset;
      a.committed_block_count = got->properties.committed_block_count.value_or(0);
      a.etag = got->properties.etag;
      a.date = got->date;
      a.recovered = true;
      return a;
    }
  }
  if (e.service_code == "AppendPositionConditionNotMet" && opts.expected_offset)
    return std::unexpected(with_context(std::move(e), "append to " + single_quoted(blob) +
                                                          ": blob length is not the expected " +
                                                          std::to_string(*opts.expected_offset)));
  return std::unexpected(with_context(std::move(e), "append to " + single_quoted(blob)));
}

// -- reads -----------------------------------------------------------------------------------------

result<blob_download> blob_client::get_blob(std::string_view container, std::string_view blob,
                                            const get_blob_options& opts) const {
  if (auto v = validate_names(container, blob); !v)
    return std::unexpected(v.error());
  storage_request req;
  req.method = http_method::get;
  req.path = blob_path(container, blob);
  if (opts.range) {
    if (opts.range->length && *opts.range->length == 0)
      return std::unexpected(error::invalid("a byte range must be at least 1 byte long"));
    std::string v = "bytes=" + std::to_string(opts.range->offset) + "-";
    if (opts.range->length)
      v += std::to_string(opts.range->offset + *opts.range->length - 1);
    req.headers.emplace_back("x-ms-range", std::move(v));
  }
  add_if_match(req.headers, opts.if_match);
  req.max_body_bytes = opts.max_bytes;
  auto r = pipeline_.send(service::blob, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "get blob " + single_quoted(blob)));
  const bool ranged = r->status == 206;
  auto props = properties_from(*r, ranged);
  if (!props)
    return std::unexpected(with_context(std::move(props.error()), "get blob " + single_quoted(blob)));
  blob_download d;
  d.properties = std::move(*props);
  d.date = date_header(*r, "date");
  d.body = std::move(r->body);
  if (ranged) {
    std::string_view cr = r->header("content-range").value_or("");
    auto sp = cr.find(' '), dash = cr.find('-');
    if (sp != std::string_view::npos && dash != std::string_view::npos && dash > sp)
      (void)parse_unsigned(cr.substr(sp + 1, dash - sp - 1), d.range_offset);
  } else {
    d.properties.content_length = d.body.size();
    if (opts.verify_md5 && !d.properties.content_md5.empty() &&
        base64_encode(md5(d.body)) != d.properties.content_md5)
      return std::unexpected(error::malformed_response("get blob " + single_quoted(blob) +
                                          ": body does not match its Content-MD5"));
  }
  return d;
}

result<blob_properties> blob_client::get_properties(std::string_view container,
                                                    std::string_view blob) const {
  if (auto v = validate_names(container, blob); !v)
    return std::unexpected(v.error());
  storage_request req;
  req.method = http_method::head;
  req.path = blob_path(container, blob);
  auto r = pipeline_.send(service::blob, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "get properties of " + single_quoted(blob)));
  return properties_from(*r, false);
}

result<blob_write_result> blob_client::set_metadata(std::string_view container,
                                                    std::string_view blob,
                                                    const metadata_map& metadata,
                                                    const blob_condition_options& opts) const {
  if (auto v = validate_names(container, blob); !v)
    return std::unexpected(v.error());
  if (auto v = validate_metadata(metadata); !v)
    return std::unexpected(v.error());
  storage_request req;
  req.method = http_method::put;
  req.path = blob_path(container, blob);
  req.query = {{"comp", "metadata"}};
  add_metadata(req.headers, metadata);
  add_if_match(req.headers, opts.if_match);
  auto r = pipeline_.send(service::blob, req);
  if (!r) {
    if (opts.if_match && is_retry_conflict(r.error())) {
      metadata_map ours;
      for (const auto& [k, v] : metadata)
        ours[ascii_lower(k)] = v;
      if (auto p = get_properties(container, blob); p && p->metadata == ours)
        return recovered_from(*p);
    }
    return std::unexpected(with_context(std::move(r.error()), "set metadata of " + single_quoted(blob)));
  }
  return write_result_from(*r);
}

// -- listing and delete ----------------------------------------------------------------------------

result<blob_list_page> blob_client::list_blobs(std::string_view container,
                                               const list_blobs_options& opts) const {
  if (auto v = validate_container_name(container); !v)
    return std::unexpected(v.error());
  if (opts.max_results > 5000)
    return std::unexpected(error::invalid("list max_results must be 1-5000 (0 = default), not " +
                                          std::to_string(opts.max_results)));
  storage_request req;
  req.method = http_method::get;
  req.path = container_path(container);
  req.query = {{"restype", "container"}, {"comp", "list"}};
  if (!opts.prefix.empty())
    req.query.emplace_back("prefix", opts.prefix);
  if (!opts.delimiter.empty())
    req.query.emplace_back("delimiter", opts.delimiter);
  if (!opts.marker.empty())
    req.query.emplace_back("marker", opts.marker);
  if (opts.max_results != 0)
    req.query.emplace_back("maxresults", std::to_string(opts.max_results));
  if (opts.include_metadata)
    req.query.emplace_back("include", "metadata");
  auto r = pipeline_.send(service::blob, req);
  if (!r)
    return std::unexpected(with_context(std::move(r.error()), "list blobs in " + single_quoted(container)));
  auto page = xml::parse_blob_list(r->body);
  if (!page) {
    error e = std::move(page.error());
    e.http_status = r->status;
    e.request_id = std::string(r->header("x-ms-request-id").value_or(""));
    return std::unexpected(with_context(std::move(e), "list blobs in " + single_quoted(container)));
  }
  return page;
}

blob_pager blob_client::list_blobs_pager(std::string_view container, list_blobs_options opts) const {
  return blob_pager(*this, std::string(container), std::move(opts));
}

result<void> blob_client::delete_blob(std::string_view container, std::string_view blob,
                                      const blob_condition_options& opts) const {
  if (auto v = validate_names(container, blob); !v)
    return v;
  storage_request req;
  req.method = http_method::del;
  req.path = blob_path(container, blob);
  req.headers.emplace_back("x-ms-delete-snapshots", "include");
  add_if_match(req.headers, opts.if_match);
  auto r = pipeline_.send(service::blob, req);
  if (!r) {
    if (r.error().code == errc::not_found && r.error().attempts > 1 &&
        r.error().service_code == "BlobNotFound")
      return {}; // an earlier attempt deleted it; the response was lost
    return std::unexpected(with_context(std::move(r.error()), "delete blob " + single_quoted(blob)));
  }
  return {};
}

// -- pager -----------------------------------------------------------------------------------------

blob_pager::blob_pager(blob_client c, std::string container, list_blobs_options o)
    : client_(std::move(c)), container_(std::move(container)), opts_(std::move(o)) {}

result<std::optional<blob_list_page>> blob_pager::next() {
  if (done_)
    return std::optional<blob_list_page>{};
  auto page = client_.list_blobs(container_, opts_);
  if (!page)
    return std::unexpected(std::move(page.error()));
  if (page->next_marker.empty())
    done_ = true;
  else
    opts_.marker = page->next_marker;
  return std::optional<blob_list_page>{std::move(*page)};
}

} // namespace shoal::storage
