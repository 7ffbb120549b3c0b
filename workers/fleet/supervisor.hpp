#pragma once
// `shoal supervisor` (issue 5 item 3): one per host. Starts N `shoal worker` processes, keeps
// them alive and coordinated:
//  - binds a ROUTER on fleet.endpoint; each worker connects a DEALER with routing id = its slot
//    ("w0", "w1", …) and says ctl.hello; both sides heartbeat (workers/fleet/ctl_protocol.hpp);
//  - restarts any worker that exits, with a per-slot restart intensity and backoff
//    (restart_policy.hpp); a worker silent for heartbeat_liveness intervals is SIGKILLed and
//    restarted; whenever a worker dies without a clean ctl.bye its claims are released at once
//    (work_table::release_owner), not after their leases expire;
//  - splits this host's shards (membership.hpp) among its live workers (ctl.assign, increasing
//    epochs) and forwards work.available wake-ups;
//  - answers ctl.status with the fleet view (status.hpp, STATUS.md) and serves Prometheus
//    metrics (metrics.hpp) when fleet.metrics_port ≠ 0, and the dashboard when web.port ≠ 0
//    (started through supervisor_options::dashboard: workers/web/dashboard.hpp, handed in by
//    workers/cmd, so the fleet does not depend on the web pages);
//  - request_stop (SIGTERM/SIGINT): ctl.drain to every worker, wait fleet.drain_timeout_ms,
//    SIGKILL stragglers and release what they held, exit 0 with no record left claimed;
//  - request_reload (SIGHUP): re-reads the configuration and changes N (new slots are started,
//    extra ones drained) without touching healthy workers.
//
// Workers run in their own process groups, so a terminal's Ctrl-C reaches only the supervisor
// (which drains them) and a dead worker's leftover children (exec jobs) can be killed with it.

#include "storage/pipeline.hpp"
#include "workers/config.hpp"
#include "workers/error.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::workers::fleet {

class fleet_feed;
class fleet_metrics;
class queue_monitor;

/// What the supervisor lends the dashboard it starts ([web] port ≠ 0). The pointers are
/// borrowed for the dashboard's life: the supervisor stops the dashboard before them.
struct dashboard_context {
  config cfg;                            ///< the supervisor's configuration ([web], the tables read)
  std::optional<storage::pipeline> pipe; ///< storage; nullopt when [storage] is not usable
  queue_monitor* queues = nullptr;       ///< the queue readings (queue_monitor.hpp); may be null
  fleet_metrics* metrics = nullptr;      ///< the metrics registry (metrics.hpp); may be null
};

/// A dashboard run beside the supervisor (workers/web/dashboard.hpp). Thread-safe; it stops
/// serving when destroyed.
class supervisor_dashboard {
public:
  virtual ~supervisor_dashboard() = default;
  /// Where the supervisor's loop publishes the fleet view a page waits for (fleet_feed.hpp).
  virtual fleet_feed& feed() noexcept = 0;
  /// The ports listened on.
  virtual std::vector<int> ports() const = 0;
};

/// Starts the dashboard. Errors: whatever the dashboard's start returns (io: the port cannot
/// be bound or the token file read; invalid_argument: a bad token).
using dashboard_starter = std::function<result<std::unique_ptr<supervisor_dashboard>>(dashboard_context)>;

/// Settings of a supervisor.
struct supervisor_options {
  config cfg;  ///< validated configuration ([fleet], [worker], [work], [storage])
  /// Called on request_reload: the configuration to switch to (flag overrides applied), or an
  /// error to keep the current one. Empty = reloading only logs that it cannot.
  std::function<result<config>()> reload;
  /// The worker command before the per-slot flags: {program, global flags…, "worker"}.
  /// Empty = {self_executable(), "worker"}. Tests substitute a fake worker here.
  std::vector<std::string> worker_command;
  /// Appended after "--slot NAME --supervisor EP" (e.g. --job, --exec, --queue). Never a
  /// secret: the storage connection string (cfg's, after each reload) reaches every worker
  /// through its environment (SHOAL_STORAGE_CONNECTION_STRING), never its argv.
  std::vector<std::string> worker_args;
  /// Starts the dashboard when cfg.web.port ≠ 0 (`shoal supervisor` passes
  /// web::dashboard_starter(), workers/web/dashboard.hpp). Empty with web.port ≠ 0: make()
  /// fails with invalid_argument.
  dashboard_starter dashboard;
};

/// The default ROUTER endpoint of `host`'s supervisor:
/// "ipc://{$XDG_RUNTIME_DIR or /tmp}/shoal-{host}.sock". Thread-safe (reads the environment).
std::string default_endpoint(const std::string& host);

/// fleet.host, or gethostname() when empty. Thread-safe.
std::string resolve_host(const config& cfg);

/// fleet.workers, or 2 per core when 0. Thread-safe.
std::uint32_t resolve_worker_count(const config& cfg);

/// The work-table queue `cfg`'s workers claim from (worker.queue, else "exec" for the exec
/// job, etl.queue for the ETL job). Thread-safe (pure).
std::string resolve_worker_queue(const config& cfg);

/// Splits `host_shards` among `workers` workers, round robin. With fewer shards than workers a
/// shard goes to several workers (an empty list would mean "every shard"). An empty
/// `host_shards` gives every worker an empty list. Thread-safe (pure).
std::vector<std::vector<std::uint32_t>> split_shards(const std::vector<std::uint32_t>& host_shards,
                                                     std::size_t workers);

/// One host's supervisor. run() owns the sockets and children; request_stop/request_reload may
/// be called from any thread or a signal handler (they only set atomic flags).
class supervisor {
public:
  /// Binds the ROUTER, connects storage and the membership, starts metrics; no worker is
  /// started before run(). Errors: invalid_argument (bad endpoint), storage, io (metrics port),
  /// transport errors as errc::io.
  [[nodiscard]] static result<std::unique_ptr<supervisor>> make(supervisor_options opts);
  ~supervisor();
  supervisor(const supervisor&) = delete;
  supervisor& operator=(const supervisor&) = delete;

  /// Runs until stopped and drained. Returns 0 when every worker ended and every claim of a
  /// worker that did not exit cleanly was released; 1 when a release failed. Blocks; owner only.
  int run();

  /// Drain and stop (SIGTERM, SIGINT). A second call kills the workers at once.
  /// Async-signal-safe.
  void request_stop() noexcept;
  /// Reload the configuration (SIGHUP). Async-signal-safe.
  void request_reload() noexcept;

  /// The bound ROUTER endpoint (resolved: tcp ports filled in).
  std::string endpoint() const;
  /// The ports the metrics endpoint listens on (empty when off).
  std::vector<int> metrics_ports() const;
  /// The ports the dashboard listens on (empty when [web] port is 0; workers/web/dashboard.hpp).
  std::vector<int> web_ports() const;

  struct impl; ///< defined in supervisor_internal.hpp

private:
  explicit supervisor(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::workers::fleet
