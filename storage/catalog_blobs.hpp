#pragma once
// The blob catalog: what the persistor registers for every blob it commits (workers/etl/BLOBS.md),
// a fixed-schema facade over shoal::storage::catalog. Index keys dest, date, host; row key
// blob (the blob name); properties container, format, record_count.
//
//   auto bc = blob_catalog::open(svc);                       // creates "shoalcatalog" if needed
//   bc->register_blob({.blob = "flights/2001/01/05/00/h1-p1-00000001.json", .dest = "flights",
//                      .date = "2001-01-05", .host = "h1", .format = "ndjson", .record_count = 1000});
//   auto found = bc->find({.dest = "flights", .date = "2001-01-05"});

#include "storage/catalog.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace shoal::storage {

/// One committed blob.
struct blob_catalog_entry {
  std::string blob{};            ///< blob name, e.g. "flights/2001/01/05/00/h1-p1-00000001.json" (row key)
  std::string dest{};            ///< destination (index key)
  std::string date{};            ///< event date "YYYY-MM-DD" (index key)
  std::string host{};            ///< host that wrote the blob (index key)
  std::string format{};          ///< "persistor-v1" | "ndjson" | ...
  std::uint64_t record_count = 0; ///< records in the blob
  std::string container{};       ///< container name; empty = not recorded
  std::uint64_t seq = 0;         ///< set by find(): the WAL sequence of the registration

  friend bool operator==(const blob_catalog_entry&, const blob_catalog_entry&) = default;
};

/// A blob query: at least one of dest, date, host; the others narrow it (intersection).
struct blob_catalog_query {
  std::optional<std::string> dest{}; ///< destination equals this
  std::optional<std::string> date{}; ///< event date (YYYY-MM-DD) equals this
  std::optional<std::string> host{}; ///< writing host equals this
  std::optional<std::string> blob_prefix{}; ///< blob names starting with this
  std::optional<std::string> blob_ge{};     ///< blob names ≥ this
  std::optional<std::string> blob_lt{};     ///< blob names < this
  std::optional<std::size_t> limit{};     ///< at most this many entries
};

/// The blob catalog. Thread-safe (as catalog).
class blob_catalog {
public:
  /// Default catalog name (config [catalog] table).
  static constexpr std::string_view default_name = "shoalcatalog";
  /// The fixed schema: index keys dest, date, host; row key blob.
  static catalog_schema schema();

  /// Creates the catalog if needed and opens it, checking the schema (a catalog `name` made
  /// with another schema is refused: conflict / catalog_schema_mismatch). Recovers on open
  /// unless opts.recover_on_open is false. Errors: as catalog::create.
  [[nodiscard]] static result<blob_catalog> open(const table_service_client& svc,
                                                 std::string name = std::string(default_name),
                                                 catalog_options opts = {});
  /// Opens an existing catalog without creating it. Errors: as catalog::open (not_found).
  [[nodiscard]] static result<blob_catalog> open_existing(const table_service_client& svc,
                                                          std::string name = std::string(default_name),
                                                          catalog_options opts = {});

  /// Registers a committed blob (idempotent for the same entry). Errors: invalid_argument
  /// (empty blob, dest or host; date not YYYY-MM-DD), and catalog::insert's.
  [[nodiscard]] result<catalog_write_result> register_blob(const blob_catalog_entry& e) const;
  /// Registers several committed blobs in one batched WAL append (catalog::insert_many): the
  /// persistor's registrar calls it with every blob committed since its last call, so the
  /// catalog's serial counter costs one transaction per call, not one per blob. Result i belongs
  /// to entries[i]. Errors: as register_blob (every entry is validated before anything is
  /// written).
  [[nodiscard]] result<std::vector<catalog_write_result>> register_blobs(std::span<const blob_catalog_entry> entries) const;
  /// Removes a registration (blob, dest, date and host must match). Errors: as register_blob.
  [[nodiscard]] result<catalog_write_result> unregister_blob(const blob_catalog_entry& e) const;
  /// Entries matching `q`, in blob-name order. Errors: invalid_argument (no dest/date/host),
  /// bad_response (a stored entry that is not a blob entry), storage errors.
  [[nodiscard]] result<std::vector<blob_catalog_entry>> find(const blob_catalog_query& q) const;

  /// The generic catalog underneath (recover, compact, stats, paging).
  const catalog& generic() const noexcept { return catalog_; }

  /// Record ↔ entry conversions (pure). from_fields errors: bad_response.
  static catalog_fields to_fields(const blob_catalog_entry& e);
  [[nodiscard]] static result<blob_catalog_entry> from_fields(const catalog_fields& f);
  /// The generic query for `q` (pure). Errors: invalid_argument.
  [[nodiscard]] static result<catalog_query> to_query(const blob_catalog_query& q);
  /// Checks an entry before it is written. Errors: invalid_argument.
  [[nodiscard]] static result<void> validate(const blob_catalog_entry& e);

private:
  explicit blob_catalog(catalog c) : catalog_(std::move(c)) {}
  catalog catalog_;
};

} // namespace shoal::storage
