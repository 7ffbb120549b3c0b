#include "workers/cmd/etl_fleet_job.hpp"

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "workers/etl/orchestrator.hpp"

#include <spdlog/spdlog.h>

#include <fmt/format.h>
#include <mutex>
#include <set>
#include <string>
#include <unistd.h>

namespace shoal::workers::etl {
namespace {

class etl_fleet_job final : public fleet::job {
public:
  etl_fleet_job(etl_job job, std::size_t max_batch) : job_(std::move(job)), max_batch_(max_batch) {}

  std::string_view name() const noexcept override { return "etl"; }

  result<fleet::job_result> run(claimed_record& record, const fleet::job_context& ctx) override {
    run_control ctl;
    ctl.stop = [&ctx] { return ctx.stop.stop_requested(); };
    if (ctx.lease_lost) ctl.lease_lost = ctx.lease_lost;
    return verdict(job_.run(record, ctl));
  }

  // Several claimed blobs at once: the ones of one dataset load in one SQL transaction, and
  // each is reported done only after that commit. A record whose lease is lost is left out of
  // the commit (its own run_control).
  std::size_t max_batch() const noexcept override { return max_batch_; }

  result<std::vector<fleet::job_result>> run_batch(std::span<claimed_record* const> records,
                                                   const fleet::job_context& ctx) override {
    std::vector<run_control> ctls(records.size());
    for (std::size_t i = 0; i < records.size(); ++i) {
      ctls[i].stop = [&ctx] { return ctx.stop.stop_requested(); };
      if (ctx.record_lost) ctls[i].lease_lost = [&ctx, i] { return ctx.record_lost(i); };
      else if (ctx.lease_lost) ctls[i].lease_lost = ctx.lease_lost;
    }
    auto outs = job_.run_batch(records, ctls);
    std::vector<fleet::job_result> results;
    results.reserve(outs.size());
    for (auto& o : outs) {
      auto v = verdict(std::move(o));
      if (!v) return std::unexpected(v.error());
      results.push_back(std::move(*v));
    }
    return results;
  }

private:
  result<fleet::job_result> verdict(result<pipeline_outcome> out) {
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

  etl_job job_;
  std::size_t max_batch_;
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
  // Once per process, table endpoint and table: a worker makes one job per lane, and each
  // creation is a request. A table is remembered only once its creation succeeded, so a failed
  // attempt is retried by the next job made; the lock is held across the request so lanes
  // starting together do not each send it.
  {
    static std::mutex m;
    static std::set<std::string> created;
    const std::string key = account->table_endpoint + "/" + cfg.etl.runs_table;
    std::lock_guard lk(m);
    if (!created.contains(key)) {
      if (auto r = runs.create_if_missing(); !r) return std::unexpected(r.error());
      created.insert(key);
    }
  }
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
  auto history = parse_history_mode(cfg.etl.history);
  if (!history) return std::unexpected(history.error());
  o.history = *history;
  o.crash_after = crash_hook_from_env();
  o.container = cfg.etl.container;
  o.max_blob_bytes = cfg.etl.max_blob_bytes;
  o.owner = owner_of(cfg);
  o.datasets = std::move(*datasets);
  auto job = etl_job::make(storage::blob_client(*pipe), std::move(runs), std::move(*sink), std::move(o));
  if (!job) return std::unexpected(job.error());
  return std::unique_ptr<fleet::job>(std::make_unique<etl_fleet_job>(std::move(*job), cfg.etl.claim_max));
}

} // namespace shoal::workers::etl
