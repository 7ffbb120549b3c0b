#pragma once
// The web dashboard of `shoal supervisor` (issue 17), served with civetweb on
// [web] address:port when [web] port ≠ 0. Pages (one HTML shell, rendered by the embedded
// app.js, which polls the JSON every [web] refresh_ms):
//   /fleet      hosts, coordinator, shard assignment, workers per host        GET /api/fleet
//   /queues     counts per status and shard, last hour's throughput, oldest   GET /api/queues
//   /dead       dead letters and failing records; requeue, purge              GET /api/dead?queue=Q
//                                                                             POST /api/dead/requeue, /api/dead/purge
//   /etl        orchestration instances, step timelines, quarantine           GET /api/etl, /api/etl/run?id=ID
//   /persistor  blobs per day, records per dest, catalog query form           GET /api/persistor, /api/catalog?dest=&date=&host=
// and GET /api/config (refresh interval, whether actions are enabled). JSON shapes:
// workers/web/API.md. Actions need the token of [web] token_file (guard.hpp); without one the
// dashboard is read-only. Every response carries a Content-Security-Policy that allows only the
// dashboard's own scripts and styles, and the pages put data into the DOM as text only, so a
// payload holding markup is shown, never run.

#include "storage/pipeline.hpp"
#include "workers/config.hpp"
#include "workers/error.hpp"
#include "workers/fleet/fleet_feed.hpp"
#include "workers/fleet/supervisor.hpp"

#include <memory>
#include <optional>
#include <vector>

namespace shoal::workers::web {

/// Settings of a dashboard.
struct dashboard_options {
  config cfg;                            ///< [web] (address, port, token_file, refresh_ms) and the tables read
  std::optional<storage::pipeline> pipe; ///< storage; nullopt = pages say storage is not configured
  fleet::queue_monitor* queues = nullptr;       ///< borrowed, may be null: the queue page is then empty
  fleet::fleet_metrics* metrics = nullptr; ///< borrowed, may be null: counts actions
  unsigned threads = 4;                  ///< HTTP worker threads (each page request takes one)
};

/// A running dashboard. Thread-safe; the server stops when it is destroyed.
class dashboard final : public fleet::supervisor_dashboard {
public:
  /// Reads the token file, binds and starts serving. Errors: io (the port cannot be bound, the
  /// token file cannot be read), invalid_argument (a token shorter than 16 characters).
  [[nodiscard]] static result<std::unique_ptr<dashboard>> start(dashboard_options opts);
  ~dashboard() override;
  dashboard(const dashboard&) = delete;
  dashboard& operator=(const dashboard&) = delete;

  /// Where the supervisor's loop publishes the fleet view (see fleet_feed).
  fleet::fleet_feed& feed() noexcept override;
  /// The ports listened on (port 0 in the options = any free port).
  std::vector<int> ports() const override;

  struct impl; ///< defined in dashboard.cpp

private:
  explicit dashboard(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// The starter `shoal supervisor` hands its supervisor (supervisor_options::dashboard): a
/// dashboard with the context's configuration, storage, queue readings and metrics.
fleet::dashboard_starter dashboard_starter();

} // namespace shoal::workers::web
