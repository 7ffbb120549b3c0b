#include "storage/xml_codec.hpp"

#include "storage/encoding.hpp"

#include <pugixml.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

namespace shoal::storage::xml {
namespace {

// parse_default minus parse_eol: a CR the service sent stays a CR (message text is opaque).
constexpr unsigned parse_flags = pugi::parse_default & ~pugi::parse_eol;

// Loads `body` into `doc`; on failure an error naming `what` and pugixml's description.
result<void> load(pugi::xml_document& doc, std::string_view body, const char* what) {
  if (body.empty())
    return std::unexpected(error::malformed_response(std::string(what) + ": empty body"));
  pugi::xml_parse_result r = doc.load_buffer(body.data(), body.size(), parse_flags,
                                             pugi::encoding_utf8);
  if (!r)
    return std::unexpected(error::malformed_response(std::string(what) + ": malformed XML (" +
                                        r.description() + " at offset " +
                                        std::to_string(r.offset) + ")"));
  return {};
}

template <class T> bool parse_unsigned(std::string_view s, T& out) {
  if (s.empty())
    return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && p == s.data() + s.size();
}

// ETags in listings may come without quotes (Azure: 0x8D…); headers carry them quoted. We
// always hand out the quoted form so it can be sent back in If-Match as is.
std::string quoted_etag(std::string_view e) {
  if (e.empty() || e.front() == '"' || e.starts_with("W/"))
    return std::string(e);
  return '"' + std::string(e) + '"';
}

// An optional RFC 1123 date element: absent or empty is fine, present and unparsable is not.
result<std::optional<std::chrono::system_clock::time_point>> date_of(pugi::xml_node parent,
                                                                     const char* name) {
  pugi::xml_node n = parent.child(name);
  std::string_view v = n.text().get();
  if (!n || v.empty())
    return std::optional<std::chrono::system_clock::time_point>{};
  // system_clock counts nanoseconds in 64 bits and ends in 2262; the service writes
  // "Fri, 31 Dec 9999 23:59:59 GMT" for messages that never expire. Saturate instead of
  // letting the conversion overflow.
  if (std::size_t sp = v.find(' ', v.find(' ', v.find(' ') + 1) + 1); sp != std::string_view::npos) {
    int year = 0;
    std::string_view y = v.substr(sp + 1, 4);
    if (parse_unsigned(y, year) && year >= 2262)
      return std::optional<std::chrono::system_clock::time_point>{
          std::chrono::system_clock::time_point::max()};
  }
  auto t = parse_http_date(v);
  if (!t)
    return std::unexpected(error::malformed_response(std::string("bad date in <") + name + ">: " +
                                        std::string(v)));
  return std::optional<std::chrono::system_clock::time_point>{*t};
}

// <Name Encoded="true">percent-encoded</Name> is used for names with XML-invalid characters.
result<std::string> name_of(pugi::xml_node entry, const char* what) {
  pugi::xml_node n = entry.child("Name");
  if (!n)
    return std::unexpected(error::malformed_response(std::string("List Blobs: <") + what +
                                        "> without <Name>"));
  std::string_view v = n.text().get();
  if (n.attribute("Encoded").as_bool()) {
    auto d = url_decode(v);
    if (!d)
      return std::unexpected(error::malformed_response("List Blobs: bad percent-encoded name"));
    return *d;
  }
  return std::string(v);
}

result<blob_item> parse_blob(pugi::xml_node b) {
  blob_item item;
  auto name = name_of(b, "Blob");
  if (!name)
    return std::unexpected(name.error());
  item.name = std::move(*name);
  if (item.name.empty())
    return std::unexpected(error::malformed_response("List Blobs: <Blob> with an empty <Name>"));
  pugi::xml_node p = b.child("Properties");
  blob_properties& props = item.properties;
  props.etag = quoted_etag(p.child("Etag").text().get());
  if (pugi::xml_node len = p.child("Content-Length"); len) {
    if (!parse_unsigned(std::string_view(len.text().get()), props.content_length))
      return std::unexpected(error::malformed_response("List Blobs: bad <Content-Length> for " + item.name));
  }
  props.content_type = p.child("Content-Type").text().get();
  props.content_md5 = p.child("Content-MD5").text().get();
  props.type = blob_type_from(p.child("BlobType").text().get());
  auto lm = date_of(p, "Last-Modified");
  if (!lm)
    return std::unexpected(lm.error());
  props.last_modified = *lm;
  for (pugi::xml_node m : b.child("Metadata").children()) {
    if (m.type() != pugi::node_element)
      continue;
    std::string_view n = m.name();
    if (n == "x-ms-invalid-name") // Azure's placeholder for names that are not identifiers
      continue;
    props.metadata[ascii_lower(n)] = m.text().get();
  }
  return item;
}

// Decodes one UTF-8 sequence at s[i] (storage::utf8_sequence_length's rules); returns its code
// point and advances i, or -1 if invalid.
long decode_utf8(std::string_view s, std::size_t& i) noexcept {
  const char* p = s.data() + i;
  const std::size_t n = static_cast<unsigned char>(*p) < 0x80 ? 1 : utf8_sequence_length(p, s.data() + s.size());
  if (n == 0)
    return -1;
  i += n;
  return static_cast<long>(utf8_decode(p, n));
}

} // namespace

std::optional<std::size_t> utf8_code_points(std::string_view s) noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.size(); ++n)
    if (decode_utf8(s, i) < 0)
      return std::nullopt;
  return n;
}

bool is_xml_text(std::string_view s) noexcept {
  for (std::size_t i = 0; i < s.size();) {
    long cp = decode_utf8(s, i);
    if (cp < 0 || (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0xFFFE ||
        cp == 0xFFFF)
      return false;
  }
  return true;
}

std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (char c : text) {
    switch (c) {
    case '&': out += "&amp;"; break;
    case '<': out += "&lt;"; break;
    case '>': out += "&gt;"; break;
    case '"': out += "&quot;"; break;
    case '\'': out += "&apos;"; break;
    case '\r': out += "&#13;"; break;
    default: out += c;
    }
  }
  return out;
}

std::string build_block_list(const std::vector<std::string>& block_ids) {
  std::string out = R"(<?xml version="1.0" encoding="utf-8"?><BlockList>)";
  out.reserve(out.size() + block_ids.size() * 48 + 16);
  for (const std::string& id : block_ids) {
    out += "<Latest>";
    out += escape(id);
    out += "</Latest>";
  }
  out += "</BlockList>";
  return out;
}

std::string build_queue_message(std::string_view text) {
  std::string out = "<QueueMessage><MessageText>";
  out += escape(text);
  out += "</MessageText></QueueMessage>";
  return out;
}

result<blob_list_page> parse_blob_list(std::string_view body) {
  pugi::xml_document doc;
  if (auto r = load(doc, body, "List Blobs"); !r)
    return std::unexpected(r.error());
  pugi::xml_node root = doc.child("EnumerationResults");
  if (!root)
    return std::unexpected(error::malformed_response("List Blobs: root element is not <EnumerationResults>"));
  blob_list_page page;
  for (pugi::xml_node n : root.child("Blobs").children()) {
    if (n.type() != pugi::node_element)
      continue;
    if (std::strcmp(n.name(), "Blob") == 0) {
      auto item = parse_blob(n);
      if (!item)
        return std::unexpected(item.error());
      page.blobs.push_back(std::move(*item));
    } else if (std::strcmp(n.name(), "BlobPrefix") == 0) {
      auto name = name_of(n, "BlobPrefix");
      if (!name)
        return std::unexpected(name.error());
      page.prefixes.push_back(std::move(*name));
    }
  }
  page.next_marker = root.child("NextMarker").text().get();
  return page;
}

result<std::vector<queue_message>> parse_queue_messages(std::string_view body,
                                                        message_encoding enc) {
  pugi::xml_document doc;
  if (auto r = load(doc, body, "queue messages"); !r)
    return std::unexpected(r.error());
  pugi::xml_node root = doc.child("QueueMessagesList");
  if (!root)
    return std::unexpected(error::malformed_response("queue messages: root element is not <QueueMessagesList>"));
  std::vector<queue_message> out;
  for (pugi::xml_node m : root.children("QueueMessage")) {
    queue_message q;
    q.message_id = m.child("MessageId").text().get();
    if (q.message_id.empty())
      return std::unexpected(error::malformed_response("queue messages: <QueueMessage> without <MessageId>"));
    q.pop_receipt = m.child("PopReceipt").text().get();
    if (pugi::xml_node dc = m.child("DequeueCount"); dc) {
      if (!parse_unsigned(std::string_view(dc.text().get()), q.dequeue_count))
        return std::unexpected(error::malformed_response("queue messages: bad <DequeueCount> of " +
                                            q.message_id));
    }
    auto ins = date_of(m, "InsertionTime");
    auto exp = date_of(m, "ExpirationTime");
    auto vis = date_of(m, "TimeNextVisible");
    if (!ins)
      return std::unexpected(ins.error());
    if (!exp)
      return std::unexpected(exp.error());
    if (!vis)
      return std::unexpected(vis.error());
    q.insertion_time = *ins;
    q.expiration_time = *exp;
    q.time_next_visible = *vis;
    std::string text = m.child("MessageText").text().get();
    if (enc == message_encoding::base64) {
      if (auto d = base64_decode(text)) {
        q.text = std::move(*d);
      } else {
        q.text = std::move(text);
        q.undecodable = true;
      }
    } else {
      q.text = std::move(text);
    }
    out.push_back(std::move(q));
  }
  return out;
}

result<error_body> parse_error(std::string_view body) {
  pugi::xml_document doc;
  if (auto r = load(doc, body, "error body"); !r)
    return std::unexpected(r.error());
  pugi::xml_node root = doc.child("Error");
  if (!root)
    return std::unexpected(error::malformed_response("error body: root element is not <Error>"));
  error_body e;
  e.code = root.child("Code").text().get();
  std::string_view msg = root.child("Message").text().get();
  e.message = std::string(msg.substr(0, msg.find('\n')));
  while (!e.message.empty() && (e.message.back() == '\r' || e.message.back() == ' '))
    e.message.pop_back();
  for (pugi::xml_node n : root.children()) {
    if (n.type() != pugi::node_element)
      continue;
    std::string_view name = n.name();
    if (name == "Code" || name == "Message")
      continue;
    if (!e.detail.empty())
      e.detail += "; ";
    e.detail += name;
    e.detail += '=';
    e.detail += n.text().get();
  }
  return e;
}

} // namespace shoal::storage::xml
