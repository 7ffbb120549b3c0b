#pragma once
// Azure Blob service client: containers, block blobs (single-shot and staged), append blobs,
// reads, metadata and listings over the shared signing/retry pipeline.
// Reference: shared/reference/azure-storage-rest.md §6 and the REST pages named per call.

#include "storage/error.hpp"
#include "storage/pipeline.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::storage {

// -- limits (REST "Put Block", "Put Block List", "Append Block", "Naming and Referencing") ---------

/// Most committed blocks one block blob or append blob may hold.
inline constexpr std::size_t max_blob_blocks = 50'000;
/// Longest block id, in bytes before base64 encoding.
inline constexpr std::size_t max_block_id_bytes = 64;
/// Largest single Append Block body in bytes (x-ms-version ≥ 2022-11-02; 4 MiB before).
inline constexpr std::size_t max_append_block_bytes = 100 * 1024 * 1024;
/// Largest single Put Block body in bytes (x-ms-version ≥ 2019-12-12).
inline constexpr std::uint64_t max_put_block_bytes = 4000ull * 1024 * 1024;
/// Largest single-shot Put Blob body in bytes (x-ms-version ≥ 2019-12-12).
inline constexpr std::uint64_t max_put_blob_bytes = 5000ull * 1024 * 1024;
/// Longest blob name, in characters (Unicode code points).
inline constexpr std::size_t max_blob_name_chars = 1024;
/// Most '/'-separated segments in a blob name.
inline constexpr std::size_t max_blob_name_segments = 254;
/// Total size of all metadata names plus values, in bytes.
inline constexpr std::size_t max_metadata_bytes = 8 * 1024;

/// User metadata (`x-ms-meta-<name>: <value>`). Names are case-insensitive C# identifiers;
/// the service returns them as stored, but HTTP headers arrive lower-cased, so every name this
/// client returns is lower-cased.
using metadata_map = std::map<std::string, std::string>;

// -- validation: pure, thread-safe; every client call runs these before sending ------------------

/// Checks a container name: 3–63 characters of lowercase letters, digits and '-', starting
/// with a letter or digit, no trailing '-' and no "--"; `$root`, `$logs` and `$web` are also
/// accepted (REST "Naming and Referencing Containers, Blobs, and Metadata").
/// Errors: invalid_argument naming the broken rule.
[[nodiscard]] result<void> validate_container_name(std::string_view name);

/// Checks a blob name: valid UTF-8, 1–1024 code points, at most 254 segments, no control
/// characters, not ending in '.', '/' or '\\', and no "." or ".." segment (URL normalisation
/// would change the blob addressed). Errors: invalid_argument naming the broken rule.
[[nodiscard]] result<void> validate_blob_name(std::string_view name);

/// Checks metadata: names are C# identifiers (ASCII letter or '_' first, then letters, digits,
/// '_'), unique ignoring case; values are printable ASCII without leading or trailing blanks
/// (they travel as HTTP headers, whose values are trimmed when signed); names plus values
/// ≤ 8 KiB. Errors: invalid_argument naming the broken rule.
[[nodiscard]] result<void> validate_metadata(const metadata_map& metadata);

/// Checks a list of block ids (base64, as sent): 1–50,000 entries, each valid base64 of
/// 1–64 bytes, all of the same encoded length. Errors: invalid_argument / limit_exceeded
/// (more than 50,000).
[[nodiscard]] result<void> validate_block_ids(const std::vector<std::string>& block_ids);

/// The block id of the `index`-th block of a staged upload: base64 of "shoal-blk-%08u",
/// so every id has the same length (24 characters). Errors: invalid_argument when
/// `index` ≥ 100,000,000 (far beyond the 50,000-block limit anyway).
[[nodiscard]] result<std::string> make_block_id(std::uint32_t index);

// -- values ---------------------------------------------------------------------------------------

/// The three blob kinds of the service.
enum class blob_type : std::uint8_t { block, append, page, unknown };

/// "BlockBlob", "AppendBlob", "PageBlob" or "Unknown".
std::string_view to_string(blob_type t) noexcept;
/// The blob_type the service names "BlockBlob", "AppendBlob" or "PageBlob" (x-ms-blob-type,
/// List Blobs' BlobType); unknown for anything else. Thread-safe (pure).
blob_type blob_type_from(std::string_view s) noexcept;

/// Properties of one blob, from Get Blob / Get Blob Properties headers or a List Blobs entry.
struct blob_properties {
  std::string etag;                   ///< strong ETag, quotes included, e.g. "\"0x8DC…\""
  std::uint64_t content_length = 0;   ///< size of the whole blob in bytes (not of a range read)
  std::string content_type;           ///< as stored; empty if none
  std::string content_md5;            ///< base64 MD5 of the whole blob as stored; empty if none
  blob_type type = blob_type::unknown;
  std::optional<std::chrono::system_clock::time_point> last_modified; ///< server time
  std::optional<std::uint32_t> committed_block_count; ///< append blobs only
  metadata_map metadata;              ///< names lower-cased; empty unless fetched
  std::optional<std::chrono::system_clock::time_point> date; ///< response `Date` (server clock)
                                                             ///< of a HEAD/GET; empty in listings
};

/// Outcome of a write (Put Blob, Put Block List, Set Metadata, create append blob).
struct blob_write_result {
  std::string etag;        ///< new ETag of the blob
  std::string content_md5; ///< base64 MD5 the service returned (Put Blob / Put Block List); may be empty
  std::optional<std::chrono::system_clock::time_point> last_modified; ///< server time
  std::optional<std::chrono::system_clock::time_point> date; ///< the response `Date` (server clock)
  bool recovered = false; ///< a retried conditional write met its own earlier attempt: the
                          ///< 409/412 was checked against the stored MD5 (or metadata) and the
                          ///< write had landed (reference §8); etag/last_modified are re-read
};

/// Outcome of one Append Block.
struct append_result {
  std::uint64_t offset = 0;                ///< byte offset at which this block landed
  std::uint32_t committed_block_count = 0; ///< blocks in the blob after this append (may include
                                           ///< later appends by others when `recovered`)
  std::string etag;                        ///< ETag after the append (re-read when `recovered`)
  std::optional<std::chrono::system_clock::time_point> date; ///< the response `Date` (server clock)
  bool recovered = false; ///< the pipeline retried, the retry met 412 AppendPositionConditionNotMet,
                          ///< and the bytes at `offset` were verified to be ours: the first
                          ///< attempt had landed (reference §8)
};

/// A byte range of a blob: `length` bytes from `offset`, or to the end when `length` is empty.
struct byte_range {
  std::uint64_t offset = 0;              ///< first byte, 0-based
  std::optional<std::uint64_t> length;   ///< bytes; must be ≥ 1 when given
};

/// A blob read with Get Blob.
struct blob_download {
  std::string body;            ///< the bytes read (the range only, for a range read)
  blob_properties properties;  ///< incl. metadata; content_length is the whole blob's size
  std::uint64_t range_offset = 0; ///< offset of `body` within the blob
  std::optional<std::chrono::system_clock::time_point> date; ///< the response `Date`
};

/// One entry of a List Blobs page.
struct blob_item {
  std::string name;           ///< full blob name
  blob_properties properties; ///< metadata filled only with list_blobs_options::include_metadata
};

/// One List Blobs response.
struct blob_list_page {
  std::vector<blob_item> blobs;       ///< in name order
  std::vector<std::string> prefixes;  ///< BlobPrefix names (with delimiter set), e.g. "dir/"
  std::string next_marker;            ///< empty when this is the last page
};

class blob_pager;

// -- per-call options -----------------------------------------------------------------------------

/// Options of Put Blob and Put Block List (and of upload()).
struct put_blob_options {
  std::string content_type = "application/octet-stream"; ///< stored as the blob's Content-Type
  metadata_map metadata;                ///< replaces all metadata of the blob
  bool create_only = false;             ///< `If-None-Match: *`: fail with conflict if it exists
  std::optional<std::string> if_match;  ///< ETag the current blob must have (precondition_failed)
  bool send_md5 = true;                 ///< compute and send Content-MD5 so the service checks it
  std::chrono::milliseconds timeout{0}; ///< per attempt; 0 = the transport default
};

/// Options of upload(): when to stage blocks instead of one Put Blob.
struct upload_options {
  put_blob_options blob;                         ///< applied to the Put Blob or Put Block List
  std::size_t single_put_max_bytes = 8u << 20;   ///< bodies up to this size go in one Put Blob
  std::size_t block_bytes = 4u << 20;            ///< block size of a staged upload (last may be short)
};

/// Options of create_append_blob().
struct create_append_blob_options {
  std::string content_type = "application/octet-stream"; ///< stored Content-Type
  metadata_map metadata;                ///< initial metadata
  bool create_only = false;             ///< `If-None-Match: *`: conflict if it exists
  std::optional<std::string> if_match;  ///< replace only the blob with this ETag
};

/// Options of append_block().
struct append_block_options {
  std::optional<std::uint64_t> expected_offset; ///< x-ms-blob-condition-appendpos: current length
                                                ///< must equal this (else precondition_failed)
  std::optional<std::uint64_t> max_size;        ///< x-ms-blob-condition-maxsize, bytes
  std::optional<std::string> if_match;          ///< ETag the blob must have
  bool send_md5 = true;                         ///< transactional Content-MD5
};

/// Options of get_blob().
struct get_blob_options {
  std::optional<byte_range> range;      ///< read only these bytes (x-ms-range)
  std::optional<std::string> if_match;  ///< ETag the blob must have (precondition_failed)
  bool verify_md5 = true;               ///< whole-blob reads: check the body against Content-MD5
  /// Largest body read, in bytes; 0 = any. A larger blob (or range) is refused with
  /// limit_exceeded (not retried) before its body is read: the memory a read may take.
  std::uint64_t max_bytes = 0;
};

/// Options of list_blobs().
struct list_blobs_options {
  std::string prefix;            ///< only names starting with this
  std::string delimiter;         ///< e.g. "/": roll names up into BlobPrefix entries
  bool include_metadata = false; ///< include=metadata
  std::uint32_t max_results = 0; ///< per page, 1–5000; 0 = service default (5000)
  std::string marker;            ///< continue from a previous page's next_marker
};

/// Conditions of delete_blob() and set_metadata().
struct blob_condition_options {
  std::optional<std::string> if_match; ///< ETag the blob must have (precondition_failed)
};

/// Blob service client. Thread-safe: const methods only, copies share the pipeline.
/// Every call validates names, metadata and sizes first (invalid_argument / limit_exceeded,
/// nothing sent), then sends through the pipeline, which retries 408/429/5xx and transport
/// errors (`error::attempts` > 1 then). Status mapping: 404 not_found, 409 conflict,
/// 412 precondition_failed, 403 auth, 413 limit_exceeded, other 4xx bad_request; a 2xx
/// body that does not parse is bad_response. No call throws.
class blob_client {
public:
  /// A client sending through `p` (which must have a blob endpoint).
  explicit blob_client(pipeline p) : pipeline_(std::move(p)) {}

  // -- containers (REST "Create Container", "Delete Container") ---------------------------------

  /// Creates `container`. Errors: conflict (409 ContainerAlreadyExists), invalid_argument.
  [[nodiscard]] result<void> create_container(std::string_view container) const;
  /// Creates `container` unless it exists; true when this call created it.
  [[nodiscard]] result<bool> create_container_if_not_exists(std::string_view container) const;
  /// Deletes `container` and its blobs. Errors: not_found (404 ContainerNotFound).
  [[nodiscard]] result<void> delete_container(std::string_view container) const;
  /// Deletes `container` if present; true when this call deleted it.
  [[nodiscard]] result<bool> delete_container_if_exists(std::string_view container) const;

  // -- block blobs (REST "Put Blob", "Put Block", "Put Block List") ------------------------------

  /// Stores `body` as a block blob in one request, with Content-MD5 unless disabled.
  /// Errors: conflict (409 BlobAlreadyExists, with create_only), precondition_failed (if_match),
  /// bad_request (400 Md5Mismatch / InvalidOperation on Azurite), limit_exceeded (> 5000 MiB).
  /// A conditional put (create_only / if_match) whose RETRY meets 409 / 412 is reported as
  /// success (`recovered`) when the stored blob's MD5 and length equal ours: the earlier attempt
  /// landed (needs send_md5). A first-attempt 409/412 is always an error.
  [[nodiscard]] result<blob_write_result> put_blob(std::string_view container, std::string_view blob,
                                                   std::string_view body,
                                                   const put_blob_options& opts = {}) const;

  /// Uploads one uncommitted block (`block_id` base64, ≤ 64 bytes decoded, same length as the
  /// blob's other ids), with transactional Content-MD5. Errors: invalid_argument,
  /// limit_exceeded (> 4000 MiB).
  [[nodiscard]] result<void> put_block(std::string_view container, std::string_view blob,
                                       std::string_view block_id, std::string_view body) const;

  /// Commits the blob as exactly `block_ids` in order (each sent as `<Latest>`), setting its
  /// content type, metadata and (with send_md5 and `whole_md5`) x-ms-blob-content-md5.
  /// Errors: invalid_argument / limit_exceeded (validate_block_ids), bad_request
  /// (InvalidBlockList: an id not uploaded), conflict / precondition_failed per `opts`; a
  /// retried conditional commit is recovered like put_blob's when `whole_md5` is given.
  [[nodiscard]] result<blob_write_result>
  put_block_list(std::string_view container, std::string_view blob,
                 const std::vector<std::string>& block_ids, const put_blob_options& opts = {},
                 std::string_view whole_md5 = {}) const;

  /// Stores `body`: one Put Blob up to `single_put_max_bytes`, else Put Block of
  /// `block_bytes` pieces (ids from make_block_id) and one Put Block List. The stored
  /// Content-MD5 is the whole body's MD5 either way. Errors: those of put_blob / put_block /
  /// put_block_list; limit_exceeded when more than 50,000 blocks would be needed.
  [[nodiscard]] result<blob_write_result> upload(std::string_view container, std::string_view blob,
                                                 std::string_view body,
                                                 const upload_options& opts = {}) const;

  // -- append blobs (REST "Put Blob" with AppendBlob, "Append Block") ----------------------------

  /// Creates (or with !create_only, truncates to empty) an append blob: a zero-length PUT.
  /// Errors: conflict (create_only and it exists), precondition_failed (if_match).
  [[nodiscard]] result<blob_write_result>
  create_append_blob(std::string_view container, std::string_view blob,
                     const create_append_blob_options& opts = {}) const;

  /// Appends `body` (1 byte – 100 MiB). Errors: precondition_failed (412
  /// AppendPositionConditionNotMet when the blob's length ≠ expected_offset;
  /// MaxBlobSizeConditionNotMet), limit_exceeded (409 BlockCountExceedsLimit, or > 100 MiB),
  /// not_found. With expected_offset, a retried append that meets 412 re-reads the blob; if our
  /// own bytes are at expected_offset the first attempt landed and the result is a success with
  /// `recovered` set (reference §8).
  [[nodiscard]] result<append_result> append_block(std::string_view container, std::string_view blob,
                                                   std::string_view body,
                                                   const append_block_options& opts = {}) const;

  // -- reads (REST "Get Blob", "Get Blob Properties", "Set Blob Metadata") -----------------------

  /// Reads the blob (or a range) with its properties and metadata. Errors: not_found,
  /// precondition_failed (if_match), bad_request (416 range beyond the end), bad_response
  /// (whole-blob body does not match its Content-MD5, or unparsable headers), limit_exceeded
  /// (larger than opts.max_bytes; nothing of the body held).
  [[nodiscard]] result<blob_download> get_blob(std::string_view container, std::string_view blob,
                                               const get_blob_options& opts = {}) const;

  /// HEAD: properties and metadata, no body. Errors: not_found (404, no body on a HEAD).
  [[nodiscard]] result<blob_properties> get_properties(std::string_view container,
                                                       std::string_view blob) const;

  /// Replaces all metadata of the blob (an empty map clears it); returns the new ETag.
  /// Errors: not_found, precondition_failed (if_match), invalid_argument. A retried if_match
  /// write meeting 412 is `recovered` when the stored metadata already equals `metadata`.
  [[nodiscard]] result<blob_write_result> set_metadata(std::string_view container,
                                                       std::string_view blob,
                                                       const metadata_map& metadata,
                                                       const blob_condition_options& opts = {}) const;

  // -- listing and delete (REST "List Blobs", "Delete Blob") -------------------------------------

  /// One page of the listing. Errors: not_found (container), invalid_argument
  /// (max_results > 5000), bad_response (malformed XML).
  [[nodiscard]] result<blob_list_page> list_blobs(std::string_view container,
                                                  const list_blobs_options& opts = {}) const;

  /// A pager over all pages of a listing, starting at `opts.marker`.
  blob_pager list_blobs_pager(std::string_view container, list_blobs_options opts = {}) const;

  /// Deletes the blob and its snapshots (x-ms-delete-snapshots: include).
  /// Errors: not_found (404 BlobNotFound on the first attempt), precondition_failed (if_match).
  /// A 404 on a retry means an earlier attempt deleted it: success.
  [[nodiscard]] result<void> delete_blob(std::string_view container, std::string_view blob,
                                         const blob_condition_options& opts = {}) const;

  /// The pipeline requests go through.
  const pipeline& transport_pipeline() const noexcept { return pipeline_; }

private:
  pipeline pipeline_;
};

/// Walks the pages of one listing. Borrows nothing (it holds a copy of the client).
/// Owner only: not thread-safe.
class blob_pager {
public:
  /// Fetches the next page; `std::nullopt` once the listing is exhausted.
  /// Errors: those of blob_client::list_blobs(); after an error the call may be repeated.
  [[nodiscard]] result<std::optional<blob_list_page>> next();
  /// True once the last page has been returned (next() then yields std::nullopt).
  bool done() const noexcept { return done_; }

private:
  friend class blob_client;
  blob_pager(blob_client c, std::string container, list_blobs_options o);
  blob_client client_;
  std::string container_;
  list_blobs_options opts_;
  bool done_ = false;
};

} // namespace shoal::storage
