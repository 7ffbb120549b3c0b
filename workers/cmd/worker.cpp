// `shoal worker`: one worker process of a fleet (workers/fleet/worker.hpp, issue 5).
//
//   shoal worker [--slot NAME] [--supervisor ENDPOINT] [--job exec|etl|noop|sleep:MS] [--exec CMD]
//                [--queue Q] [--concurrency N] [--standalone]
//
// Flags override the [worker] keys of the configuration. `shoal supervisor` launches it as
// `shoal [--config F] [--connection-string S] worker --slot wN --supervisor ENDPOINT
// --supervisor-pid PID`.
// SIGTERM or SIGINT drains (a second one shortens the deadline to now); exit 0 after a drain,
// 1 when the job is broken or (standalone) storage cannot be reached at start, 2 for bad
// configuration. A supervised worker says hello before any storage round trip and keeps trying
// storage while it heartbeats.

#include "workers/cmd/cli.hpp"
#include "workers/cmd/jobs.hpp"

#include "storage/blob_client.hpp"
#include "storage/table_client.hpp"
#include "workers/fleet/worker.hpp"
#include "workers/claim/work_table.hpp"

#include <spdlog/spdlog.h>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <ctime>
#include <memory>
#include <thread>

namespace shoal::cmd {
namespace {

struct worker_args {
  std::string slot = "w0";
  std::string supervisor;
  std::string job;
  std::string exec;
  std::string queue;
  std::uint32_t concurrency = 0;
  bool standalone = false;
  long supervisor_pid = 0;
  bool work_table_exists = false;
  bool await_assign = false;
};

int run_worker(const global_options& g, const worker_args& a) {
  // Block the drain signals before any thread exists so every thread inherits the mask and only
  // the sigwait thread below sees them (the exec job unblocks them in its children).
  sigset_t drain_signals;
  sigemptyset(&drain_signals);
  sigaddset(&drain_signals, SIGTERM);
  sigaddset(&drain_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &drain_signals, nullptr);

  auto c = load(g, storage_need::explicit_only, "worker");
  if (!c)
    return 2;
  if (!a.job.empty())
    c->worker.job = a.job;
  if (!a.exec.empty())
    c->worker.exec_command = a.exec;
  if (!a.queue.empty())
    c->worker.queue = a.queue;
  if (a.concurrency > 0)
    c->worker.concurrency = a.concurrency;
  if (auto ok = workers::validate(*c); !ok) {
    std::fprintf(stderr, "shoal worker: %s\n", ok.error().describe().c_str());
    return 2;
  }
  init_logging(*c);
  spdlog::info("worker: storage {}", storage_summary(*c));

  auto p = make_pipeline(*c, "worker");
  if (!p)
    return 2;
  auto table = open_work_table(*c, *p, "worker");
  if (!table)
    return 2;

  workers::fleet::worker_options o;
  o.cfg = *c;
  o.slot = a.slot;
  o.factory = find_job_factory(c->worker.job); // nullptr when unknown: make() says so
  o.supervisor = a.standalone || a.supervisor == "none" ? std::string() : !a.supervisor.empty() ? a.supervisor : c->fleet.endpoint;
  o.supervisor_pid = o.supervisor.empty() ? 0 : a.supervisor_pid;
  if (o.supervisor.empty()) {
    // Alone: nobody else makes the table, and claims would fail without it.
    if (auto r = table->create_if_missing(); !r) {
      std::fprintf(stderr, "shoal worker: work table '%s': %s\n", c->work.table.c_str(),
                   r.error().describe().c_str());
      return 1;
    }
  } else {
    // Supervised: say hello first (issue 19, a joining host's first claim); the supervisor
    // made the table already (--work-table-exists), or the worker makes it if its first
    // clock read finds none.
    o.create_table = !a.work_table_exists;
    o.await_assign = a.await_assign;
  }
  auto w = workers::fleet::worker::make(*table, std::move(o));
  if (!w) {
    std::fprintf(stderr, "shoal worker: %s\n", w.error().describe().c_str());
    return w.error().code == workers::errc::invalid_argument ? 2 : 1;
  }

  std::atomic<bool> finished{false};
  std::thread signals([&] {
    int count = 0;
    const timespec tick{0, 200'000'000};
    while (!finished.load()) {
      siginfo_t info{};
      int sig = sigtimedwait(&drain_signals, &info, &tick);
      if (sig <= 0)
        continue;
      ++count;
      const char* name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
      if (count == 1) {
        spdlog::info("worker {}: {} received; draining", a.slot, name);
        (*w)->drain(std::chrono::milliseconds(0), name);
      } else {
        spdlog::warn("worker {}: {} again; stopping the running job(s) now", a.slot, name);
        (*w)->drain(std::chrono::milliseconds(1), name);
      }
    }
  });
  auto r = (*w)->run();
  finished.store(true);
  signals.join();
  spdlog::default_logger()->flush();
  if (!r) {
    std::fprintf(stderr, "shoal worker: %s\n", r.error().describe().c_str());
    return 1;
  }
  return 0;
}

} // namespace

void add_worker_command(CLI::App& app, global_options& g, command_fn& run) {
  auto a = std::make_shared<worker_args>();
  auto* cmd = app.add_subcommand(
      "worker",
      "One worker process: claims records of a work-table queue, runs a job on each (exec: a "
      "shell command per record, payload on stdin, exit 0 = done; etl: load the blob into SQL), "
      "renews leases while it runs, completes or fails them. Usually launched by `shoal "
      "supervisor`; alone it polls the table (worker.poll_min_ms doubling to poll_max_ms).");
  cmd->add_option("--slot", a->slot,
                  "slot name: routing id towards the supervisor, part of the owner string "
                  "{host}/{slot}/{pid} written into claimed records")
      ->capture_default_str();
  cmd->add_option("--supervisor", a->supervisor,
                  "ROUTER endpoint of the supervisor (ipc://… or tcp://…); default [fleet] "
                  "endpoint; none = standalone");
  cmd->add_flag("--standalone", a->standalone, "ignore [fleet] endpoint: no supervisor, just claim and work");
  cmd->add_option("--supervisor-pid", a->supervisor_pid,
                  "pid of the supervisor that started this worker (it passes its own): once it is "
                  "no longer our parent, drain and exit");
  cmd->add_flag("--work-table-exists", a->work_table_exists,
                "the supervisor created the work table and payload container: do not create them "
                "(without it a supervised worker creates them if its first clock read finds no table)");
  cmd->add_flag("--await-assign", a->await_assign,
                "claim nothing until the supervisor's first ctl.assign, however late (the "
                "supervisor starts its workers before it joins the fleet); meanwhile read the "
                "server clock and the queue's shard meta rows");
  cmd->add_option("--job", a->job,
                  "exec|etl|noop|sleep:MS (default [worker] job); noop completes every record at "
                  "once and sleep:MS after MS ms: the fleet's own cost per record")
      ->check(CLI::Validator(
          [](std::string& v) { return workers::valid_job_name(v) ? std::string() : "must be exec, etl, noop or sleep:MS"; },
          "JOB"));
  cmd->add_option("--exec", a->exec,
                  "exec job: command run by /bin/sh -c per record; the payload on stdin; env "
                  "SHOAL_RECORD_ID, SHOAL_QUEUE, SHOAL_ATTEMPT, SHOAL_GEN plus only the variables "
                  "named in [worker] exec_env; exit 0 = done, else failed (retried with backoff, "
                  "dead after [work] max_attempts); killed after [worker] exec_timeout_ms (default "
                  "[worker] exec_command)");
  cmd->add_option("--queue", a->queue,
                  "work-table queue to claim from (default [worker] queue, else exec / [etl] queue)");
  cmd->add_option("--concurrency", a->concurrency,
                  "records run at once by this process (default [worker] concurrency)")
      ->check(CLI::Range(1, 256));
  cmd->footer("SIGTERM/SIGINT or ctl.drain: stop claiming, let running records finish within "
              "[worker] drain_timeout_ms, then stop them and release their claims; exit 0.\n"
              "Exit status: 0 drained, 1 job broken or (--standalone) storage unreachable at "
              "start, 2 bad configuration.");
  cmd->callback([&g, &run, a] {
    run = [&g, a] { return run_worker(g, *a); };
  });
}

} // namespace shoal::cmd
