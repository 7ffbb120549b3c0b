#pragma once
// The XML bodies of the Blob and Queue services: what the clients build and parse.
// Public so tests can feed it malformed input; callers normally use blob_client/queue_client.
// pugixml stays inside xml_codec.cpp. Every function is pure and thread-safe, and never throws:
// a body that does not parse or lacks a required element is errc::bad_response.

#include "storage/blob_client.hpp"
#include "storage/error.hpp"
#include "storage/queue_client.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::storage::xml {

/// Number of Unicode code points in `s`, or std::nullopt if `s` is not valid UTF-8
/// (overlong forms, surrogates and values above U+10FFFF are invalid).
std::optional<std::size_t> utf8_code_points(std::string_view s) noexcept;

/// Whether `s` is valid UTF-8 made only of XML 1.0 characters (no control characters other
/// than TAB, LF and CR; no U+FFFE/U+FFFF), i.e. whether it can travel as element text.
bool is_xml_text(std::string_view s) noexcept;

/// Escapes `text` for element content: & < > " ' and, so that they survive XML end-of-line
/// normalisation, CR as &#13; (LF and TAB are kept).
std::string escape(std::string_view text);

/// `<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>id</Latest>…</BlockList>`
/// (REST "Put Block List"). The ids are written as given (callers validate them first).
std::string build_block_list(const std::vector<std::string>& block_ids);

/// `<QueueMessage><MessageText>escaped text</MessageText></QueueMessage>` (REST "Put Message").
std::string build_queue_message(std::string_view text);

/// Parses a List Blobs response (`EnumerationResults` → `Blobs` → `Blob` / `BlobPrefix`,
/// `NextMarker`). Metadata names are lower-cased. Errors: bad_response (not XML, wrong root,
/// a Blob without Name, a number that does not parse).
[[nodiscard]] result<blob_list_page> parse_blob_list(std::string_view body);

/// Parses a `QueueMessagesList` (Get Messages, Peek Messages, Put Message), decoding the text
/// per `enc` (an undecodable text is kept raw and flagged, not an error).
/// Errors: bad_response (not XML, wrong root, a message without MessageId, bad number or date).
[[nodiscard]] result<std::vector<queue_message>> parse_queue_messages(std::string_view body,
                                                                      message_encoding enc);

/// Code and message of a service error body.
struct error_body {
  std::string code;    ///< <Code>, e.g. "BlobNotFound"
  std::string message; ///< <Message>, first line only (the RequestId/Time lines are dropped)
  std::string detail;  ///< other children as "Name=value; …", e.g. "MaxLimit=65536"
};

/// Parses `<Error><Code/><Message/>…</Error>`. Errors: bad_response (not XML, not an Error).
[[nodiscard]] result<error_body> parse_error(std::string_view body);

} // namespace shoal::storage::xml
