#pragma once
// Clients of the Azure Table service: tables (create, delete, list) and entities (insert, get,
// upsert, update, merge, delete, query with continuation, entity group transactions).
//
// REST pages followed: Create Table, Delete Table, Query Tables, Insert Entity, Insert Or Replace
// Entity, Insert Or Merge Entity, Update Entity, Merge Entity, Delete Entity, Query Entities,
// Query timeout and pagination, Performing entity group transactions. Requests use
// `Accept: application/json;odata=minimalmetadata` and x-ms-version 2019-02-02 (the pipeline's
// table_api_version). See shared/reference/azure-storage-rest.md §2b, §2d, §3, §4, §5, §8.
//
// Every call is blocking, goes through `pipeline` (signing, retries: see retry_options) and
// returns errors as values. Inputs are validated client-side first (invalid_argument /
// limit_exceeded, nothing sent). The clients are thread-safe: all methods are const and copies
// share the pipeline.
//
// Retried writes (issue 2 item 9). A write whose earlier attempt may have landed (the
// pipeline reports attempts > 1) is not reported as a conflict blindly:
//  - insert → 409 EntityAlreadyExists: the entity is read back; same content → success (the
//    read's ETag); otherwise conflict, with a message saying the stored entity differs.
//  - update/merge with an ETag → 412: read back; the stored entity holds our content → success;
//    otherwise precondition_failed, saying so.
//  - delete → 404: success (the earlier attempt deleted it).
//  - transaction → 2xx batch answer whose failing operation got 409, 412 or 404: every entity of
//    the transaction is read back; if each shows the operation's effect (inserted/replaced =
//    same content, merged = holds the patch, deleted = gone), the earlier attempt committed →
//    success with the reads' ETags; otherwise the service's error, `attempts` > 1.
// Server time: every write result carries the service's `Date` header, so leases can be computed
// from the storage clock, never the local one.

#include "storage/error.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_entity.hpp"
#include "storage/table_filter.hpp"

#include <chrono>
#include <cstddef>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::storage {

/// What a successful write returns.
struct table_write_result {
  std::string etag;                                  ///< the entity's new ETag; empty after a delete
  /// The response `Date` header: the storage server's clock, 1 s resolution. The epoch when the
  /// response had none (never on Azure/Azurite) or after a retried delete resolved by its 404.
  std::chrono::system_clock::time_point server_time;
};

// -- queries --------------------------------------------------------------------------------------

/// A query over the entities of one table.
struct table_query {
  table_filter filter{};              ///< empty = all entities
  std::vector<std::string> select{};  ///< $select property names; empty = all properties
  int page_size = table_limits::max_page_size; ///< $top per page, 1..1000 (not a total)
  std::optional<std::size_t> max_entities{};   ///< stop after this many in total (query_all, pager)
};

/// Where the next page of a query starts (x-ms-continuation-NextPartitionKey / NextRowKey).
/// Opaque tokens: pass them back unchanged.
struct table_continuation {
  std::string next_partition_key;
  std::string next_row_key; ///< may be empty (the service may omit it)
};

/// One page of a query. A page can be empty and still have a continuation.
struct table_query_page {
  std::vector<table_entity> entities;                  ///< in PartitionKey, RowKey order
  std::optional<table_continuation> continuation;      ///< nullopt: this was the last page
  std::chrono::system_clock::time_point server_time{}; ///< the response `Date` header
};

class table_client;

/// Walks the pages of a query, following continuations transparently (empty pages with a
/// continuation are skipped). Owner only (not thread-safe); holds a copy of the client.
class table_pager {
public:
  /// The next non-empty page, or nullopt when the query is exhausted. Errors: those of
  /// table_client::query_page; after an error the pager may be retried (next() resends the
  /// same page request).
  [[nodiscard]] result<std::optional<table_query_page>> next();
  /// True once the last page has been returned (or max_entities reached).
  bool done() const noexcept { return done_; }

private:
  friend class table_client;
  table_pager(const table_client& client, table_query query);
  std::shared_ptr<const table_client> client_;
  table_query query_;
  std::optional<table_continuation> next_;
  std::size_t returned_ = 0;
  bool done_ = false;
};

// -- transactions ---------------------------------------------------------------------------------

/// The operations an entity group transaction may hold.
enum class table_operation_kind : std::uint8_t {
  insert, update, merge, insert_or_replace, insert_or_merge, delete_entity
};

/// One operation of a transaction. For update, merge and delete_entity `if_match` is the ETag to
/// require ("*" = any); it is ignored for the others.
struct table_operation {
  table_operation_kind kind = table_operation_kind::insert;
  table_entity entity;       ///< for delete_entity only the keys are used
  std::string if_match = "*";
};

/// Up to 100 operations on distinct entities of ONE PartitionKey, ≤ 4 MiB, applied atomically.
/// Build it, then pass it to table_client::submit_transaction. Owner only.
class table_transaction {
public:
  /// Appends an operation. Never fails here: the limits are checked by submit_transaction.
  table_transaction& insert(table_entity e) { return add(table_operation_kind::insert, std::move(e), "*"); }
  table_transaction& update(table_entity e, std::string if_match = "*") {
    return add(table_operation_kind::update, std::move(e), std::move(if_match));
  }
  table_transaction& merge(table_entity e, std::string if_match = "*") {
    return add(table_operation_kind::merge, std::move(e), std::move(if_match));
  }
  table_transaction& insert_or_replace(table_entity e) {
    return add(table_operation_kind::insert_or_replace, std::move(e), "*");
  }
  table_transaction& insert_or_merge(table_entity e) {
    return add(table_operation_kind::insert_or_merge, std::move(e), "*");
  }
  table_transaction& delete_entity(std::string partition_key, std::string row_key, std::string if_match = "*");
  /// Appends a prepared operation.
  table_transaction& add(table_operation_kind kind, table_entity e, std::string if_match);

  const std::vector<table_operation>& operations() const noexcept { return ops_; }
  std::size_t size() const noexcept { return ops_.size(); }
  bool empty() const noexcept { return ops_.empty(); }
  void clear() noexcept { ops_.clear(); }

private:
  std::vector<table_operation> ops_;
};

/// The outcome of a committed transaction.
struct table_transaction_result {
  std::vector<std::string> etags; ///< one per operation, in order; empty for delete_entity
  std::chrono::system_clock::time_point server_time; ///< the response `Date` header
};

/// Why a transaction failed. Nothing was committed. `failed_index` is the 0-based index of the
/// operation the service rejected (from the `N:` message prefix, or Azurite's 1-based Content-ID),
/// or of the operation client-side validation rejected; nullopt when the whole request failed.
struct table_transaction_error : error {
  std::optional<std::size_t> failed_index;
};

/// The result of submit_transaction.
using table_transaction_outcome = std::expected<table_transaction_result, table_transaction_error>;

// -- table_client ---------------------------------------------------------------------------------

/// Operations on one table and its entities. Thread-safe; cheap to copy (shares the pipeline).
class table_client {
public:
  /// A client for `table_name` over `p`. Errors: invalid_argument (bad table name).
  [[nodiscard]] static result<table_client> make(pipeline p, std::string table_name);

  /// The table name.
  const std::string& name() const noexcept { return name_; }
  /// The pipeline requests go through.
  const pipeline& transport() const noexcept { return pipeline_; }

  // -- the table itself ----------------------------------------------------------------------
  /// Creates the table. Errors: conflict (409 TableAlreadyExists, or TableBeingDeleted on Azure).
  [[nodiscard]] result<void> create_table() const;
  /// Creates the table unless it exists. Returns true if this call created it.
  [[nodiscard]] result<bool> create_table_if_not_exists() const;
  /// Deletes the table. Errors: not_found (404).
  [[nodiscard]] result<void> delete_table() const;

  // -- single entities -----------------------------------------------------------------------
  /// Inserts `e` (POST, Prefer: return-no-content). Errors: conflict (409 EntityAlreadyExists,
  /// after the retried-write check above), not_found (table missing), invalid_argument /
  /// limit_exceeded (validation).
  [[nodiscard]] result<table_write_result> insert(const table_entity& e) const;
  /// Reads one entity (all properties, or `select`). Errors: not_found (404).
  [[nodiscard]] result<table_entity> get(std::string_view partition_key, std::string_view row_key,
                                         const std::vector<std::string>& select = {}) const;
  /// Like get, also returning the response `Date`.
  [[nodiscard]] result<std::pair<table_entity, std::chrono::system_clock::time_point>>
  get_with_server_time(std::string_view partition_key, std::string_view row_key) const;
  /// Creates or replaces `e` whatever its state (PUT without If-Match).
  [[nodiscard]] result<table_write_result> insert_or_replace(const table_entity& e) const;
  /// Creates `e` or merges its properties into the stored entity (MERGE without If-Match).
  [[nodiscard]] result<table_write_result> insert_or_merge(const table_entity& e) const;
  /// Replaces the stored entity if its ETag is `if_match` ("*" = any). `if_match` must be
  /// non-empty. Errors: precondition_failed (412, stale ETag), not_found (404).
  [[nodiscard]] result<table_write_result> update(const table_entity& e, std::string_view if_match) const;
  /// Merges `e`'s properties into the stored entity if its ETag is `if_match` ("*" = any).
  /// Errors: precondition_failed (412), not_found (404).
  [[nodiscard]] result<table_write_result> merge(const table_entity& e, std::string_view if_match) const;
  /// Deletes the entity if its ETag is `if_match` ("*" = any). Errors: precondition_failed
  /// (412), not_found (404, unless an earlier attempt of this call deleted it).
  [[nodiscard]] result<table_write_result> delete_entity(std::string_view partition_key,
                                                         std::string_view row_key,
                                                         std::string_view if_match = "*") const;

  // -- queries -------------------------------------------------------------------------------
  /// One page of `q`, starting at `from` (nullopt = the first page). Errors: invalid_argument
  /// (filter invalid or > 15 comparisons, page_size outside 1..1000), bad_request (400 from the
  /// service), not_found (table missing), bad_response.
  [[nodiscard]] result<table_query_page> query_page(const table_query& q,
                                                    const std::optional<table_continuation>& from = {}) const;
  /// A pager over all pages of `q`.
  table_pager query(table_query q) const;
  /// Every entity `q` matches (up to q.max_entities), following continuations.
  [[nodiscard]] result<std::vector<table_entity>> query_all(const table_query& q) const;
  /// Calls `fn` for each entity `q` matches until it returns false; returns how many it saw.
  [[nodiscard]] result<std::size_t> for_each(const table_query& q,
                                             const std::function<bool(const table_entity&)>& fn) const;

  // -- entity group transactions -------------------------------------------------------------
  /// Submits `tx` as one `$batch` with one changeset. Checked client-side first: 1..100
  /// operations, one PartitionKey, each (PK, RK) at most once, every entity valid, body ≤ 4 MiB
  /// (invalid_argument / limit_exceeded with failed_index where one operation is at fault).
  /// On success the per-operation ETags; on failure the service's status of the failing
  /// operation (conflict, precondition_failed, not_found, bad_request, ...) with failed_index
  /// and `attempts`. A retried transaction rejected with 409/412/404 is resolved by reading
  /// back as the file comment says (one GET per operation).
  [[nodiscard]] table_transaction_outcome submit_transaction(const table_transaction& tx) const;

private:
  table_client(pipeline p, std::string name);
  result<table_write_result> write_entity(http_method method, const table_entity& e,
                                          std::string_view if_match) const;
  std::string entity_path(std::string_view pk, std::string_view rk) const;
  pipeline pipeline_;
  std::string name_;
};

// -- table_service_client -------------------------------------------------------------------------

/// Options of table_service_client::list_tables.
struct list_tables_options {
  std::string prefix;  ///< only names starting with this (case-sensitive on Azurite); "" = all
  int page_size = 1000; ///< $top per page, 1..1000
};

/// One page of table names.
struct table_list_page {
  std::vector<std::string> names;
  std::optional<std::string> next_table_name; ///< continuation; nullopt on the last page
};

/// Account-level table operations, and a factory of table_client. Thread-safe; cheap to copy.
class table_service_client {
public:
  /// A service client over `p`.
  explicit table_service_client(pipeline p) : pipeline_(std::move(p)) {}
  /// Parses `connection_string` and builds a pipeline. Errors: invalid_argument.
  [[nodiscard]] static result<table_service_client> from_connection_string(std::string_view connection_string,
                                                                           pipeline_options opts = {});

  /// A client for `table_name` (no request is sent). Errors: invalid_argument.
  [[nodiscard]] result<table_client> table(std::string table_name) const {
    return table_client::make(pipeline_, std::move(table_name));
  }
  /// Creates `name`. Errors: invalid_argument, conflict (409).
  [[nodiscard]] result<void> create_table(std::string_view name) const;
  /// Creates `name` unless it exists; true if this call created it.
  [[nodiscard]] result<bool> create_table_if_not_exists(std::string_view name) const;
  /// Deletes `name`. Errors: invalid_argument, not_found (404).
  [[nodiscard]] result<void> delete_table(std::string_view name) const;
  /// One page of table names, from `continuation` (nullopt = first page).
  [[nodiscard]] result<table_list_page> list_tables_page(const list_tables_options& opts = {},
                                                         const std::optional<std::string>& continuation = {}) const;
  /// All table names (following continuations).
  [[nodiscard]] result<std::vector<std::string>> list_tables(const list_tables_options& opts = {}) const;

  const pipeline& transport() const noexcept { return pipeline_; }

private:
  pipeline pipeline_;
};

} // namespace shoal::storage
