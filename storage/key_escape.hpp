#pragma once
// The one escaping of arbitrary text into Azure Table keys (PartitionKey / RowKey), shared by the
// catalog (storage/CATALOG.md "Keys") and the work table (workers/claim/SCHEMA.md "Keys"). The escaped
// form is stored in tables: never change it.
//
// Table keys may not contain `/ \ # ?`, U+0000–U+001F or U+007F–U+009F (shared/reference/
// azure-storage-rest.md §4). Those characters and `%` itself become `%XX` per UTF-8 byte
// (upper-case hex): C0 controls and DEL one byte each, C1 controls (C2 80..C2 9F) both bytes.
// Every other byte is copied, so the escaping is reversible and keeps the order of the keys
// except around the escaped characters.

#include "storage/error.hpp"

#include <string>
#include <string_view>

namespace shoal::storage {

/// `raw` with every `%`, `/`, `\`, `#`, `?`, C0 control, DEL and C1 control escaped as `%XX`
/// per byte. Total: any bytes go in (invalid UTF-8 is copied as it is, the empty string stays
/// empty); callers that need a valid key check UTF-8 and length themselves. O(n).
/// Thread-safe (pure).
std::string escape_table_key(std::string_view raw);

/// The inverse of escape_table_key: every `%XX` (either hex case) becomes the byte XX, other
/// bytes are copied. Does not check UTF-8. Errors: invalid_argument (a `%` not followed by two
/// hex digits). O(n). Thread-safe (pure).
[[nodiscard]] result<std::string> unescape_table_key(std::string_view key);

} // namespace shoal::storage
