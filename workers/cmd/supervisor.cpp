// `shoal supervisor`: one per host; starts and keeps `fleet.workers` worker processes
// (workers/fleet/supervisor.hpp). SIGTERM / SIGINT drain the fleet and exit 0; a second one
// kills the workers at once. SIGHUP re-reads the configuration file (N changes without touching
// healthy workers).

#include "workers/cmd/cli.hpp"
#include "workers/child_process.hpp"
#include "workers/fleet/supervisor.hpp"
#include "workers/web/dashboard.hpp"

#include <spdlog/spdlog.h>

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::cmd {
namespace {

std::atomic<workers::fleet::supervisor*> g_supervisor{nullptr};

extern "C" void on_supervisor_signal(int sig) {
  auto* s = g_supervisor.load();
  if (!s)
    return;
  if (sig == SIGHUP)
    s->request_reload();
  else
    s->request_stop();
}

struct supervisor_args {
  std::optional<std::uint32_t> workers;
  std::string endpoint;
  std::optional<std::uint32_t> metrics_port;
  std::optional<std::uint32_t> web_port;
  std::string job;
  std::string exec;
  std::string queue;
  std::optional<std::uint32_t> concurrency;
  std::string worker_program; // tests: a fake worker
};

// The flags of `a` over the [fleet]/[worker] keys of `c` (again after every reload).
void apply(const supervisor_args& a, workers::config& c) {
  if (a.workers)
    c.fleet.workers = *a.workers;
  if (!a.endpoint.empty())
    c.fleet.endpoint = a.endpoint;
  if (a.metrics_port)
    c.fleet.metrics_port = *a.metrics_port;
  if (a.web_port)
    c.web.port = *a.web_port;
  if (!a.job.empty())
    c.worker.job = a.job;
  if (!a.exec.empty())
    c.worker.exec_command = a.exec;
  if (!a.queue.empty())
    c.worker.queue = a.queue;
  if (a.concurrency)
    c.worker.concurrency = *a.concurrency;
}

int run_supervisor(const global_options& g, const supervisor_args& a) {
  auto cfg = load(g, storage_need::explicit_only, "supervisor");
  if (!cfg)
    return 2;
  apply(a, *cfg);
  if (auto v = workers::validate(*cfg); !v) {
    std::fprintf(stderr, "shoal supervisor: %s\n", v.error().describe().c_str());
    return 2;
  }
  init_logging(*cfg);
  spdlog::info("supervisor: storage {}", storage_summary(*cfg));

  workers::fleet::supervisor_options so;
  so.cfg = *cfg;
  so.dashboard = workers::web::dashboard_starter(); // served when [web] port ≠ 0
  so.reload = [g, a]() -> workers::result<workers::config> {
    auto c = load(g, storage_need::explicit_only, "supervisor");
    if (!c)
      return workers::fail(workers::errc::invalid_argument, "the configuration has errors (see above)");
    apply(a, *c);
    if (auto v = workers::validate(*c); !v)
      return std::unexpected(v.error());
    return *std::move(c);
  };
  // The worker gets the same configuration: the global flags, then its own. The connection
  // string goes through its environment (supervisor_options::cfg), never its argv.
  if (!a.worker_program.empty()) {
    so.worker_command = {a.worker_program};
  } else {
    so.worker_command = {workers::self_executable().string()};
    if (!g.config_path.empty())
      so.worker_command.insert(so.worker_command.end(), {"--config", g.config_path});
    if (!g.log_level.empty())
      so.worker_command.insert(so.worker_command.end(), {"--log-level", g.log_level});
    so.worker_command.push_back("worker");
  }
  if (!a.job.empty())
    so.worker_args.insert(so.worker_args.end(), {"--job", a.job});
  if (!a.exec.empty())
    so.worker_args.insert(so.worker_args.end(), {"--exec", a.exec});
  if (!a.queue.empty())
    so.worker_args.insert(so.worker_args.end(), {"--queue", a.queue});
  if (a.concurrency)
    so.worker_args.insert(so.worker_args.end(), {"--concurrency", std::to_string(*a.concurrency)});

  auto sup = workers::fleet::supervisor::make(std::move(so));
  if (!sup) {
    std::fprintf(stderr, "shoal supervisor: %s\n", sup.error().describe().c_str());
    return 1;
  }
  g_supervisor.store(sup->get());
  struct sigaction sa{};
  sa.sa_handler = on_supervisor_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGHUP})
    sigaction(sig, &sa, nullptr);

  std::string metrics;
  for (int p : (*sup)->metrics_ports())
    metrics += " metrics http://" + cfg->fleet.metrics_address + ":" + std::to_string(p) + "/metrics";
  for (int p : (*sup)->web_ports()) // the dashboard (issue 17)
    metrics += " dashboard http://" + cfg->web.address + ":" + std::to_string(p) + "/";
  std::printf("shoal supervisor: listening on %s, %u worker(s)%s\n", (*sup)->endpoint().c_str(),
              workers::fleet::resolve_worker_count(*cfg), metrics.c_str());
  std::fflush(stdout);
  const int rc = (*sup)->run();
  for (int sig : {SIGTERM, SIGINT, SIGHUP})
    signal(sig, SIG_DFL);
  g_supervisor.store(nullptr);
  return rc;
}

} // namespace

void add_supervisor_command(CLI::App& app, global_options& g, command_fn& run) {
  auto a = std::make_shared<supervisor_args>();
  auto* cmd = app.add_subcommand("supervisor", "Run this host's fleet of workers: start, restart, drain, status");
  cmd->add_option("--workers", a->workers, "worker processes (fleet.workers; 0 = 2 per core)");
  cmd->add_option("--endpoint", a->endpoint, "ROUTER endpoint for the workers and `shoal status` (fleet.endpoint)");
  cmd->add_option("--metrics-port", a->metrics_port, "Prometheus /metrics port (fleet.metrics_port; 0 = off)");
  cmd->add_option("--web-port", a->web_port, "dashboard port (web.port; 0 = off)");
  cmd->add_option("--job", a->job, "exec|etl, passed to every worker (worker.job)");
  cmd->add_option("--exec", a->exec, "exec job command, passed to every worker (worker.exec_command)");
  cmd->add_option("--queue", a->queue, "work-table queue, passed to every worker (worker.queue)");
  cmd->add_option("--concurrency", a->concurrency, "records per worker at once (worker.concurrency)");
  cmd->add_option("--worker-program", a->worker_program, "run this program instead of `shoal worker` (tests)")
      ->group("");
  cmd->callback([&g, &run, a] { run = [&g, a] { return run_supervisor(g, *a); }; });
}

} // namespace shoal::cmd
