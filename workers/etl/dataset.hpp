#pragma once
// Datasets (issue 7 item 1): per dataset a JSON Schema (valijson), a field mapping with type
// conversion, and the target table's DDL and insert statement, read from a TOML file
// (deploy/datasets/flights.toml is the shipped example; the format is in workers/etl/BLOBS.md).
// Without a dataset for a blob's dest the generic dataset loads every record as
// (message_id, dest, event_time, payload) into shoal_etl_records.
//
// The validate and transform steps of the pipeline live here too: they are pure functions of
// a dataset and the extracted records, so a resumed orchestration can replay them.

#include "workers/error.hpp"
#include "workers/blob_format.hpp"
#include "workers/etl/sql_sink.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace shoal::workers::etl {

/// SQL type a field is converted to.
enum class field_type : std::uint8_t {
  text,      ///< strings as they are; numbers and booleans as their JSON text
  integer,   ///< JSON integers, integral reals, or decimal strings; else the record is quarantined
  real,      ///< JSON numbers or numeric strings
  boolean,   ///< true/false (or "true"/"false", 1/0) → 1/0
  timestamp, ///< a string parsed with `format` (strptime), stored as "YYYY-MM-DDTHH:MM:SSZ"
  json,      ///< the value serialized as JSON text
};

/// One column of the target table.
struct field_spec {
  std::string column;   ///< for messages and docs; the insert binds fields in this order
  /// Where the value comes from: a JSON pointer into the payload ("/delay"), or one of
  /// "$message_id", "$event_time", "$ingest_time", "$producer", "$blob", "$dest", "$payload".
  std::string source;
  /// Derived text instead of `source`: "{/origin}-{/destination}" substitutes each {source}.
  std::string template_text;
  field_type type = field_type::text;
  std::string format;   ///< strptime format of a timestamp, e.g. "%Y/%m/%d %H:%M"; empty = RFC 3339
  bool required = true; ///< missing and no default → quarantine; else NULL
  std::optional<std::string> default_value; ///< used (then converted) when the value is missing
};

struct compiled_schema; ///< valijson's schema, defined in dataset.cpp

/// A dataset: which blobs it takes, how records are checked and mapped, where they go.
struct dataset {
  std::string name;        ///< e.g. "flights"; recorded in the ledger
  std::string dest;        ///< blobs whose dest (first path segment) equals this
  std::string ddl;         ///< CREATE statements for the target table (idempotent)
  std::string insert_sql;  ///< INSERT with one `?` per field, in field order
  std::vector<field_spec> fields;
  std::filesystem::path schema_file;          ///< empty: no schema check
  std::shared_ptr<const compiled_schema> schema; ///< parsed schema_file (shared, immutable)
  bool generic = false;    ///< the built-in generic dataset
  /// "ledger" (default): a shoal_etl_messages row per message keys exactly-once; "table": the
  /// dataset's table has a unique message-id column and `insert` ends in
  /// `ON CONFLICT (…) DO NOTHING` (checked at load), so no separate key row is written.
  std::string message_key = "ledger";
  /// Validate with the schema compiled into a direct checker (workers/etl/schema_check.hpp)
  /// when it fits its subset, valijson deciding only what the checker does not accept; false:
  /// valijson for every record (tests compare the two). Verdicts and reasons are the same.
  bool fast_schema = true;
};

/// Reads one dataset TOML file (relative schema paths resolve against its folder) and parses
/// its schema. Errors: io (missing file), parse (bad TOML, bad schema JSON, unknown key or
/// type, with the file name), invalid_argument (insert placeholders ≠ field count).
[[nodiscard]] result<dataset> load_dataset(const std::filesystem::path& file);
/// Every *.toml in `dir` (sorted). An empty `dir` gives no datasets. Errors: those of load_dataset.
[[nodiscard]] result<std::vector<dataset>> load_datasets(const std::filesystem::path& dir);
/// True when `d`'s schema compiled into the direct checker (else valijson validates alone).
bool has_compiled_schema(const dataset& d);
/// The generic dataset (no schema, all input accepted).
const dataset& generic_dataset();
/// The dataset whose dest matches `blob_name`'s, else the generic one. Borrowed from `all`.
const dataset& dataset_for(const std::vector<dataset>& all, std::string_view blob_name);

/// A record that passed validation, with its parsed payload.
struct validated_record {
  const extracted_record* record = nullptr; ///< borrowed from the extracted blob
  nlohmann::json payload;                   ///< parsed payload (null in generic mode)
};

/// The validate step: records with an extract problem, a payload that is not JSON, or a schema
/// violation go to `quarantine` (step "extract"/"validate", reason naming the JSON path);
/// the rest are returned. Generic mode accepts every record that has a message id.
/// Thread-safe (pure; the schema is shared read-only).
std::vector<validated_record> validate_records(const dataset& d, const extracted_blob& blob,
                                               std::vector<quarantine_row>& quarantine);
/// As above, for a slice of a blob's records (the pipeline validates slices on several threads).
std::vector<validated_record> validate_records(const dataset& d, std::span<const extracted_record> records,
                                               std::vector<quarantine_row>& quarantine);

/// The transform step: maps each record to the dataset's columns; a failed conversion or a
/// missing required field goes to `quarantine` (step "transform"). Thread-safe (pure).
std::vector<load_row> transform_records(const dataset& d, std::string_view blob_name,
                                        const std::vector<validated_record>& records,
                                        std::vector<quarantine_row>& quarantine);

/// Parses `text` with strptime `format` (empty: RFC 3339 "YYYY-MM-DDTHH:MM:SS[.f][Z|±hh:mm]")
/// to "YYYY-MM-DDTHH:MM:SSZ". nullopt when it does not match.
std::optional<std::string> parse_timestamp(std::string_view text, std::string_view format);

} // namespace shoal::workers::etl
