#pragma once
// The typed entity model of the Azure Table service and its client-side limits.
//
// REST pages followed: "Payload format for Table service operations" (JSON with
// `application/json;odata=minimalmetadata` and `Name@odata.type` annotations) and
// "Understanding the Table service data model" (types and limits). See
// shared/reference/azure-storage-rest.md §3 and §4.

#include "storage/error.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace shoal::storage {

// -- values ---------------------------------------------------------------------------------------

/// Edm.DateTime: UTC, 100 ns ticks (the service's precision), so every value round-trips exactly.
/// Converts implicitly to std::chrono::system_clock::time_point (which is finer on Linux);
/// convert the other way with `to_table_time`, which truncates toward the past.
using table_time = std::chrono::time_point<std::chrono::system_clock,
                                           std::chrono::duration<std::int64_t, std::ratio<1, 10'000'000>>>;

/// `t` truncated to 100 ns ticks (floor, also for times before 1970).
inline table_time to_table_time(std::chrono::system_clock::time_point t) noexcept {
  return std::chrono::floor<table_time::duration>(t);
}

/// Edm.Guid: 16 bytes in the textual order of "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
struct table_guid {
  std::array<std::uint8_t, 16> bytes{}; ///< byte i = hex digits 2i, 2i+1 of the text (no dashes)

  /// Parses the 36-character dashed form, either case. Errors: invalid_argument.
  [[nodiscard]] static result<table_guid> parse(std::string_view text);
  /// Lower-case dashed form, e.g. "c9da6455-213d-42c9-9a79-3e9149a57833".
  std::string to_string() const;
  friend bool operator==(const table_guid&, const table_guid&) = default;
};

/// Edm.Binary: raw bytes (base64 on the wire), ≤ 64 KiB.
struct table_binary {
  std::string bytes; ///< arbitrary bytes, not text
  friend bool operator==(const table_binary&, const table_binary&) = default;
};

/// The EDM type of a property; the order matches the alternatives of `table_value`.
enum class edm_type : std::uint8_t { string, int32, int64, double_, boolean, datetime, guid, binary };

/// "Edm.String", "Edm.Int32", ..., "Edm.Binary".
std::string_view to_string(edm_type t) noexcept;

/// One property value. Construct from the C++ type of the EDM type you mean:
/// `std::string` (or a string literal) → Edm.String, `std::int32_t` → Int32, `std::int64_t` → Int64,
/// `double` → Double (NaN and ±Inf included), `bool` → Boolean, `table_time` → DateTime,
/// `table_guid` → Guid, `table_binary` → Binary. Read with std::get_if / std::holds_alternative.
/// Note `operator==` compares doubles by IEEE `==` (NaN ≠ NaN); `same_value` treats NaN as equal.
using table_value = std::variant<std::string, std::int32_t, std::int64_t, double, bool, table_time,
                                 table_guid, table_binary>;

/// The EDM type `v` holds.
inline edm_type type_of(const table_value& v) noexcept { return static_cast<edm_type>(v.index()); }

/// True when `a` and `b` have the same type and value; doubles compare bit-for-bit after
/// treating every NaN as one value (so a read-back NaN equals the written NaN).
bool same_value(const table_value& a, const table_value& b) noexcept;

// -- entity ---------------------------------------------------------------------------------------

/// An entity as sent and received. Properties are ordered by name; PartitionKey, RowKey and
/// Timestamp are fields, never entries in `properties`. To store a null, omit the property.
struct table_entity {
  std::string partition_key;           ///< ≤ 512 UTF-16 units, no / \ # ? or control chars
  std::string row_key;                 ///< same rules as partition_key
  std::string etag;                    ///< opaque, byte-for-byte as the service sent it; empty = unknown
  std::optional<table_time> timestamp; ///< set by the service; ignored on writes
  std::map<std::string, table_value, std::less<>> properties; ///< custom properties by name

  /// The value of `name`, or nullptr.
  const table_value* find(std::string_view name) const noexcept {
    auto it = properties.find(name);
    return it == properties.end() ? nullptr : &it->second;
  }
  /// The value of `name` if it holds a T (e.g. get<std::string>("status")), or nullptr.
  template <class T> const T* get(std::string_view name) const noexcept {
    const table_value* v = find(name);
    return v ? std::get_if<T>(v) : nullptr;
  }
  /// Typed reads with one set of coercion rules for every caller (in place of per-file
  /// readers). Errors: not_found (no property `name`; use `.value_or(default)` where absence
  /// means a default), bad_response (the stored type cannot be read as the type asked for; the
  /// message names the property and both types). Thread-safe (const).
  /// String: Edm.String only.
  [[nodiscard]] result<std::string> get_string(std::string_view name) const;
  /// Int64: Edm.Int64 or Edm.Int32; an Edm.String holding a whole decimal integer (Azurite
  /// returns some untagged Int64 values as strings); an Edm.Double holding a whole number in
  /// range. Nothing is truncated or rounded.
  [[nodiscard]] result<std::int64_t> get_int64(std::string_view name) const;
  /// Double: Edm.Double, Edm.Int32 or Edm.Int64 (converted).
  [[nodiscard]] result<double> get_double(std::string_view name) const;
  /// Boolean: Edm.Boolean only.
  [[nodiscard]] result<bool> get_bool(std::string_view name) const;
  /// DateTime as system_clock (exact: 100 ns ticks fit): Edm.DateTime only.
  [[nodiscard]] result<std::chrono::system_clock::time_point> get_time(std::string_view name) const;

  /// Sets (or replaces) property `name`. Returns *this for chaining.
  table_entity& set(std::string name, table_value value) {
    properties.insert_or_assign(std::move(name), std::move(value));
    return *this;
  }
};

/// True when keys and custom properties are equal per `same_value` (etag and timestamp ignored).
bool same_content(const table_entity& a, const table_entity& b) noexcept;

/// True when `stored` holds every property of `patch` with the same value (per `same_value`)
/// and the same keys: what `stored` looks like after a successful MERGE of `patch`.
bool contains_content(const table_entity& stored, const table_entity& patch) noexcept;

// -- JSON (application/json;odata=minimalmetadata) ------------------------------------------------

/// The JSON body of a write: PartitionKey, RowKey, every property, and `Name@odata.type` for
/// Int64 (decimal string), Double (always; NaN/±Inf as "NaN"/"Infinity"/"-Infinity"), DateTime
/// (7 fractional digits), Guid and Binary (base64). etag and timestamp are not written.
/// Does not validate: call validate_entity first. Thread-safe (pure).
std::string entity_to_json(const table_entity& e);

/// Parses one entity object as the service returns it with minimal or full metadata: reads
/// `odata.etag` into etag, `Timestamp` into timestamp, honours `@odata.type` annotations, and
/// ignores other `odata.*` keys. Untyped JSON numbers become Int32 when integral and in range
/// (Int64 otherwise), Double when fractional. Errors: bad_response (malformed JSON, a value that
/// does not match its annotation, an unknown Edm type). Thread-safe (pure).
[[nodiscard]] result<table_entity> entity_from_json(std::string_view json);

// -- limits and validation ------------------------------------------------------------------------

/// Client-side limits, checked before any request is sent.
struct table_limits {
  /// PartitionKey/RowKey length in UTF-16 code units. Azure allows 1 KiB; Azurite rejects more
  /// than 512 characters (reference §4), so shoal uses 512 everywhere.
  static constexpr std::size_t max_key_chars = 512;
  static constexpr std::size_t max_custom_properties = 252; ///< 255 minus PK, RK, Timestamp
  static constexpr std::size_t max_entity_bytes = 1024 * 1024; ///< Azure's size formula, see validate_entity
  static constexpr std::size_t max_string_utf16_units = 32 * 1024; ///< 64 KiB stored as UTF-16
  static constexpr std::size_t max_binary_bytes = 64 * 1024;
  static constexpr std::size_t max_property_name_chars = 255;
  static constexpr std::size_t max_batch_operations = 100;
  static constexpr std::size_t max_batch_bytes = 4 * 1024 * 1024; ///< the whole multipart body
  static constexpr std::size_t max_filter_comparisons = 15;
  static constexpr int max_page_size = 1000; ///< $top per page
};

/// Checks a table name: `^[A-Za-z][A-Za-z0-9]{2,62}$` and not "tables" (any case).
/// Errors: invalid_argument naming the rule broken.
[[nodiscard]] result<void> validate_table_name(std::string_view name);

/// Checks a PartitionKey or RowKey (`what` names it in the message): valid UTF-8, no
/// `/ \ # ?`, no U+0000–U+001F or U+007F–U+009F, ≤ table_limits::max_key_chars UTF-16 units.
/// An empty key is allowed (the service allows it). Errors: invalid_argument.
[[nodiscard]] result<void> validate_key(std::string_view key, std::string_view what);

/// Checks a custom property name: 1–255 characters, starts with a letter or '_', then letters,
/// digits or '_' (non-ASCII UTF-8 counts as a letter), and not PartitionKey, RowKey, Timestamp
/// or ETag. Errors: invalid_argument.
[[nodiscard]] result<void> validate_property_name(std::string_view name);

/// Checks everything above for a write: keys, ≤ 252 properties, names, strings ≤ 32 Ki UTF-16
/// units (valid UTF-8), binary ≤ 64 KiB, and the entity size ≤ 1 MiB by Azure's formula
/// 4 + 2·len(PK) + 2·len(RK) + Σ (8 + 2·len(name) + value size), where a string is 4 + 2·units,
/// binary 4 + bytes, Int32 4, Int64/Double/DateTime 8, Boolean 1, Guid 16.
/// Errors: invalid_argument or limit_exceeded, naming the property and the limit.
[[nodiscard]] result<void> validate_entity(const table_entity& e);

/// The size of `e` by the formula of validate_entity, in bytes.
std::size_t entity_size_bytes(const table_entity& e) noexcept;

} // namespace shoal::storage
