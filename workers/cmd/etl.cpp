// `shoal etl`: blobs into SQL (workers/etl/, issue 7).
//
//   shoal etl run --once [--queue Q] [--owner W]   claim and load every pending ETL record, then exit
//   shoal etl run [--poll-ms N]                    the same, forever (prefer `shoal worker` fleets)
//   shoal etl enqueue BLOB...                      make blobs pending ETL records (idempotent)
//   shoal etl runs [--status S] [--limit N]        orchestration instances from the runs table
//   shoal etl show ID                              one instance with its step history
//   common: --log-file F (rotating, 10 MiB × 5), --sqlite PATH, --postgres URL, --datasets DIR
//
// Fault drills: SHOAL_ETL_CRASH_AFTER=<step> makes the process _exit(137) right after that step's
// effect and before it is recorded; SHOAL_ETL_CRASH_AT=before_commit|after_commit[:N] makes it
// SIGKILL itself just before the load's COMMIT or just after it (orchestrator.hpp).
// `run` claims [etl] claim_max records at a time and loads the blobs of one dataset together, in
// one SQL transaction; [etl] history picks how much of the run history is written.

#include "workers/cmd/cli.hpp"

#include "storage/blob_client.hpp"
#include "storage/encoding.hpp"
#include "storage/table_client.hpp"
#include "workers/etl/orchestrator.hpp"
#include "workers/claim/work_table.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <thread>
#include <unistd.h>

namespace shoal::cmd {
namespace {

struct etl_args {
  std::string queue;
  std::string owner;
  std::string log_file;
  std::string sqlite;
  std::string postgres;
  std::string datasets;
  bool once = false;
  std::uint32_t poll_ms = 1000;
  std::vector<std::string> ids;
  std::string status;
  std::size_t limit = 100;
};


std::optional<workers::etl::run_log> open_runs(const workers::config& c, const storage::pipeline& p) {
  auto t = storage::table_client::make(p, c.etl.runs_table);
  if (!t) {
    std::fprintf(stderr, "shoal etl: %s\n", t.error().describe().c_str());
    return std::nullopt;
  }
  return workers::etl::run_log(*t);
}

std::optional<workers::work_table> open_work(const workers::config& c, const storage::pipeline& p) {
  auto t = storage::table_client::make(p, c.work.table);
  if (!t) {
    std::fprintf(stderr, "shoal etl: %s\n", t.error().describe().c_str());
    return std::nullopt;
  }
  workers::work_table_options wo;
  wo.work = c.work;
  auto w = workers::work_table::make(*t, storage::blob_client(p), wo);
  if (!w) {
    report_failure("etl", "work table", w.error());
    return std::nullopt;
  }
  return *w;
}

std::string default_owner() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return std::string("etl-") + host + "-" + std::to_string(getpid());
}

int run_run(const workers::config& c, const etl_args& a) {
  auto p = make_pipeline(c, "etl");
  if (!p) return 1;
  auto runs = open_runs(c, *p);
  auto work = open_work(c, *p);
  if (!runs || !work) return 1;
  if (auto r = runs->create_if_missing(); !r) return report_failure("etl", "run", r.error());
  if (auto r = work->create_if_missing(); !r) return report_failure("etl", "run", r.error());
  auto datasets = workers::etl::load_datasets(c.etl.datasets_dir);
  if (!datasets) return report_failure("etl", "datasets", datasets.error());
  // The blobs go through the chain of stage actors (workers/etl/etl_chain.hpp); its load stage
  // reopens the connection with `open` when it is restarted after a failure.
  workers::etl::sink_factory open = [&c]() -> workers::result<std::unique_ptr<workers::etl::sql_sink>> {
    return c.etl.postgres_url.empty()
               ? workers::etl::open_sqlite_sink({.path = c.etl.sqlite_path, .busy_timeout_ms = c.etl.busy_timeout_ms, .synchronous = "NORMAL"})
               : workers::etl::open_postgres_sink(c.etl.postgres_url);
  };
  auto sink = open();
  if (!sink) return report_failure("etl", "sink", sink.error());
  workers::etl::etl_job_options o;
  o.reopen_sink = open;
  o.container = c.etl.container;
  o.max_blob_bytes = c.etl.max_blob_bytes;
  o.owner = a.owner.empty() ? default_owner() : a.owner;
  o.datasets = std::move(*datasets);
  auto history = workers::etl::parse_history_mode(c.etl.history);
  if (!history) return report_failure("etl", "run", history.error());
  o.history = *history;
#if defined(SHOAL_TEST_HOOKS) // fault injection exists in test builds only (workers/cmd/CMakeLists.txt)
  o.crash_after = workers::etl::crash_hook_from_env(); // SHOAL_ETL_CRASH_AT: kill -9 drills
  if (const char* crash = std::getenv("SHOAL_ETL_CRASH_AFTER"); crash && *crash) {
    std::string step = crash;
    o.crash_after = [step](std::string_view s) {
      if (s == step) {
        spdlog::default_logger()->flush();
        std::_Exit(137); // as if killed: no destructor, no record, no lease release
      }
      return false;
    };
  }
#endif
  auto job = workers::etl::etl_job::make(storage::blob_client(*p), *runs, std::move(*sink), std::move(o));
  if (!job) return report_failure("etl", "run", job.error());
  const std::string queue = a.queue.empty() ? c.etl.queue : a.queue;
  std::size_t ok = 0, failed = 0, lost = 0;
  while (true) {
    // Claimed records' leases are renewed while their blobs load (etl_job::drain).
    auto sum = job->drain(*work, queue, c.etl.claim_max);
    if (!sum) return report_failure("etl", "run", sum.error());
    ok += sum->succeeded;
    failed += sum->failed;
    lost += sum->lost;
    if (a.once) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(a.poll_ms));
  }
  spdlog::info("etl run: {} blob(s) loaded, {} failed, {} lost to another worker", ok, failed, lost);
  std::printf("%zu loaded, %zu failed, %zu lost\n", ok, failed, lost);
  return failed == 0 ? 0 : 3;
}

int run_enqueue(const workers::config& c, const etl_args& a) {
  auto p = make_pipeline(c, "etl");
  if (!p) return 1;
  auto work = open_work(c, *p);
  if (!work) return 1;
  if (auto r = work->create_if_missing(); !r) return report_failure("etl", "enqueue", r.error());
  std::vector<workers::new_record> recs;
  for (const auto& id : a.ids) recs.push_back({id, id, {}});
  auto r = work->enqueue(a.queue.empty() ? c.etl.queue : a.queue, recs);
  if (!r) return report_failure("etl", "enqueue", r.error());
  std::printf("%zu enqueued, %zu already present\n", r->inserted, r->already_present);
  return 0;
}

nlohmann::json to_json(const workers::etl::run_instance& i) {
  return {{"id", i.id},           {"blob", i.blob},         {"dataset", i.dataset},
          {"status", i.status},   {"step", i.step},         {"attempts", i.attempts},
          {"gen", i.gen},         {"owner", i.owner},       {"created", cli_time(i.created)},
          {"updated", cli_time(i.updated)}, {"finished", cli_time(i.finished)}, {"error", i.error},
          {"records", i.records}, {"loaded", i.loaded},     {"duplicates", i.duplicates},
          {"quarantined", i.quarantined}, {"ms", i.ms}};
}

int run_runs(const workers::config& c, const etl_args& a, bool json) {
  auto p = make_pipeline(c, "etl");
  if (!p) return 1;
  auto runs = open_runs(c, *p);
  if (!runs) return 1;
  auto list = runs->list(a.status.empty() ? std::nullopt : std::optional<std::string>(a.status), a.limit);
  if (!list) return report_failure("etl", "runs", list.error());
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& i : *list) out.push_back(to_json(i));
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%-10s %-9s %4s %8s %6s %6s %9s  %-20s  %s\n", "STATUS", "STEP", "ATT", "LOADED", "DUPS", "QUAR",
              "MS", "UPDATED", "ID / ERROR");
  for (const auto& i : *list) {
    std::printf("%-10s %-9s %4d %8lld %6lld %6lld %9.1f  %-20s  %s\n", i.status.c_str(),
                i.step.empty() ? "-" : i.step.c_str(), i.attempts, static_cast<long long>(i.loaded),
                static_cast<long long>(i.duplicates), static_cast<long long>(i.quarantined), i.ms,
                cli_time(i.updated).c_str(), i.id.c_str());
    if (!i.error.empty()) std::printf("%58s  error: %s\n", "", i.error.c_str());
  }
  return 0;
}

int run_show(const workers::config& c, const etl_args& a, bool json) {
  auto p = make_pipeline(c, "etl");
  if (!p) return 1;
  auto runs = open_runs(c, *p);
  if (!runs) return 1;
  auto r = runs->show(a.ids.at(0));
  if (!r) return report_failure("etl", "show", r.error());
  const auto& [i, steps] = *r;
  if (json) {
    nlohmann::json out = to_json(i);
    out["history"] = nlohmann::json::array();
    for (const auto& s : steps)
      out["history"].push_back({{"seq", s.seq}, {"step", s.step}, {"attempt", s.attempt}, {"gen", s.gen},
                                {"owner", s.owner}, {"started", cli_time(s.started)}, {"finished", cli_time(s.finished)},
                                {"ms", s.ms}, {"records_in", s.records_in}, {"records_out", s.records_out},
                                {"quarantined", s.quarantined}, {"detail", s.detail}});
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("id:        %s\nblob:      %s\ndataset:   %s\nstatus:    %s (last step %s)\nattempts:  %d (gen %lld, owner %s)\n"
              "created:   %s\nupdated:   %s\nfinished:  %s\nrecords:   %lld (loaded %lld, duplicates %lld, quarantined %lld)\n",
              i.id.c_str(), i.blob.c_str(), i.dataset.c_str(), i.status.c_str(), i.step.empty() ? "-" : i.step.c_str(),
              i.attempts, static_cast<long long>(i.gen), i.owner.c_str(), cli_time(i.created).c_str(), cli_time(i.updated).c_str(),
              cli_time(i.finished).c_str(), static_cast<long long>(i.records), static_cast<long long>(i.loaded),
              static_cast<long long>(i.duplicates), static_cast<long long>(i.quarantined));
  if (!i.error.empty()) std::printf("error:     %s\n", i.error.c_str());
  std::printf("\n%-3s %-9s %4s %5s %8s %8s %6s %9s  %s\n", "#", "STEP", "ATT", "GEN", "IN", "OUT", "QUAR", "MS", "FINISHED / DETAIL");
  for (const auto& s : steps)
    std::printf("%-3d %-9s %4d %5lld %8lld %8lld %6lld %9.1f  %s %s\n", s.seq, s.step.c_str(), s.attempt,
                static_cast<long long>(s.gen), static_cast<long long>(s.records_in),
                static_cast<long long>(s.records_out), static_cast<long long>(s.quarantined), s.ms,
                cli_time(s.finished).c_str(), s.detail.c_str());
  return 0;
}

} // namespace

void add_etl_command(CLI::App& app, global_options& g, command_fn& run) {
  auto a = std::make_shared<etl_args>();
  auto* cmd = app.add_subcommand("etl", "ETL: load blobs into SQL through durable steps, exactly once");
  cmd->require_subcommand(1);
  cmd->add_option("--log-file", a->log_file, "also log to this rotating file (10 MiB x 5)");
  cmd->add_option("--sqlite", a->sqlite, "SQLite database (default: [etl] sqlite_path)");
  cmd->add_option("--postgres", a->postgres, "PostgreSQL URL (default: [etl] postgres_url)");
  cmd->add_option("--datasets", a->datasets, "folder of dataset TOML files (default: [etl] datasets_dir)");
  cmd->add_option("--queue,-q", a->queue, "work queue of ETL records (default: [etl] queue)");

  auto* r = cmd->add_subcommand("run", "Claim pending ETL records and load their blobs");
  r->add_flag("--once", a->once, "process what is pending, then exit (for the systemd timer)");
  r->add_option("--owner", a->owner, "worker id recorded in history and ledger (default etl-<host>-<pid>)");
  r->add_option("--poll-ms", a->poll_ms, "without --once: pause between rounds")->capture_default_str();
  auto* e = cmd->add_subcommand("enqueue", "Make blobs pending ETL records (payload = blob name)");
  e->add_option("blobs", a->ids, "blob names")->required();
  auto* l = cmd->add_subcommand("runs", "List orchestration instances");
  l->add_option("--status", a->status, "running|completed|failed");
  l->add_option("--limit", a->limit, "at most this many")->capture_default_str();
  auto* s = cmd->add_subcommand("show", "One instance and its step history");
  s->add_option("id", a->ids, "record id (the blob name)")->required()->expected(1);

  // `etl run` is a daemon (systemd timer, fleets): it never falls back to the emulator.
  auto bind = [&g, &run, a](CLI::App* sub, int (*fn)(const workers::config&, const etl_args&, bool),
                            storage_need need = storage_need::dev_default) {
    sub->callback([&g, &run, a, fn, need] {
      run = [&g, a, fn, need] {
        auto c = load(g, need, "etl");
        if (!c) return 2;
        if (!a->log_file.empty()) c->log.file = a->log_file;
        if (!a->sqlite.empty()) c->etl.sqlite_path = a->sqlite;
        if (workers::postgres_url_has_password(a->postgres)) {
          std::fprintf(stderr, "shoal etl: --postgres holds a password, which every local user can read "
                               "in the process list; give the URL without it and put the password in "
                               "~/.pgpass, the file PGPASSFILE names or the URL's passfile= parameter\n");
          return 2;
        }
        if (!a->postgres.empty()) c->etl.postgres_url = a->postgres;
        if (!a->datasets.empty()) c->etl.datasets_dir = a->datasets;
        init_logging(*c);
        return fn(*c, *a, g.json);
      };
    });
  };
  bind(r, [](const workers::config& c, const etl_args& x, bool) { return run_run(c, x); },
       storage_need::explicit_only);
  bind(e, [](const workers::config& c, const etl_args& x, bool) { return run_enqueue(c, x); });
  bind(l, run_runs);
  bind(s, run_show);
}

} // namespace shoal::cmd
