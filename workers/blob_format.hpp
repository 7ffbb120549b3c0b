#pragma once
// Reading the persistor's blobs (workers/etl/BLOBS.md): both formats, split into records.
//
// `persistor-v1`: `{"DATA": "<payload string>", "METADATA": {...}}` records separated by a blank
// line. `ndjson`: one `{"data": <payload JSON>, "meta": {...}}` per line. The metadata keys are
// `message_id`, `producer`, `event_time`, `ingest_time`, `dest`, `properties` (BLOBS.md).

#include "workers/error.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers {

/// The two blob formats the persistor writes.
enum class blob_format : std::uint8_t { persistor_v1, ndjson };

/// "persistor-v1" or "ndjson".
std::string_view to_string(blob_format f) noexcept;

/// One record of a blob, as extracted (payload not yet validated).
struct extracted_record {
  std::size_t index = 0;       ///< 0-based position of the record in the blob
  std::size_t offset = 0;      ///< byte offset of the record's first byte in the blob
  std::size_t line = 0;        ///< 1-based line of the record's first byte
  std::string_view raw;        ///< the record's bytes (borrowed from the blob body)
  std::string message_id;      ///< METADATA.message_id; empty when missing
  std::string producer;        ///< METADATA.producer
  std::string event_time;      ///< METADATA.event_time (RFC 3339 text, as written)
  std::string ingest_time;     ///< METADATA.ingest_time
  std::string payload;         ///< persistor-v1: the DATA string; ndjson: `data` serialized
  std::string problem;         ///< non-empty: the record is malformed (quarantine reason)
};

/// The records of one blob.
struct extracted_blob {
  blob_format format = blob_format::persistor_v1;
  std::vector<extracted_record> records; ///< in blob order; borrow from the body passed in
};

/// Splits `body` into records. The format is detected from the first record's keys ("DATA" →
/// persistor-v1, "data" → ndjson); an empty body yields no records. A record that is valid JSON
/// but lacks DATA/data or METADATA.message_id gets a `problem` (it is quarantined, the rest of
/// the blob loads). Errors: parse — the body is not a sequence of JSON objects (an unterminated
/// object or string, bad JSON, text between records); the message names the line, the column
/// and the byte offset. `body` must outlive the result (records borrow `raw` from it).
/// Thread-safe (pure). Cost: O(bytes), one JSON parse per record.
[[nodiscard]] result<extracted_blob> extract_records(std::string_view body);

/// The dest of a blob name `{dest}/{YYYY}/{MM}/{DD}/{file}` (or of any other partition depth):
/// everything before the first '/' (the whole name when there is none).
std::string_view dest_of(std::string_view blob_name) noexcept;

/// Serializes records in `format` (what the persistor writes; used by tests and the bench).
/// Each item: message id, event time, payload text (persistor-v1 puts it in DATA as a string;
/// ndjson embeds it as JSON, so it must be valid JSON there). Thread-safe (pure).
struct record_to_write {
  std::string message_id;
  std::string event_time;
  std::string payload;
  std::string producer = "test";
};
std::string write_blob(blob_format format, const std::vector<record_to_write>& records);

} // namespace shoal::workers
