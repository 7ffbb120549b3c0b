#include "workers/etl/orchestrator.hpp"

#include "workers/claimer.hpp"
#include "workers/key_escape.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <iterator>
#include <span>
#include <thread>

namespace shoal::workers::etl {
namespace {

using clock = std::chrono::steady_clock;
using storage::table_entity;
using storage::table_time;

double ms_since(clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
}

// -- entity mapping ---------------------------------------------------------------------------------

std::string str_of(const table_entity& e, std::string_view k) {
  auto* v = e.get<std::string>(k);
  return v ? *v : std::string();
}
std::int64_t int_of(const table_entity& e, std::string_view k) {
  if (auto* v = e.get<std::int64_t>(k)) return *v;
  if (auto* v = e.get<std::int32_t>(k)) return *v;
  return 0;
}
double dbl_of(const table_entity& e, std::string_view k) {
  if (auto* v = e.get<double>(k)) return *v;
  return static_cast<double>(int_of(e, k));
}
std::chrono::system_clock::time_point time_of(const table_entity& e, std::string_view k) {
  if (auto* v = e.get<table_time>(k)) return std::chrono::time_point_cast<std::chrono::system_clock::duration>(*v);
  return {};
}

run_instance instance_from(const table_entity& e) {
  run_instance i;
  i.id = unescape_key(e.partition_key).value_or(e.partition_key);
  i.blob = str_of(e, "blob");
  i.dataset = str_of(e, "dataset");
  i.status = str_of(e, "status");
  i.step = str_of(e, "step");
  i.attempts = static_cast<std::int32_t>(int_of(e, "attempts"));
  i.gen = int_of(e, "gen");
  i.owner = str_of(e, "owner");
  i.created = time_of(e, "created");
  i.updated = time_of(e, "updated");
  i.finished = time_of(e, "finished");
  i.error = str_of(e, "error");
  i.records = int_of(e, "records");
  i.loaded = int_of(e, "loaded");
  i.duplicates = int_of(e, "duplicates");
  i.quarantined = int_of(e, "quarantined");
  i.ms = dbl_of(e, "ms");
  return i;
}

run_step step_from(const table_entity& e) {
  run_step s;
  s.seq = static_cast<int>(int_of(e, "seq"));
  s.step = str_of(e, "step");
  s.attempt = static_cast<std::int32_t>(int_of(e, "attempt"));
  s.gen = int_of(e, "gen");
  s.owner = str_of(e, "owner");
  s.started = time_of(e, "started");
  s.finished = time_of(e, "finished");
  s.ms = dbl_of(e, "ms");
  s.records_in = int_of(e, "records_in");
  s.records_out = int_of(e, "records_out");
  s.quarantined = int_of(e, "quarantined");
  s.detail = str_of(e, "detail");
  return s;
}

table_time tt(std::chrono::system_clock::time_point t) { return storage::to_table_time(t); }

} // namespace

// -- run_pipeline ---------------------------------------------------------------------------------

result<pipeline_outcome> run_pipeline(const dataset& d, std::string_view blob_name, std::string_view body,
                                      sql_sink& sink, std::string_view owner) {
  pipeline_outcome out;
  out.blob = std::string(blob_name);
  out.dataset = d.name;
  blob_records recs;
  auto ex = extract_step(body, recs);
  if (!ex) return std::unexpected(ex.error());
  out.steps.push_back(std::move(*ex));
  out.steps.push_back(validate_step(d, recs));
  out.steps.push_back(transform_step(d, blob_name, recs));
  if (auto r = sink.prepare(d.ddl); !r) return std::unexpected(r.error());
  auto t0 = clock::now();
  load_batch b = make_load_batch(d, blob_name, recs, owner);
  auto o = sink.load(b);
  if (!o) return std::unexpected(o.error());
  out.load = *o;
  out.steps.push_back(load_step_stats(b, *o, ms_since(t0)));
  return out;
}

// -- run_log --------------------------------------------------------------------------------------

result<void> run_log::create_if_missing() const {
  auto r = table_.create_table_if_not_exists();
  if (!r) return std::unexpected(error::from_storage(r.error(), "creating the runs table"));
  return {};
}

result<std::pair<run_instance, std::vector<run_step>>> run_log::show(std::string_view id) const {
  auto pk = escape_key(id);
  if (!pk) return std::unexpected(pk.error());
  storage::table_query q;
  q.filter = storage::table_filter::partition(*pk);
  auto rows = table_.query_all(q);
  if (!rows) return std::unexpected(error::from_storage(rows.error(), "reading the run history"));
  std::optional<run_instance> inst;
  std::vector<run_step> steps;
  for (const auto& e : *rows) {
    if (e.row_key == "instance") inst = instance_from(e);
    else if (e.row_key.starts_with("step-")) steps.push_back(step_from(e));
  }
  if (!inst) return fail(errc::not_found, "no ETL run for " + std::string(id));
  std::sort(steps.begin(), steps.end(), [](const run_step& a, const run_step& b) { return a.seq < b.seq; });
  return std::pair{std::move(*inst), std::move(steps)};
}

result<std::vector<run_instance>> run_log::list(std::optional<std::string> status, std::size_t max) const {
  storage::table_query q;
  q.filter = storage::table_filter::eq("RowKey", std::string("instance"));
  if (status) q.filter = q.filter && storage::table_filter::eq("status", *status);
  q.max_entities = max;
  auto rows = table_.query_all(q);
  if (!rows) return std::unexpected(error::from_storage(rows.error(), "listing ETL runs"));
  std::vector<run_instance> out;
  for (const auto& e : *rows) out.push_back(instance_from(e));
  return out;
}

result<void> run_log::put_instance(const run_instance& i) const {
  auto pk = escape_key(i.id);
  if (!pk) return std::unexpected(pk.error());
  table_entity e;
  e.partition_key = *pk;
  e.row_key = "instance";
  e.set("blob", i.blob).set("dataset", i.dataset).set("status", i.status).set("step", i.step);
  e.set("attempts", i.attempts).set("gen", i.gen).set("owner", i.owner).set("error", i.error.substr(0, 8000));
  e.set("created", tt(i.created)).set("updated", tt(i.updated));
  if (i.finished.time_since_epoch().count() > 0) e.set("finished", tt(i.finished));
  e.set("records", i.records).set("loaded", i.loaded).set("duplicates", i.duplicates);
  e.set("quarantined", i.quarantined).set("ms", i.ms);
  auto r = table_.insert_or_merge(e);
  if (!r) return std::unexpected(error::from_storage(r.error(), "writing the run instance"));
  return {};
}

result<void> run_log::record_step(std::string_view id, const run_step& s) const {
  auto pk = escape_key(id);
  if (!pk) return std::unexpected(pk.error());
  table_entity e;
  e.partition_key = *pk;
  e.row_key = "step-" + std::to_string(s.seq) + "-" + s.step;
  e.set("seq", std::int32_t{s.seq}).set("step", s.step).set("attempt", s.attempt).set("gen", s.gen);
  e.set("owner", s.owner).set("started", tt(s.started)).set("finished", tt(s.finished)).set("ms", s.ms);
  e.set("records_in", s.records_in).set("records_out", s.records_out).set("quarantined", s.quarantined);
  e.set("detail", s.detail);
  auto r = table_.insert(e);
  if (!r && r.error().code != storage::errc::conflict)
    return std::unexpected(error::from_storage(r.error(), "recording step " + s.step));
  return {};
}

// -- etl_job --------------------------------------------------------------------------------------

result<etl_job> etl_job::make(storage::blob_client blobs, run_log runs, std::unique_ptr<sql_sink> sink,
                              etl_job_options opts) {
  if (!sink) return fail(errc::invalid_argument, "etl_job needs a SQL sink");
  etl_chain_options co;
  co.name = "etl";
  co.container = opts.container;
  co.max_blob_bytes = opts.max_blob_bytes;
  co.blobs = std::move(blobs);
  co.open_sink = opts.reopen_sink;
  co.max_restarts = opts.max_restarts;
  co.restart_period = opts.restart_period;
  auto chain = etl_chain::start(std::move(co), std::move(sink));
  if (!chain) return std::unexpected(chain.error());
  return etl_job(std::move(runs), std::move(*chain), std::move(opts));
}

result<pipeline_outcome> etl_job::run(const claimed_record& record, const run_control& ctl) {
  // The claim's owner string is the truth about who works on the record (history, ledger).
  if (!record.owner.empty()) opts_.owner = record.owner;
  const std::string& blob = record.payload.empty() ? record.id : record.payload;
  return run_blob(record.id, blob, record.attempts, record.gen, ctl);
}

result<pipeline_outcome> etl_job::run_blob(std::string_view record_id, std::string_view blob_name,
                                           std::int32_t attempt, std::int64_t gen, const run_control& ctl) {
  const auto now = std::chrono::system_clock::now();
  // Load the history: which steps finished in earlier runs (of any worker).
  run_instance inst;
  std::set<std::string> done;
  if (auto prior = runs_.show(record_id)) {
    inst = std::move(prior->first);
    for (const auto& s : prior->second) done.insert(s.step);
  } else if (prior.error().code != errc::not_found) {
    return std::unexpected(prior.error());
  } else {
    inst.id = std::string(record_id);
    inst.created = now;
  }
  inst.blob = std::string(blob_name);
  inst.dataset = dataset_for(opts_.datasets, blob_name).name;
  inst.attempts = std::max(inst.attempts + 1, attempt);
  inst.gen = gen;
  inst.owner = opts_.owner;
  inst.updated = now;
  inst.error.clear();
  if (inst.status != "completed") inst.status = "running";
  if (done.count("load")) {
    // The load was recorded: nothing left but to mark the instance complete (idempotent).
    spdlog::info("etl blob={} resumed after load: nothing to do", blob_name);
    inst.status = "completed";
    inst.step = "load";
    if (inst.finished.time_since_epoch().count() == 0) inst.finished = now;
    if (auto r = runs_.put_instance(inst); !r) return std::unexpected(r.error());
    pipeline_outcome out;
    out.blob = inst.blob;
    out.dataset = inst.dataset;
    out.resumed_after_load = true;
    out.load.already_loaded = true;
    return out;
  }
  if (auto r = runs_.put_instance(inst); !r) return std::unexpected(r.error());
  auto t0 = clock::now();
  auto out = run_steps(inst, done, attempt, gen, ctl);
  inst.updated = std::chrono::system_clock::now();
  inst.ms = ms_since(t0);
  if (!out) {
    // Stopped, lost or a simulated death: write nothing more; the next claimer resumes.
    if (out.error().code == errc::cancelled || out.error().code == errc::lease_lost) {
      spdlog::info("etl blob={} interrupted after step {}: {}", blob_name, inst.step.empty() ? "-" : inst.step,
                   out.error().describe());
      return out;
    }
    inst.status = "failed";
    inst.error = out.error().describe();
    spdlog::warn("etl blob={} failed: {}", blob_name, inst.error);
    (void)runs_.put_instance(inst); // best effort: the record's last_error holds it too
    return out;
  }
  inst.status = "completed";
  inst.step = "load";
  inst.finished = inst.updated;
  if (auto r = runs_.put_instance(inst); !r) return std::unexpected(r.error());
  return out;
}

result<pipeline_outcome> etl_job::run_steps(run_instance& inst, const std::set<std::string>& done,
                                            std::int32_t attempt, std::int64_t gen, const run_control& ctl) {
  // The blob goes down the stage actors by handle; each stage records its own history row
  // (replaying the steps `done` already holds) and the load stage answers.
  const dataset& d = dataset_for(opts_.datasets, inst.blob);
  auto r = std::make_shared<blob_run>();
  r->record_id = inst.id;
  r->blob = inst.blob;
  r->data = &d;
  r->attempt = attempt;
  r->gen = gen;
  r->owner = opts_.owner;
  r->runs = &runs_;
  r->done = done;
  r->ctl = &ctl;
  r->crash_after = opts_.crash_after;
  r->inst = &inst;
  if (auto x = chain_->run(r); !x) return std::unexpected(x.error());
  pipeline_outcome out;
  out.blob = inst.blob;
  out.dataset = d.name;
  out.steps = std::move(r->steps);
  out.load = r->load;
  return out;
}

result<pipeline_outcome> etl_job::process(const work_table& work, claimed_record& record) {
  auto out = run(record);
  if (out) {
    if (auto c = work.complete(record); !c) {
      spdlog::warn("etl record {}: loaded, but completing it failed: {}", record.id, c.error().describe());
      return std::unexpected(c.error());
    }
    return out;
  }
  if (out.error().code == errc::cancelled) return out; // simulated death: leave the lease to expire
  auto f = work.fail(record, out.error().describe());
  if (!f) spdlog::warn("etl record {}: failing it failed: {}", record.id, f.error().describe());
  else if (*f == record_status::dead) spdlog::error("etl record {} is dead after {} attempts: {}", record.id, record.attempts, out.error().describe());
  return out;
}

result<etl_job::drain_summary> etl_job::drain(const work_table& work, std::string_view queue, std::size_t claim_max) {
  drain_summary sum;
  std::vector<std::uint32_t> shards(work.options().work.shards);
  for (std::uint32_t i = 0; i < shards.size(); ++i) shards[i] = i;
  // Every claimed record is held by the keeper from its claim on: its lease is renewed while
  // earlier records of the batch and its own blob load, however long they take.
  lease_keeper_options ko;
  ko.renew_interval = std::chrono::milliseconds(work.options().work.lease_renew_ms);
  lease_keeper keeper(work, ko, [](const claimed_record& r, const error& e) {
    spdlog::warn("etl record {}: lease lost while loading: {}", r.id, e.describe());
  });
  keeper.start();
  while (true) {
    auto claimed = work.claim(queue, shards, opts_.owner, claim_max);
    if (!claimed) return std::unexpected(claimed.error());
    if (claimed->empty()) break;
    auto held = keeper.hold(std::move(*claimed));
    for (std::size_t k = 0; k < held.size(); ++k) {
      const auto& h = held[k];
      if (h.lost()) { // expired while earlier records of the batch loaded (renewals failed)
        (void)keeper.release(h);
        ++sum.lost;
        continue;
      }
      run_control ctl;
      ctl.lease_lost = [&h] { return h.lost(); };
      auto out = run(h.record(), ctl);
      if (out) {
        if (auto c = keeper.complete(h); !c) {
          spdlog::warn("etl record {}: loaded, but completing it failed: {}", h.id(), c.error().describe());
          ++sum.lost;
        } else {
          ++sum.succeeded;
        }
        continue;
      }
      if (out.error().code == errc::cancelled) {
        // A simulated death: stop renewing without releasing, so the leases expire.
        keeper.stop();
        return std::unexpected(out.error());
      }
      if (out.error().code == errc::lease_lost) {
        (void)keeper.release(h); // refused (another owner holds it); stops holding it
        ++sum.lost;
        continue;
      }
      auto f = keeper.fail(h, out.error().describe());
      if (!f) spdlog::warn("etl record {}: failing it failed: {}", h.id(), f.error().describe());
      else if (*f == record_status::dead)
        spdlog::error("etl record {} is dead after {} attempts: {}", h.id(), h.record().attempts, out.error().describe());
      ++sum.failed;
    }
  }
  keeper.stop();
  return sum;
}

} // namespace shoal::workers::etl
