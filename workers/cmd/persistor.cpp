// `shoal persistor`: stores every message it is given as date-partitioned JSON blobs
// (workers/etl/BLOBS.md), acknowledging a message only after the blob holding it is committed.
//
//   shoal persistor [--mode push|pull] [--endpoint tcp://0.0.0.0:5590] [--queue q --pullers 4]
//                   [--name p1] [--host h] [--container shoal] [--format persistor-v1|ndjson]
//                   [--blob-type block|append] [--batch-max-records n] [--batch-max-bytes n]
//                   [--batch-max-delay-ms n] [--event-time-field f] [--partition day|hour|month]
//                   [--no-register]
//                   [--catalog-before-ack | --no-catalog-before-ack]
//
// Every flag overrides the [persistor] key of the same name. SIGTERM / SIGINT: stop reading,
// flush open batches, send the last acks, exit 0 (1 when the flush timed out).
//
// Crash injection (test builds only: compiled in when SHOAL_TEST_HOOKS is defined, which the
// build does with SHOAL_BUILD_TESTS=ON): SHOAL_PERSISTOR_CRASH_AT=<point>:<n>, point one of
// writing | blob_written | registered | acked, kills the process with SIGKILL the n-th time the
// engine reaches that point (acked: 300 ms later, so the source has sent the acks).

#include "workers/cmd/cli.hpp"

#include "storage/connection_string.hpp"
#include "storage/table_client.hpp"
#include "workers/persistor/sources.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <cstdio>
#include <memory>
#include <pthread.h>
#include <thread>
#include <unistd.h>

namespace shoal::cmd {
namespace {

struct persistor_args {
  std::optional<std::string> mode, endpoint, queue, name, host, container, format, blob_type,
      event_time_field, committed_endpoint, poison_queue, partition;
  std::optional<std::uint32_t> pullers, max_dequeue, batch_max_records, batch_max_bytes,
      batch_max_delay_ms, writers, pull_idle_max_ms;
  bool no_register = false;
  bool catalog_before_ack = false;    // --catalog-before-ack: force on
  bool no_catalog_before_ack = false; // --no-catalog-before-ack: force off
  std::uint32_t flush_timeout_ms = 60'000;
};

// SHOAL_PERSISTOR_CRASH_AT → the engine's fault hook; empty when unset or malformed.
std::function<void(workers::persistor::fault_point, std::uint64_t)> crash_hook_from_env() {
  using workers::persistor::fault_point;
  const char* v = std::getenv("SHOAL_PERSISTOR_CRASH_AT");
  if (v == nullptr)
    return {};
#if !defined(SHOAL_TEST_HOOKS)
  spdlog::warn("persistor: SHOAL_PERSISTOR_CRASH_AT is ignored: fault injection exists only in test builds");
  return {};
#endif
  const std::string text(v);
  const auto colon = text.find(':');
  if (colon == std::string::npos)
    return {};
  const std::string point = text.substr(0, colon);
  const std::uint64_t n = std::strtoull(text.c_str() + colon + 1, nullptr, 10);
  fault_point at{};
  if (point == "writing")
    at = fault_point::writing;
  else if (point == "blob_written")
    at = fault_point::blob_written;
  else if (point == "registered")
    at = fault_point::registered;
  else if (point == "acked")
    at = fault_point::acked;
  else
    return {};
  return [at, n](fault_point p, std::uint64_t count) {
    if (p != at || count != n)
      return;
    spdlog::warn("persistor: SHOAL_PERSISTOR_CRASH_AT reached; killing myself");
    spdlog::default_logger()->flush();
    if (p == fault_point::acked)
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::kill(::getpid(), SIGKILL);
  };
}

template <class T> void apply(const std::optional<T>& flag, T& field) {
  if (flag)
    field = *flag;
}

int run_persistor(const global_options& g, const persistor_args& a) {
  auto cfg = load(g, storage_need::explicit_only, "persistor");
  if (!cfg)
    return 2;
  auto& p = cfg->persistor;
  apply(a.mode, p.mode);
  apply(a.endpoint, p.endpoint);
  apply(a.queue, p.queue);
  apply(a.name, p.name);
  apply(a.host, p.host);
  apply(a.container, p.container);
  apply(a.format, p.format);
  apply(a.blob_type, p.blob_type);
  apply(a.event_time_field, p.event_time_field);
  apply(a.partition, p.partition);
  apply(a.committed_endpoint, p.committed_endpoint);
  apply(a.poison_queue, p.poison_queue);
  apply(a.pullers, p.pullers);
  apply(a.max_dequeue, p.max_dequeue);
  apply(a.pull_idle_max_ms, p.pull_idle_max_ms);
  apply(a.batch_max_records, p.batch_max_records);
  apply(a.batch_max_bytes, p.batch_max_bytes);
  apply(a.batch_max_delay_ms, p.batch_max_delay_ms);
  apply(a.writers, p.writers);
  if (a.no_register)
    p.register_etl = p.register_catalog = 0;
  if (p.max_inflight_bytes < p.batch_max_bytes)
    p.max_inflight_bytes = p.batch_max_bytes * 4;
  if (auto v = workers::validate(*cfg); !v) {
    std::fprintf(stderr, "shoal persistor: %s\n", v.error().describe().c_str());
    return 2;
  }
  init_logging(*cfg);
  spdlog::info("persistor: storage {}", storage_summary(*cfg));
  // A producer link that crosses hosts is CURVE or nothing: refuse before touching storage.
  if (p.mode == "push")
    if (auto k = workers::persistor::push_server_keys(
            p.endpoint, {p.curve_secret_key, p.curve_public_key, p.curve_allow_dir});
        !k) {
      std::fprintf(stderr, "shoal persistor: %s\n", k.error().describe().c_str());
      return 2;
    }

  // Signals go to one waiting thread (blocked everywhere else, inherited by every thread).
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::atomic<bool> stop{false};
  std::thread sig_thread([&sigs, &stop] {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (sig != SIGUSR2)
      spdlog::info("persistor: signal {} received; flushing and exiting", sig);
    stop.store(true);
  });
  auto wake_sig_thread = [&] {
    if (!stop.load()) {
      stop.store(true);
      pthread_kill(sig_thread.native_handle(), SIGTERM);
    }
    sig_thread.join();
  };

  auto fail_with = [&](const std::string& what) {
    std::fprintf(stderr, "shoal persistor: %s\n", what.c_str());
    wake_sig_thread();
    return 1;
  };

  storage::pipeline_options po;
  po.http.request_timeout = std::chrono::milliseconds(cfg->storage.request_timeout_ms);
  po.http.connect_timeout = std::chrono::milliseconds(cfg->storage.connect_timeout_ms);
  po.http.ca_file = cfg->storage.ca_file;
  po.retry.max_attempts = static_cast<int>(cfg->storage.max_attempts);
  auto account = storage::parse_connection_string(cfg->storage.connection_string);
  if (!account)
    return fail_with("storage: " + account.error().describe());
  auto pipe = storage::pipeline::make(*account, po);
  if (!pipe)
    return fail_with("storage: " + pipe.error().describe());

  workers::persistor::engine_options eo;
  eo.container = p.container;
  eo.format = *workers::persistor::parse_format(p.format);
  eo.append_blobs = p.blob_type == "append";
  eo.append_max_blocks = p.append_max_blocks;
  eo.append_max_bytes = p.append_max_bytes;
  eo.limits = {.max_records = p.batch_max_records, .max_bytes = p.batch_max_bytes,
               .max_delay_ms = p.batch_max_delay_ms, .left_behind_records = p.batch_left_behind_records};
  eo.partition = *workers::persistor::parse_partition_depth(p.partition); // checked by validate
  eo.host = p.host.empty() ? workers::persistor::local_host_name() : p.host;
  eo.name = p.name;
  eo.writers = p.writers;
  eo.max_inflight_bytes = p.max_inflight_bytes;
  eo.etl_queue = cfg->etl.queue;
  eo.fault = crash_hook_from_env();
  eo.catalog_before_ack = p.catalog_before_ack != 0;
  if (a.catalog_before_ack)
    eo.catalog_before_ack = true;
  if (a.no_catalog_before_ack)
    eo.catalog_before_ack = false;

  std::optional<workers::work_table> etl;
  if (p.register_etl) {
    auto t = storage::table_client::make(*pipe, cfg->work.table);
    if (!t)
      return fail_with(t.error().describe());
    workers::work_table_options wo;
    wo.work = cfg->work;
    auto w = workers::work_table::make(*t, storage::blob_client(*pipe), wo);
    if (!w)
      return fail_with(w.error().describe());
    if (auto c = w->create_if_missing(); !c)
      return fail_with("work table: " + c.error().describe());
    // The server clock now, not in the first registration: that one holds the first acks.
    if (auto c = w->sync_clock(); !c)
      return fail_with("work table: " + c.error().describe());
    etl = std::move(*w);
  }
  std::optional<storage::blob_catalog> catalog;
  if (p.register_catalog) {
    auto svc = storage::table_service_client::from_connection_string(cfg->storage.connection_string, po);
    if (!svc)
      return fail_with("storage: " + svc.error().describe());
    storage::catalog_options co;
    co.stall_timeout = std::chrono::milliseconds(cfg->catalog.stall_timeout_ms);
    auto bc = storage::blob_catalog::open(*svc, cfg->catalog.table, co);
    if (!bc)
      return fail_with("catalog: " + bc.error().describe());
    catalog = std::move(*bc);
  }

  workers::persistor::source_stats stats;
  workers::result<void> r;
  const auto flush_timeout = std::chrono::milliseconds(a.flush_timeout_ms);
  if (p.mode == "push") {
    workers::persistor::push_options pu;
    pu.endpoint = p.endpoint;
    pu.committed_endpoint = p.committed_endpoint;
    pu.event_time_field = p.event_time_field;
    pu.address = "persistor@" + eo.name + "@" + eo.host;
    pu.curve = {p.curve_secret_key, p.curve_public_key, p.curve_allow_dir};
    r = workers::persistor::run_push(eo, storage::blob_client(*pipe), std::move(etl), std::move(catalog),
                                     pu, stop, stats, flush_timeout, [](const std::string& ep) {
                                       spdlog::info("persistor: listening on {}", ep);
                                       std::fprintf(stdout, "listening %s\n", ep.c_str());
                                       std::fflush(stdout);
                                     });
  } else {
    workers::persistor::pull_options pl;
    pl.queue = p.queue;
    pl.poison_queue = p.poison_queue;
    pl.default_dest = p.queue_dest;
    pl.pullers = p.pullers;
    pl.max_dequeue = p.max_dequeue;
    pl.visibility_timeout = std::chrono::seconds((p.visibility_timeout_ms + 999) / 1000);
    pl.event_time_field = p.event_time_field;
    pl.idle_poll_max = std::chrono::milliseconds(p.pull_idle_max_ms);
    pl.idle_poll_min = std::min(pl.idle_poll_min, pl.idle_poll_max);
    std::fprintf(stdout, "pulling %s\n", p.queue.c_str());
    std::fflush(stdout);
    r = workers::persistor::run_pull(eo, storage::blob_client(*pipe), storage::queue_client(*pipe),
                                     std::move(etl), std::move(catalog), pl, stop, stats, flush_timeout);
  }
  wake_sig_thread();
  spdlog::info("persistor: received {} (duplicates {}), acked {}, rejected {}, poisoned {}, paused {} ms",
               stats.received.load(), stats.duplicates.load(), stats.acked.load(),
               stats.rejected.load(), stats.poisoned.load(), stats.paused_ms.load());
  if (!r) {
    std::fprintf(stderr, "shoal persistor: %s\n", r.error().describe().c_str());
    return 1;
  }
  return 0;
}

} // namespace

void add_persistor_command(CLI::App& app, global_options& g, command_fn& run) {
  auto a = std::make_shared<persistor_args>();
  auto* cmd = app.add_subcommand("persistor", "Store messages as date-partitioned JSON blobs");
  cmd->add_option("--mode", a->mode, "push (ZeroMQ) | pull (Azure Storage Queue)");
  cmd->add_option("--endpoint", a->endpoint, "push: endpoint to bind");
  cmd->add_option("--committed-endpoint", a->committed_endpoint, "PUB endpoint for persist.committed");
  cmd->add_option("--queue", a->queue, "pull: queue to read");
  cmd->add_option("--poison-queue", a->poison_queue, "pull: queue for poison messages");
  cmd->add_option("--pullers", a->pullers, "pull: parallel pullers");
  cmd->add_option("--max-dequeue", a->max_dequeue, "pull: dequeues before a message is poison");
  cmd->add_option("--pull-idle-max-ms", a->pull_idle_max_ms,
                  "pull: longest wait between reads of an empty queue (randomized exponential back-off from 50 ms)");
  cmd->add_option("--name", a->name, "persistor name (blob names)");
  cmd->add_option("--host", a->host, "host part of blob names (default: hostname)");
  cmd->add_option("--container", a->container, "blob container");
  cmd->add_option("--format", a->format, "persistor-v1 | ndjson");
  cmd->add_option("--blob-type", a->blob_type, "block | append");
  cmd->add_option("--batch-max-records", a->batch_max_records, "records per blob");
  cmd->add_option("--batch-max-bytes", a->batch_max_bytes, "bytes per blob");
  cmd->add_option("--batch-max-delay-ms", a->batch_max_delay_ms, "ms before an open batch is written");
  cmd->add_option("--event-time-field", a->event_time_field, "payload field with the event time");
  cmd->add_option("--partition", a->partition, "date folders of blob names: day | hour | month");
  cmd->add_option("--writers", a->writers, "parallel blob writers");
  cmd->add_option("--flush-timeout-ms", a->flush_timeout_ms, "on SIGTERM, wait this long for the flush")
      ->capture_default_str();
  cmd->add_flag("--catalog-before-ack", a->catalog_before_ack,
                "ack a blob's records only after its catalog entry (the default, [persistor] "
                "catalog_before_ack = 1): a crash never leaves an acked record uncatalogued");
  cmd->add_flag("--no-catalog-before-ack", a->no_catalog_before_ack,
                "ack after the ETL record and write the catalog entry after the ack");
  cmd->add_flag("--no-register", a->no_register, "do not register blobs (ETL queue, catalog)");
  cmd->callback([&g, &run, a] { run = [&g, a] { return run_persistor(g, *a); }; });
}

} // namespace shoal::cmd
