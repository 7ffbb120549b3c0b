#pragma once
// The persistor's blob layout (workers/etl/BLOBS.md): event-time parsing,
// date partitions, blob names, and the two record formats. Everything here is pure.
//
//   auto t = parse_event_time("2001/01/05 10:30");        // → 2001-01-05T10:30:00Z
//   std::string name = blob_name("flights", partition_of(*t, partition_depth::day), "h1", "p1", 7);
//   // "flights/2001/01/05/h1-p1-00000007.json"

#include "workers/error.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers::persistor {

/// Unix time in milliseconds (UTC).
using unix_ms = std::int64_t;

/// The two record formats.
enum class record_format : std::uint8_t { persistor_v1, ndjson };

/// "persistor-v1" | "ndjson". Errors: invalid_argument for anything else.
[[nodiscard]] result<record_format> parse_format(std::string_view s);
/// "persistor-v1" or "ndjson".
std::string_view to_string(record_format f) noexcept;

/// One message to persist, as received (push envelope or queue message).
struct record {
  std::string message_id;  ///< stable identity: 32 hex characters (envelope id) or queue id
  std::string producer;    ///< envelope `from` or "queue:<name>"
  std::string dest;        ///< destination: first blob-name segment
  std::string payload;     ///< the payload bytes
  unix_ms event_time = 0;  ///< partition time (event time, or ingest time when none)
  unix_ms ingest_time = 0; ///< when the persistor received it
  std::map<std::string, std::string> properties; ///< source properties (headers, queue info)
  std::string producer_key; ///< CURVE public key (Z85) the producer's link was admitted with; empty on plain links
};

/// Parses an event time: ISO-8601 / RFC 3339 (`2001-01-05T10:30:00Z`, fractions, `±hh:mm`
/// offsets, a space instead of 'T', a date alone), `YYYY/MM/DD HH:MM[:SS]`, or a Unix time as a
/// number (seconds; values ≥ 1e11 are milliseconds). Errors: parse, naming the text (also for a
/// number beyond ±9.2e18 ms).
[[nodiscard]] result<unix_ms> parse_event_time(std::string_view text);

/// Finds `field` (dotted path "a.b") in `payload` when it is a JSON object, and parses it
/// (string or number) with parse_event_time; of members with the same name the last counts.
/// Errors: parse (payload not JSON, field missing or not a time). Cost: one allocation-free
/// check of the payload (json_accept's) and a walk over the text along the path; a nlohmann
/// DOM only for the rare forms the walk leaves to it (escapes in a key or the time string, a
/// byte-order mark, nesting deeper than 512, integers of more than 18 digits).
[[nodiscard]] result<unix_ms> event_time_of(std::string_view payload, std::string_view field);

/// RFC 3339 UTC text with milliseconds: "2001-01-05T10:30:00.000Z".
std::string format_time(unix_ms t);

/// How deep a blob's date folders go ([persistor] partition): the seed's layout is `day`
/// (`{dest}/{YYYY}/{MM}/{DD}/…`); `hour` adds `{HH}/` (shoal's layout before issue 14, still read
/// everywhere); `month` stops at `{YYYY}/{MM}/`. Records of one dest and one folder share open
/// batches, so the depth sets how many blobs dated data makes: a dataset spread over 90 days
/// makes ~90 blobs by day where it made ~2,000 by hour.
enum class partition_depth : std::uint8_t { month, day, hour };

/// "month" | "day" | "hour". Errors: invalid_argument for anything else.
[[nodiscard]] result<partition_depth> parse_partition_depth(std::string_view s);
/// "month", "day" or "hour".
std::string_view to_string(partition_depth d) noexcept;

/// The partition folder of `t` (UTC) at `depth`: "YYYY/MM", "YYYY/MM/DD" or "YYYY/MM/DD/HH".
std::string partition_of(unix_ms t, partition_depth depth = partition_depth::day);

/// A number that is equal for two times exactly when their partitions at `depth` are equal
/// (UTC months, days or hours, floored, also before 1970). No allocation: the batcher's cache key.
std::int64_t partition_period(unix_ms t, partition_depth depth) noexcept;

/// The catalog date "YYYY-MM-DD" of a partition folder of any depth: its first day ("YYYY/MM"
/// → "YYYY-MM-01"). Empty when `partition` does not start with "YYYY/MM".
std::string partition_date(std::string_view partition);

/// The partition folder of a blob name written by any persistor layout
/// (`{dest}/{partition}/{file}`): everything between the first and the last '/'. Empty when the
/// name has fewer than three segments.
std::string_view partition_of_blob(std::string_view blob_name) noexcept;

/// Checks a dest: 1–128 characters of letters, digits, '-', '_', '.', not "." or "..".
/// Errors: invalid_argument.
[[nodiscard]] result<void> validate_dest(std::string_view dest);

/// `{dest}/{partition}/{host}-{persistor}-{seq:08}.json`.
std::string blob_name(std::string_view dest, std::string_view partition, std::string_view host,
                      std::string_view persistor, std::uint64_t seq);

/// Whether `text` is exactly one JSON value (RFC 8259, as strict as nlohmann::json::accept
/// except that a byte-order mark is refused), checked in one pass without allocating (the
/// ndjson hot path: ~10x faster than a SAX accept; runs of plain string bytes are skipped 32 at
/// a time). Malformed UTF-8 is refused (inside strings it is checked; outside them any byte
/// >= 0x80 breaks the grammar), so an accepted text is valid UTF-8. `multiline` is set when the
/// text holds a CR or LF, which valid JSON allows only as whitespace. Thread-safe (pure).
bool json_accept(std::string_view text, bool& multiline);

/// Appends `r` to `out` in `format`: persistor-v1 writes `{"DATA": "<payload>", "METADATA":
/// {...}}` and a blank line; ndjson writes `{"data": <payload JSON>, "meta": {...}}` and '\n'
/// (a payload that is not JSON is embedded as a JSON string). METADATA / meta keys: message_id,
/// producer, dest, event_time, ingest_time, properties, and producer_key when the record came
/// over a CURVE link. A payload that is not UTF-8 is stored
/// base64-encoded with properties.encoding = "base64". Returns the bytes appended.
/// Cost: one pass over the payload that checks UTF-8 (and, for ndjson, the JSON grammar) while
/// it escapes or copies, skipping runs of plain bytes 32 at a time; no allocation besides the
/// growth of `out` (append into the batch body directly). A payload found not to be UTF-8 is
/// rolled back and written again as base64; a multi-line JSON payload (ndjson) is re-serialized
/// through nlohmann. Thread-safe (pure; `out` is the caller's).
std::size_t append_record(std::string& out, record_format format, const record& r);

/// Whether `r` can be stored in `format`: ndjson embeds the payload as JSON, so a payload that
/// nests deeper than workers::max_json_depth (json_limits.hpp) is refused (the ETL could not
/// walk it); persistor-v1 carries any payload as a string. Errors: invalid_argument with the
/// reason (sent back as persist.reject / the poison reason). Cost: O(payload) only when the
/// payload holds more than 128 brackets. Thread-safe (pure).
[[nodiscard]] result<void> check_payload(const record& r, record_format format);

/// What a finished batch declares in its blob metadata.
struct batch_summary {
  std::uint64_t record_count = 0;
  unix_ms first_event_time = 0; ///< smallest event time in the batch
  unix_ms last_event_time = 0;  ///< largest event time in the batch
};

/// Blob metadata of a batch (workers/etl/BLOBS.md): count, first_event_time, last_event_time,
/// format.
std::map<std::string, std::string> blob_metadata(const batch_summary& s, record_format format);


} // namespace shoal::workers::persistor
