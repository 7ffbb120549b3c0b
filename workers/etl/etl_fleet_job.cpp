#include "workers/etl/etl_fleet_job.hpp"

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "workers/etl/orchestrator.hpp"

#include <spdlog/spdlog.h>

#include <fmt/format.h>
#include <string>
#include <unistd.h>

namespace shoal::workers::etl {
namespace {

class etl_fleet_job final : public fleet::job {
public:
  explicit etl_fleet_job(etl_job job) : job_(std::move(job)) {}

  std::string_view name() const noexcept override { return "etl"; }

  result<fleet::job_result> run(claimed_record& record, const fleet::job_context& ctx) override {
    run_control ctl;
    ctl.stop = [&ctx] { return ctx.stop.stop_requested(); };
    if (ctx.lease_lost) ctl.lease_lost = ctx.lease_lost;
    auto out = job_.run(record, ctl);
    fleet::job_result r;
    if (out) {
      const auto& l = out->load;
      double ms = 0;
      for (const auto& s : out->steps) ms += s.ms;
      if (out->resumed_after_load) r.detail = fmt::format("already loaded (history) ({})", out->dataset);
      else if (l.already_loaded) r.detail = fmt::format("already loaded (ledger) in {:.1f} ms ({})", ms, out->dataset);
      else
        r.detail = fmt::format("{} rows, {} duplicates, {} quarantined in {:.1f} ms ({})", l.inserted, l.duplicates,
                               l.quarantined, ms, out->dataset);
      return r;
    }
    const error& e = out.error();
    switch (e.code) {
    case errc::cancelled:
    case errc::lease_lost:
      r.verdict = fleet::job_verdict::release;
      r.detail = e.describe();
      return r;
    case errc::unavailable:
      // The SQL database cannot take the load now (its disk is full, its server is down): not
      // the record's fault, so no attempt of it is spent. The job counts as broken: the worker
      // gives the record back uncounted and exits, and its supervisor restarts it with its
      // restart policy's backoff until the database is back.
      return std::unexpected(e);
    case errc::io:
      // The chain gave up (its stages kept failing): the job itself is broken; the worker exits
      // and its supervisor restarts it. Otherwise the failing stage actor was restarted (the
      // load stage with a new SQL connection) and the record is retried like any failed attempt.
      if (job_.broken()) return std::unexpected(e);
      r.verdict = fleet::job_verdict::failed;
      r.error = e.describe();
      r.detail = r.error;
      return r;
    default: // parse (with position), not_found, storage, invalid_argument, timeout
      r.verdict = fleet::job_verdict::failed;
      r.error = e.describe();
      r.detail = r.error;
      return r;
    }
  }

private:
  etl_job job_;
};

std::string owner_of(const config& cfg) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::string h = cfg.fleet.host.empty() ? host : cfg.fleet.host;
  return "worker-" + h + "-" + std::to_string(getpid());
}

} // namespace

result<std::unique_ptr<fleet::job>> make_etl_fleet_job(const config& cfg) {
  auto account = storage::parse_connection_string(cfg.storage.connection_string);
  if (!account) return std::unexpected(error::from_storage(account.error(), "parsing the connection string"));
  storage::pipeline_options po;
  po.http.request_timeout = std::chrono::milliseconds(cfg.storage.request_timeout_ms);
  po.http.connect_timeout = std::chrono::milliseconds(cfg.storage.connect_timeout_ms);
  po.http.ca_file = cfg.storage.ca_file;
  po.retry.max_attempts = static_cast<int>(cfg.storage.max_attempts);
  auto pipe = storage::pipeline::make(*account, po);
  if (!pipe) return std::unexpected(error::from_storage(pipe.error(), "making the storage pipeline"));
  auto table = storage::table_client::make(*pipe, cfg.etl.runs_table);
  if (!table) return std::unexpected(error::from_storage(table.error(), "opening the runs table"));
  run_log runs(*table);
  if (auto r = runs.create_if_missing(); !r) return std::unexpected(r.error());
  auto datasets = load_datasets(cfg.etl.datasets_dir);
  if (!datasets) return std::unexpected(datasets.error());
  // The first connection is opened here (a bad path or URL is a set-up error); the load stage
  // reopens it through the same function when it is restarted.
  sink_factory open = [path = cfg.etl.sqlite_path, busy = cfg.etl.busy_timeout_ms, url = cfg.etl.postgres_url] {
    return url.empty() ? open_sqlite_sink({.path = path, .busy_timeout_ms = busy, .synchronous = "NORMAL"})
                       : open_postgres_sink(url);
  };
  auto sink = open();
  if (!sink) return std::unexpected(sink.error());
  etl_job_options o;
  o.reopen_sink = open;
  o.container = cfg.etl.container;
  o.owner = owner_of(cfg);
  o.datasets = std::move(*datasets);
  auto job = etl_job::make(storage::blob_client(*pipe), std::move(runs), std::move(*sink), std::move(o));
  if (!job) return std::unexpected(job.error());
  return std::unique_ptr<fleet::job>(std::make_unique<etl_fleet_job>(std::move(*job)));
}

} // namespace shoal::workers::etl
