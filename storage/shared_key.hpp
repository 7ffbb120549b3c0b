#pragma once
// Shared Key authorization of Azure Storage requests (REST "Authorize with Shared Key";
// shared/reference/azure-storage-rest.md §2). Pure functions over the request as it goes on
// the wire, so they can be checked against fixed, known-good strings to sign.

#include "storage/http.hpp"

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace shoal::storage::shared_key {

/// Name/value pairs as the request carries them (http_request::headers, storage_request::query).
using pairs = std::span<const std::pair<std::string, std::string>>;

/// The parts of one request that are signed. Everything is borrowed for the call only.
struct signing_input {
  http_method method = http_method::get;
  std::string_view account; ///< account name, e.g. "devstoreaccount1"
  /// URL path exactly as sent (percent-encoded), e.g. "/devstoreaccount1/cont1"; "" means "/".
  /// With path-style endpoints it starts with the account, which then appears twice in the
  /// canonicalized resource, as the service expects.
  std::string_view path;
  pairs query;                     ///< DECODED query names/values (no SAS parameters)
  pairs headers;                   ///< headers as sent, any name case; must include x-ms-date
  std::size_t content_length = 0;  ///< body bytes; 0 signs as an empty line
};

/// CanonicalizedHeaders for blob/queue: every x-ms-* header, name lower-cased, value trimmed,
/// sorted by name, each as "name:value\n". Thread-safe (pure).
std::string canonicalized_headers(pairs headers);

/// CanonicalizedResource for blob/queue: "/" + account + path, then "\nname:v1,v2" per query
/// parameter (names lower-cased and sorted, values sorted). No trailing newline.
std::string canonicalized_resource(std::string_view account, std::string_view path, pairs query);

/// CanonicalizedResource for the Table service: "/" + account + path, plus "?comp=<v>" when
/// a `comp` parameter exists; every other parameter is excluded.
std::string table_canonicalized_resource(std::string_view account, std::string_view path,
                                         pairs query);

/// Blob/Queue `SharedKey` string to sign: VERB, the 11 standard header lines (Content-Length
/// empty when 0, Date empty), canonicalized headers, canonicalized resource (reference §2a).
std::string blob_queue_string_to_sign(const signing_input& in);

/// Table `SharedKey` string to sign: "VERB\nContent-MD5\nContent-Type\nDate\nresource", the
/// Date slot holding x-ms-date when no Date header is sent (reference §2b).
std::string table_string_to_sign(const signing_input& in);

/// Table `SharedKeyLite` string to sign: "Date\nresource" (reference §2b).
std::string table_lite_string_to_sign(const signing_input& in);

/// Base64(HMAC-SHA256(decoded_key, string_to_sign)). `decoded_key` is storage_account::key.
std::string signature(std::string_view decoded_key, std::string_view string_to_sign);

/// "SharedKey <account>:<signature>" (or "SharedKeyLite ..." when `lite`).
std::string authorization(std::string_view account, std::string_view signature, bool lite = false);

/// Value of header `name` (ASCII case-insensitive) in `headers`, or "" when absent.
std::string_view find_header(pairs headers, std::string_view name) noexcept;

} // namespace shoal::storage::shared_key
