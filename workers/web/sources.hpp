#pragma once
// What the dashboard's pages show, read from storage and SQL and rendered as the JSON documents
// of its /api/ endpoints (shapes: workers/web/API.md). The HTTP layer (dashboard.hpp) only
// routes, checks and sends; everything it sends is built here.
//
// Reads go through the components' own calls where they have one: work_table (dead letters,
// requeue, purge), etl::run_log (ETL instances and their step history), blob_catalog (the
// catalog query form). Two reads have no call to go through and follow the written layouts:
// the quarantine table of the SQL sink (workers/etl/sql_sink.hpp "Schema"), opened read-only,
// and the per-day and per-dest totals of the catalog, one scan of its `date` index entities
// (storage/CATALOG.md "Tables").

#include "storage/pipeline.hpp"
#include "workers/config.hpp"
#include "workers/error.hpp"
#include "workers/fleet/queue_monitor.hpp"

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::workers::web {

/// Which records a requeue or purge acts on.
struct record_action {
  std::string queue;            ///< the work-table queue
  std::vector<std::string> ids; ///< these records …
  bool all_dead = false;        ///< … or, when true, every dead record of the queue
};

/// A catalog query from the form (at least one field set).
struct catalog_form {
  std::string dest, date, host; ///< "" = not part of the query
  std::size_t limit = 200;      ///< entries returned at most
};

/// The data behind the pages. Thread-safe: every method may run on any HTTP thread at once
/// (storage clients are thread-safe; the SQL connection and the catalog cache are locked).
class dashboard_data {
public:
  /// Over `pipe` (nullopt: storage is not configured; pages say so) and `monitor` (borrowed,
  /// may be null: the queue page is then empty). No request is sent here.
  dashboard_data(config cfg, std::optional<storage::pipeline> pipe, fleet::queue_monitor* monitor);
  ~dashboard_data();
  dashboard_data(const dashboard_data&) = delete;
  dashboard_data& operator=(const dashboard_data&) = delete;

  /// GET /api/queues: every queue's counts per status and shard, oldest pending age, history.
  std::string queues_json() const;
  /// GET /api/dead: dead letters (and records failing but still retried) of `queue`, at most
  /// `limit` of each, with error, attempts, owners and an escaped-on-display payload preview.
  /// Errors: invalid_argument (queue), storage.
  [[nodiscard]] result<std::string> dead_json(const std::string& queue, std::size_t limit) const;
  /// POST /api/dead/requeue: back to pending (attempts 0). Returns how many changed.
  /// Errors: invalid_argument (nothing selected), storage.
  [[nodiscard]] result<std::size_t> requeue(const record_action& a) const;
  /// POST /api/dead/purge: deletes the records (and payload blobs). Returns how many.
  /// Errors: invalid_argument (nothing selected), storage.
  [[nodiscard]] result<std::size_t> purge(const record_action& a) const;
  /// GET /api/etl: orchestration instances (newest first, at most `limit`, optionally of one
  /// status) and the SQL sink's quarantine (newest first, at most `limit`). Errors: storage.
  [[nodiscard]] result<std::string> etl_json(const std::string& status, std::size_t limit) const;
  /// GET /api/etl/run: one instance and its step timeline. Errors: not_found, storage.
  [[nodiscard]] result<std::string> etl_run_json(const std::string& id) const;
  /// GET /api/persistor: blobs and records per day and per dest from the catalog (cached for
  /// `catalog_cache`). Errors: storage.
  [[nodiscard]] result<std::string> persistor_json() const;
  /// GET /api/catalog: the blobs matching `q`. Errors: invalid_argument (no field), not_found
  /// (no catalog yet), storage.
  [[nodiscard]] result<std::string> catalog_json(const catalog_form& q) const;

  /// How long catalog totals are reused before being read again.
  static constexpr std::chrono::seconds catalog_cache{60};
  /// Index entities one catalog scan reads at most (the totals then say "partial").
  static constexpr std::size_t catalog_scan_max = 200'000;

  struct impl; ///< defined in sources.cpp

private:
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::workers::web
