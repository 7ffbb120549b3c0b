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

constexpr const char* k_steps[] = {"extract", "validate", "transform", "load"};

double ms_since(clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
}

void log_step(std::string_view blob, const step_stats& s) {
  spdlog::info("etl step={} blob={} in={} out={} quarantined={} ms={:.1f}{}{}", s.step, blob, s.records_in,
               s.records_out, s.quarantined, s.ms, s.detail.empty() ? "" : " ", s.detail);
}

std::size_t count_step(const std::vector<quarantine_row>& q, std::string_view step) {
  return static_cast<std::size_t>(std::count_if(q.begin(), q.end(), [&](const quarantine_row& r) { return r.step == step; }));
}

// The pure part of the pipeline: the three steps in memory, with their stats.
struct prepared_load {
  extracted_blob extracted;
  std::vector<quarantine_row> quarantine;
  std::vector<load_row> rows;
  std::vector<step_stats> steps;
};

result<prepared_load> prepare_rows(const dataset& d, std::string_view blob_name, std::string_view body) {
  prepared_load p;
  auto t0 = clock::now();
  auto ex = extract_records(body);
  if (!ex) return std::unexpected(ex.error());
  p.extracted = std::move(*ex);
  const std::size_t n = p.extracted.records.size();
  std::size_t problems = 0;
  for (const auto& r : p.extracted.records) problems += r.problem.empty() ? 0 : 1;
  p.steps.push_back({"extract", n, n - problems, problems, ms_since(t0), std::string(to_string(p.extracted.format))});

  // Validate and transform are pure per record: large blobs are cut into slices processed on
  // up to 4 threads (each with its own valijson validator), then joined in blob order.
  const std::size_t threads =
      n < 8192 ? 1 : std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, 4);
  struct slice {
    std::size_t valid = 0;
    double validate_ms = 0, transform_ms = 0;
    std::vector<quarantine_row> quarantine;
    std::size_t validate_quarantined = 0;
    std::vector<load_row> rows;
  };
  std::vector<slice> slices(threads);
  auto work = [&](std::size_t k) {
    const std::size_t lo = n * k / threads, hi = n * (k + 1) / threads;
    slice& sl = slices[k];
    auto t = clock::now();
    auto valid = validate_records(d, std::span<const extracted_record>(p.extracted.records).subspan(lo, hi - lo), sl.quarantine);
    sl.validate_ms = ms_since(t);
    sl.valid = valid.size();
    sl.validate_quarantined = sl.quarantine.size();
    t = clock::now();
    sl.rows = transform_records(d, blob_name, valid, sl.quarantine);
    sl.transform_ms = ms_since(t);
  };
  if (threads == 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    for (std::size_t k = 1; k < threads; ++k) pool.emplace_back(work, k);
    work(0);
    for (auto& th : pool) th.join();
  }
  std::size_t valid = 0, vq = 0;
  double vms = 0, tms = 0;
  for (auto& sl : slices) {
    valid += sl.valid;
    vq += sl.validate_quarantined;
    vms = std::max(vms, sl.validate_ms); // wall time: the slices ran side by side
    tms = std::max(tms, sl.transform_ms);
    for (auto& q : sl.quarantine) p.quarantine.push_back(std::move(q));
    if (p.rows.empty()) p.rows = std::move(sl.rows);
    else std::move(sl.rows.begin(), sl.rows.end(), std::back_inserter(p.rows));
  }
  std::sort(p.quarantine.begin(), p.quarantine.end(),
            [](const quarantine_row& a, const quarantine_row& b) { return a.index < b.index; });
  const std::size_t extract_q = count_step(p.quarantine, "extract");
  p.steps.push_back({"validate", n - problems, valid, vq - extract_q, vms, threads > 1 ? std::to_string(threads) + " threads" : ""});
  p.steps.push_back({"transform", valid, p.rows.size(), count_step(p.quarantine, "transform"), tms, {}});
  return p;
}

load_batch make_batch(const dataset& d, std::string_view blob_name, prepared_load& p, std::string_view owner) {
  load_batch b;
  b.blob = std::string(blob_name);
  b.dataset = d.name;
  b.insert_sql = d.insert_sql;
  b.rows = std::move(p.rows);
  b.quarantined = std::move(p.quarantine);
  b.owner = std::string(owner);
  b.keyed_by_table = d.message_key == "table";
  return b;
}

step_stats load_stats(const load_batch& b, const load_outcome& o, double ms) {
  step_stats s{"load", b.rows.size(), o.inserted, o.quarantined, ms, {}};
  if (o.already_loaded) s.detail = "already loaded (ledger)";
  else if (o.duplicates) s.detail = "duplicates=" + std::to_string(o.duplicates);
  return s;
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
  auto p = prepare_rows(d, blob_name, body);
  if (!p) return std::unexpected(p.error());
  out.steps = p->steps;
  if (auto r = sink.prepare(d.ddl); !r) return std::unexpected(r.error());
  auto t0 = clock::now();
  load_batch b = make_batch(d, blob_name, *p, owner);
  auto o = sink.load(b);
  if (!o) return std::unexpected(o.error());
  out.load = *o;
  out.steps.push_back(load_stats(b, *o, ms_since(t0)));
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
  return etl_job(std::move(blobs), std::move(runs), std::move(sink), std::move(opts));
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
  const dataset& d = dataset_for(opts_.datasets, inst.blob);
  // Between steps: stop (drain, lease about to end) or lost lease → leave the rest to the next claimer.
  auto interrupted = [&](std::string_view before) -> std::optional<error> {
    if (ctl.lease_lost && ctl.lease_lost())
      return fail(errc::lease_lost, "lease of " + inst.id + " lost before " + std::string(before)).error();
    if (ctl.stop && ctl.stop())
      return fail(errc::cancelled, "stopped before " + std::string(before)).error();
    return std::nullopt;
  };
  pipeline_outcome out;
  out.blob = inst.blob;
  out.dataset = d.name;

  auto t_read = clock::now();
  auto dl = blobs_.get_blob(opts_.container, inst.blob);
  if (!dl) {
    if (dl.error().code == storage::errc::not_found)
      return fail(errc::not_found, "blob " + opts_.container + "/" + inst.blob + " does not exist");
    return std::unexpected(error::from_storage(dl.error(), "reading blob " + inst.blob));
  }
  const double read_ms = ms_since(t_read);
  if (auto e = interrupted("extract")) return std::unexpected(std::move(*e));
  auto p = prepare_rows(d, inst.blob, dl->body);
  if (!p) return std::unexpected(p.error());
  p->steps[0].ms += read_ms;

  auto record = [&](int seq, const step_stats& s, std::chrono::system_clock::time_point started) -> result<void> {
    run_step h;
    h.seq = seq;
    h.step = s.step;
    h.attempt = attempt;
    h.gen = gen;
    h.owner = opts_.owner;
    h.started = started;
    h.finished = std::chrono::system_clock::now();
    h.ms = s.ms;
    h.records_in = static_cast<std::int64_t>(s.records_in);
    h.records_out = static_cast<std::int64_t>(s.records_out);
    h.quarantined = static_cast<std::int64_t>(s.quarantined);
    h.detail = s.detail;
    if (auto r = runs_.record_step(inst.id, h); !r) return r;
    inst.step = s.step;
    return {};
  };

  for (int i = 0; i < 3; ++i) {
    step_stats s = p->steps[static_cast<std::size_t>(i)];
    if (done.count(s.step)) {
      s.detail = s.detail.empty() ? "replayed" : s.detail + " replayed";
      log_step(inst.blob, s);
      out.steps.push_back(std::move(s));
      continue;
    }
    if (auto e = interrupted("recording " + s.step)) return std::unexpected(std::move(*e));
    log_step(inst.blob, s);
    if (opts_.crash_after && opts_.crash_after(s.step)) return fail(errc::cancelled, "simulated crash after " + s.step);
    auto started = std::chrono::system_clock::now() - std::chrono::microseconds(static_cast<std::int64_t>(s.ms * 1000));
    if (auto r = record(i + 1, s, started); !r) return std::unexpected(r.error());
    out.steps.push_back(std::move(s));
  }
  inst.records = static_cast<std::int64_t>(p->extracted.records.size());

  if (!prepared_.count(d.name)) {
    if (auto r = sink_->prepare(d.ddl); !r) return std::unexpected(r.error());
    prepared_.insert(d.name);
  }
  auto started = std::chrono::system_clock::now();
  auto t0 = clock::now();
  if (auto e = interrupted("load")) return std::unexpected(std::move(*e));
  load_batch b = make_batch(d, inst.blob, *p, opts_.owner);
  if (ctl.lease_lost) b.may_commit = [&ctl] { return !ctl.lease_lost(); };
  auto o = sink_->load(b);
  if (!o) return std::unexpected(o.error());
  step_stats s = load_stats(b, *o, ms_since(t0));
  log_step(inst.blob, s);
  if (opts_.crash_after && opts_.crash_after("load")) return fail(errc::cancelled, "simulated crash after load");
  if (auto r = record(4, s, started); !r) return std::unexpected(r.error());
  out.steps.push_back(std::move(s));
  out.load = *o;
  if (!o->already_loaded) {
    inst.loaded = static_cast<std::int64_t>(o->inserted);
    inst.duplicates = static_cast<std::int64_t>(o->duplicates);
    inst.quarantined = static_cast<std::int64_t>(o->quarantined);
  } else if (auto led = sink_->ledger(inst.blob); led && *led) {
    inst.loaded = (*led)->rows_loaded;
    inst.duplicates = (*led)->duplicates;
    inst.quarantined = (*led)->quarantined;
  }
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
