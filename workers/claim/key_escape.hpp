#pragma once
// Reversible escaping of record ids into Azure Table keys (PartitionKey/RowKey), and the
// FNV-1a hash that shards records. See workers/claim/SCHEMA.md "Keys".
//
// Table keys may not contain `/ \ # ?`, U+0000–U+001F or U+007F–U+009F, and Azurite caps them
// at 512 characters (shared/reference/azure-storage-rest.md §4). shoal percent-escapes those
// characters and `%` itself, byte by byte, as `%XX` (upper-case hex of each UTF-8 byte), so any
// valid UTF-8 id maps to exactly one key and back. The escaping itself is
// storage::escape_table_key (storage/key_escape.hpp), shared with the catalog; these functions
// add the record-id checks (non-empty, UTF-8, length).

#include "workers/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace shoal::workers {

/// Longest escaped key, in UTF-16 code units (Azurite's cap; Azure allows 1 KiB).
inline constexpr std::size_t max_escaped_key_chars = 512;

/// The key for record id `id`: every `%`, `/`, `\`, `#`, `?`, every C0 control (U+0000–U+001F),
/// DEL (U+007F) and C1 control (U+0080–U+009F) becomes `%XX` per UTF-8 byte; everything else is
/// kept. Errors: invalid_argument (empty id, malformed UTF-8), limit_exceeded (escaped key longer
/// than 512 UTF-16 units, naming the length). Thread-safe (pure).
[[nodiscard]] result<std::string> escape_key(std::string_view id);

/// The inverse of escape_key. Errors: parse (a `%` not followed by two hex digits, or the
/// result is not valid UTF-8). Thread-safe (pure).
[[nodiscard]] result<std::string> unescape_key(std::string_view key);

/// 32-bit FNV-1a of the bytes of `s` (offset basis 2166136261, prime 16777619).
constexpr std::uint32_t fnv1a_32(std::string_view s) noexcept {
  std::uint32_t h = 2166136261u;
  for (unsigned char c : s) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

/// The shard of record `id` (the unescaped id): fnv1a_32(id) mod `shards` (`shards` ≥ 1).
constexpr std::uint32_t shard_of(std::string_view id, std::uint32_t shards) noexcept {
  return fnv1a_32(id) % (shards == 0 ? 1 : shards);
}

/// Checks a queue name: 1–64 characters of ASCII letters, digits and '_' (no '-', so the
/// partition prefix `{queue}-` of one queue never matches another). Errors: invalid_argument.
[[nodiscard]] result<void> validate_queue_name(std::string_view queue);

/// The PartitionKey of `shard` of `queue`: "{queue}-{shard:02x}", e.g. "etl-0a".
std::string partition_key(std::string_view queue, std::uint32_t shard);

} // namespace shoal::workers
