#pragma once
// Internal to shoal::storage (used by table_client.cpp and its unit tests): the wire format of
// entity group transactions (multipart/mixed with one changeset, reference §5) and entity URLs.

#include "storage/error.hpp"
#include "storage/table_client.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal::storage::detail {

/// `/{table}(PartitionKey='pk',RowKey='rk')`: quotes doubled, then percent-encoded (reference §3).
std::string entity_path(std::string_view table, std::string_view pk, std::string_view rk);

/// A built `$batch` request body.
struct batch_body {
  std::string content_type; ///< "multipart/mixed; boundary=batch_<id>"
  std::string body;         ///< CRLF line endings
};

/// Builds the body for `ops` on `table`. `table_endpoint` is the service base URL, e.g.
/// "http://127.0.0.1:10002/devstoreaccount1" (inner request lines use absolute URLs).
/// `batch_id`/`changeset_id` make the boundaries (tests pass fixed ones). Does not validate.
batch_body build_batch_body(std::string_view table_endpoint, std::string_view table,
                            const std::vector<table_operation>& ops, std::string_view batch_id,
                            std::string_view changeset_id);

/// One inner HTTP response of a batch response.
struct batch_part {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers; ///< names lower-cased (part + HTTP headers)
  std::string body;

  std::optional<std::string_view> header(std::string_view lower_name) const noexcept {
    for (const auto& [k, v] : headers)
      if (k == lower_name)
        return std::string_view(v);
    return std::nullopt;
  }
};

/// Parses a `multipart/mixed; boundary=batchresponse_…` body (a changeset inside, or directly
/// the parts), leniently: extra boundary lines, LF-only line endings and missing trailers are
/// tolerated (Azurite's >100-operation answer). Errors: bad_response.
[[nodiscard]] result<std::vector<batch_part>> parse_batch_response(std::string_view content_type,
                                                                   std::string_view body);

/// The 0-based index of the failed operation a failure part names: the `N:` prefix of the
/// odata.error message, else Content-ID − 1. nullopt when neither is there.
std::optional<std::size_t> failed_operation_index(const batch_part& part);

/// The odata.error code and message of a JSON error body ("" when absent or not JSON).
std::pair<std::string, std::string> parse_odata_error(std::string_view body);

} // namespace shoal::storage::detail
