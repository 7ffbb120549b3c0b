#pragma once
// Prometheus metrics of a supervisor (issue 5 item 7), served with prometheus-cpp on
// fleet.metrics_address:fleet.metrics_port (GET /metrics, text exposition format 0.0.4).
//
// Counters summed over the host's workers come from their heartbeats (each worker reports
// totals since it started; the supervisor adds the increase), the others are the supervisor's
// own. Metric names (all prefixed shoal_):
//   claims_total, completions_total, failures_total, contention_total, lease_lost_total,
//   worker_restarts_total, missed_heartbeats_total, hwm_drops_total,
//   restart_intensity_exceeded_total,
//   persisted_blobs_total, persisted_records_total, persisted_bytes_total (from the
//     persist.committed announcements the supervisor subscribes to: persistor.committed_endpoint),
//   queue_completions_total{queue}, queue_failures_total{queue},
//   web_actions_total{action,outcome}                                  (counters)
//   records{queue,status}, workers{state}, coordinator,
//   queue_oldest_pending_age_seconds{queue}                            (gauges)
// deploy/grafana/ and deploy/prometheus/ use these names; tests/workers/web checks they exist.

#include "workers/error.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace shoal::workers::fleet {

/// The counters of fleet_metrics.
enum class fleet_counter : std::uint8_t {
  claims,            ///< records claimed by the workers
  completions,       ///< records completed
  failures,          ///< failed attempts
  contention,        ///< claims lost to another claimer (412)
  lease_lost,        ///< completions refused: the record was re-claimed
  restarts,          ///< worker processes restarted by the supervisor
  missed_heartbeats, ///< workers declared hung (heartbeat_liveness intervals of silence)
  hwm_drops,         ///< envelopes dropped at a ZeroMQ high-water mark (envelope_socket stats)
  restart_intensity_exceeded, ///< a worker slot exceeded its restart intensity and backs off
  persisted_blobs,   ///< blobs a persistor announced as committed (persist.committed)
  persisted_records, ///< records in those blobs
  persisted_bytes,   ///< bytes of those blobs
};

/// The supervisor's metrics registry, optionally served over HTTP. Thread-safe: every method
/// may be called from any thread (prometheus-cpp metrics are atomic).
class fleet_metrics {
public:
  /// A registry that is not served (port 0, tests): render() still works.
  fleet_metrics();
  ~fleet_metrics();
  fleet_metrics(const fleet_metrics&) = delete;
  fleet_metrics& operator=(const fleet_metrics&) = delete;

  /// A registry served on `address`:`port` (port 0 = any free port, see ports()).
  /// Errors: io (the port cannot be bound).
  [[nodiscard]] static result<std::unique_ptr<fleet_metrics>> serve(const std::string& address,
                                                                     std::uint16_t port);

  /// Adds `n` to counter `c`.
  void add(fleet_counter c, std::uint64_t n = 1);
  /// Sets shoal_records{queue,status} to the given counts (statuses absent from `by_status`
  /// are set to 0 among pending, claimed, done, dead).
  void set_records(const std::string& queue, const std::map<std::string, std::uint64_t>& by_status);
  /// Sets shoal_workers{state} for every state in `by_state`; states not listed become 0.
  void set_workers(const std::map<std::string, std::uint64_t>& by_state);
  /// Sets shoal_coordinator: 1 while this supervisor holds the coordinator lease, else 0.
  void set_coordinator(bool holds);
  /// Sets shoal_queue_oldest_pending_age_seconds{queue} (0 when nothing is pending).
  void set_oldest_pending_age(const std::string& queue, double seconds);
  /// Adds to shoal_queue_completions_total{queue} and shoal_queue_failures_total{queue}.
  void add_queue(const std::string& queue, std::uint64_t completions, std::uint64_t failures);
  /// Adds 1 to shoal_web_actions_total{action,outcome} (e.g. "requeue", "done" | "refused").
  void add_web_action(const std::string& action, const std::string& outcome);

  /// The text exposition of every metric (what GET /metrics returns).
  std::string render() const;
  /// The ports listened on (empty when not served).
  std::vector<int> ports() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::workers::fleet
