#pragma once
// Private to storage/catalog*.cpp: the layout constants and the helpers the catalog's pieces
// share. Not installed, not public API: nothing outside storage/catalog*.cpp includes it.

#include "storage/catalog.hpp"
#include "storage/table_entity.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal::storage::catalog_detail {

// -- constants of the layout (catalog.hpp's file comment) ----------------------------------------

inline constexpr std::string_view meta_pk = "meta";
inline constexpr std::string_view schema_rk = "schema";
inline constexpr std::string_view wal_pk = "wal";
inline constexpr std::string_view counter_rk = "counter";
inline constexpr std::string_view checkpoint_rk = "checkpoint";
inline constexpr std::string_view seq_prop = "_seq";
inline constexpr std::string_view del_prop = "_del";
inline constexpr std::int32_t layout_version = 1;
inline constexpr std::size_t max_index_keys = 16;
inline constexpr std::size_t max_conditions = 8;
inline constexpr int max_apply_rounds = 64;
inline constexpr int max_advance_rounds = 64;

// -- row codec (catalog_codec.cpp) ----------------------------------------------------------------

/// `seq` as a WAL RowKey: 20 digits, zero-padded.
std::string pad(std::uint64_t seq);
/// The last possible padded sequence: an upper bound that excludes `counter` and `checkpoint`.
const std::string& max_pad();
/// The sequence number a WAL RowKey names, or nullopt (counter, checkpoint, anything else).
std::optional<std::uint64_t> parse_seq(std::string_view rk);
/// A sequence number property read by table_entity::get_int64; 0 when missing, unreadable or
/// negative (a row written before the property existed starts at 0).
std::uint64_t int_prop(const table_entity& e, std::string_view name);
/// The record as the WAL's `record` property holds it: a JSON object of strings.
std::string record_to_json(const catalog_fields& r);
/// Parses a WAL `record`. Errors: bad_response (not JSON, not an object, a non-string field).
result<catalog_fields> record_from_json(std::string_view text);
/// A WAL row read back. Errors: bad_response (RowKey not a sequence, no valid op or record).
result<catalog_wal_entry> entry_from_entity(const table_entity& e);
/// The WAL row of `e`.
table_entity entry_to_entity(const catalog_wal_entry& e);
/// A `seq` row (counter or checkpoint) of the WAL partition.
table_entity seq_row(std::string_view rk, std::uint64_t seq);
/// The MERGE that marks WAL entry `seq` applied.
table_entity applied_row(std::uint64_t seq);
/// The index entity entry `e` wants under index key `key` (RowKey `rk`): the record's fields
/// (none for a delete), `_seq` and `_del`. Errors: bad_response (the entry lacks the key).
result<table_entity> index_entity(const catalog_wal_entry& e, const std::string& key, const std::string& rk);
/// Continuation tokens: "{NextPartitionKey}|{NextRowKey}" (the service's tokens hold no '|').
std::string encode_continuation(const table_continuation& c);
std::optional<table_continuation> decode_continuation(std::string_view s);
/// The record an index entity carries (fields not starting with '_', and its `_seq`).
catalog_record record_from_index(const table_entity& e);

// -- helpers (catalog_helpers.cpp) ----------------------------------------------------------------

/// An error with no HTTP exchange behind it.
error make_error(errc code, std::string msg, std::string service_code = {});
/// The error a write returns when catalog_options::fault stopped it at `stage`.
error fault_error(write_stage stage, std::size_t done);
/// 3..60 letters or digits, starting with a letter.
bool valid_catalog_name(std::string_view n);
/// "{hostname}-{pid}".
std::string default_writer_id();
/// 128 random bits as 32 lower-case hex digits (a WAL entry's op_id).
std::string random_hex128();
std::string join(const std::vector<std::string>& v, std::string_view sep);
std::vector<std::string> split(std::string_view s, char sep);
/// Consecutive ranges [b, e) of `es` for $batch requests: at most `max_ops` operations each and
/// an estimated body within the 4 MiB limit.
std::vector<std::pair<std::size_t, std::size_t>> batch_ranges(const std::vector<table_entity>& es,
                                                              std::size_t max_ops);

} // namespace shoal::storage::catalog_detail
