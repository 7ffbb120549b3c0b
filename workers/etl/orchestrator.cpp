#include "workers/etl/orchestrator.hpp"

#include "workers/claim/claimer.hpp"
#include "workers/claim/key_escape.hpp"

#include <spdlog/spdlog.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iterator>
#include <span>
#include <thread>

namespace shoal::workers::etl {
namespace {

using clock = std::chrono::steady_clock;
using storage::table_entity;
using storage::table_time;

// -- entity mapping ---------------------------------------------------------------------------------

// Properties are read with table_entity's typed getters; an absent one reads as empty/zero.
run_instance instance_from(const table_entity& e) {
  run_instance i;
  i.id = unescape_key(e.partition_key).value_or(e.partition_key);
  i.blob = e.get_string("blob").value_or("");
  i.dataset = e.get_string("dataset").value_or("");
  i.status = e.get_string("status").value_or("");
  i.step = e.get_string("step").value_or("");
  i.attempts = static_cast<std::int32_t>(e.get_int64("attempts").value_or(0));
  i.gen = e.get_int64("gen").value_or(0);
  i.owner = e.get_string("owner").value_or("");
  i.created = e.get_time("created").value_or(std::chrono::system_clock::time_point{});
  i.updated = e.get_time("updated").value_or(std::chrono::system_clock::time_point{});
  i.finished = e.get_time("finished").value_or(std::chrono::system_clock::time_point{});
  i.error = e.get_string("error").value_or("");
  i.records = e.get_int64("records").value_or(0);
  i.loaded = e.get_int64("loaded").value_or(0);
  i.duplicates = e.get_int64("duplicates").value_or(0);
  i.quarantined = e.get_int64("quarantined").value_or(0);
  i.ms = e.get_double("ms").value_or(0.0);
  return i;
}

run_step step_from(const table_entity& e) {
  run_step s;
  s.seq = static_cast<int>(e.get_int64("seq").value_or(0));
  s.step = e.get_string("step").value_or("");
  s.attempt = static_cast<std::int32_t>(e.get_int64("attempt").value_or(0));
  s.gen = e.get_int64("gen").value_or(0);
  s.owner = e.get_string("owner").value_or("");
  s.started = e.get_time("started").value_or(std::chrono::system_clock::time_point{});
  s.finished = e.get_time("finished").value_or(std::chrono::system_clock::time_point{});
  s.ms = e.get_double("ms").value_or(0.0);
  s.records_in = e.get_int64("records_in").value_or(0);
  s.records_out = e.get_int64("records_out").value_or(0);
  s.quarantined = e.get_int64("quarantined").value_or(0);
  s.detail = e.get_string("detail").value_or("");
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

result<history_mode> parse_history_mode(std::string_view s) {
  if (s == "per_blob") return history_mode::per_blob;
  if (s == "per_step") return history_mode::per_step;
  return fail(errc::invalid_argument, "unknown ETL history mode '" + std::string(s) + "' (per_blob or per_step)");
}

namespace {

table_entity instance_entity(const std::string& pk, const run_instance& i) {
  table_entity e;
  e.partition_key = pk;
  e.row_key = "instance";
  e.set("blob", i.blob).set("dataset", i.dataset).set("status", i.status).set("step", i.step);
  e.set("attempts", i.attempts).set("gen", i.gen).set("owner", i.owner).set("error", i.error.substr(0, 8000));
  e.set("created", tt(i.created)).set("updated", tt(i.updated));
  if (i.finished.time_since_epoch().count() > 0) e.set("finished", tt(i.finished));
  e.set("records", i.records).set("loaded", i.loaded).set("duplicates", i.duplicates);
  e.set("quarantined", i.quarantined).set("ms", i.ms);
  return e;
}

table_entity step_entity(const std::string& pk, const run_step& s) {
  table_entity e;
  e.partition_key = pk;
  e.row_key = "step-" + std::to_string(s.seq) + "-" + s.step;
  e.set("seq", std::int32_t{s.seq}).set("step", s.step).set("attempt", s.attempt).set("gen", s.gen);
  e.set("owner", s.owner).set("started", tt(s.started)).set("finished", tt(s.finished)).set("ms", s.ms);
  e.set("records_in", s.records_in).set("records_out", s.records_out).set("quarantined", s.quarantined);
  e.set("detail", s.detail);
  return e;
}

} // namespace

result<void> run_log::put_run(const run_instance& i, std::span<const run_step> steps) const {
  auto pk = escape_key(i.id);
  if (!pk) return std::unexpected(pk.error());
  storage::table_transaction tx;
  tx.insert_or_merge(instance_entity(*pk, i));
  for (const auto& s : steps) tx.insert_or_replace(step_entity(*pk, s));
  auto r = table_.submit_transaction(tx);
  if (!r) return std::unexpected(error::from_storage(r.error(), "writing the run history"));
  return {};
}

result<void> run_log::put_instance(const run_instance& i) const {
  auto pk = escape_key(i.id);
  if (!pk) return std::unexpected(pk.error());
  auto r = table_.insert_or_merge(instance_entity(*pk, i));
  if (!r) return std::unexpected(error::from_storage(r.error(), "writing the run instance"));
  return {};
}

result<void> run_log::record_step(std::string_view id, const run_step& s) const {
  auto pk = escape_key(id);
  if (!pk) return std::unexpected(pk.error());
  auto r = table_.insert(step_entity(*pk, s));
  if (!r && r.error().code != storage::errc::conflict)
    return std::unexpected(error::from_storage(r.error(), "recording step " + s.step));
  return {};
}

// -- etl_job --------------------------------------------------------------------------------------

std::function<bool(std::string_view)> crash_hook_from_env() {
  const char* v = std::getenv("SHOAL_ETL_CRASH_AT");
  if (v == nullptr || *v == '\0') return {};
#if !defined(SHOAL_TEST_HOOKS)
  spdlog::warn("etl: SHOAL_ETL_CRASH_AT is ignored: fault injection exists only in test builds");
  return {};
#endif
  const std::string text(v);
  const auto colon = text.find(':');
  const std::string point = text.substr(0, colon);
  const std::uint64_t n = colon == std::string::npos ? 1 : std::strtoull(text.c_str() + colon + 1, nullptr, 10);
  std::string step;
  if (point == "before_commit") step = "commit";
  else if (point == "after_commit") step = "load";
  else return {};
  auto seen = std::make_shared<std::atomic<std::uint64_t>>(0);
  return [step, n, seen](std::string_view s) {
    if (s == step && seen->fetch_add(1) + 1 == n) {
      spdlog::warn("etl: SHOAL_ETL_CRASH_AT reached ({}); killing myself", step);
      spdlog::default_logger()->flush();
      ::kill(::getpid(), SIGKILL);
    }
    return false;
  };
}

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

etl_job::prepared etl_job::prepare(std::string_view record_id, std::string_view blob_name, std::int32_t attempt,
                                   std::int64_t gen) {
  prepared p;
  p.attempt = attempt;
  p.gen = gen;
  const auto now = std::chrono::system_clock::now();
  // A first attempt in per_blob mode cannot have a history worth reading: an earlier run that
  // wrote any would have been counted (attempt > 1). Otherwise read which steps finished.
  const bool resume = opts_.history == history_mode::per_step || attempt > 1;
  run_instance& inst = p.inst;
  if (!resume) {
    inst.id = std::string(record_id);
    inst.created = now;
  } else if (auto prior = runs_.show(record_id)) {
    inst = std::move(prior->first);
    for (const auto& s : prior->second) p.done.insert(s.step);
  } else if (prior.error().code != errc::not_found) {
    p.ready = std::unexpected(prior.error());
    return p;
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
  if (p.done.count("load")) {
    // The load was recorded: nothing left but to mark the instance complete (idempotent).
    spdlog::info("etl blob={} resumed after load: nothing to do", blob_name);
    inst.status = "completed";
    inst.step = "load";
    if (inst.finished.time_since_epoch().count() == 0) inst.finished = now;
    if (auto r = runs_.put_instance(inst); !r) {
      p.ready = std::unexpected(r.error());
      return p;
    }
    pipeline_outcome out;
    out.blob = inst.blob;
    out.dataset = inst.dataset;
    out.resumed_after_load = true;
    out.load.already_loaded = true;
    p.ready = std::move(out);
    return p;
  }
  p.defer = !resume;
  if (resume)
    if (auto r = runs_.put_instance(inst); !r) p.ready = std::unexpected(r.error());
  return p;
}

std::shared_ptr<blob_run> etl_job::make_run(prepared& p, const run_control& ctl) {
  // The blob goes down the stage actors by handle; each stage makes its own history row
  // (replaying the steps `done` already holds) and the load stage answers.
  const dataset& d = dataset_for(opts_.datasets, p.inst.blob);
  auto r = std::make_shared<blob_run>();
  r->record_id = p.inst.id;
  r->blob = p.inst.blob;
  r->data = &d;
  r->attempt = p.attempt;
  r->gen = p.gen;
  r->owner = opts_.owner;
  r->runs = &runs_;
  r->done = p.done;
  r->ctl = &ctl;
  r->crash_after = opts_.crash_after;
  r->inst = &p.inst;
  r->defer_history = p.defer;
  return r;
}

result<pipeline_outcome> etl_job::finish(prepared& p, const result<void>& ran, blob_run& r, double ms) {
  run_instance& inst = p.inst;
  inst.updated = std::chrono::system_clock::now();
  inst.ms = ms;
  if (!ran) {
    // Stopped, lost or a simulated death: write nothing more; the next claimer resumes.
    if (ran.error().code == errc::cancelled || ran.error().code == errc::lease_lost) {
      spdlog::info("etl blob={} interrupted after step {}: {}", inst.blob, inst.step.empty() ? "-" : inst.step,
                   ran.error().describe());
      return std::unexpected(ran.error());
    }
    inst.status = "failed";
    inst.error = ran.error().describe();
    spdlog::warn("etl blob={} failed: {}", inst.blob, inst.error);
    // Best effort: the record's last_error holds it too. With the steps that finished before.
    (void)(p.defer ? runs_.put_run(inst, r.deferred) : runs_.put_instance(inst));
    return std::unexpected(ran.error());
  }
  inst.status = "completed";
  inst.step = "load";
  inst.finished = inst.updated;
  if (auto w = p.defer ? runs_.put_run(inst, r.deferred) : runs_.put_instance(inst); !w)
    return std::unexpected(w.error());
  pipeline_outcome out;
  out.blob = inst.blob;
  out.dataset = r.data ? r.data->name : inst.dataset;
  out.steps = std::move(r.steps);
  out.load = r.load;
  return out;
}

result<pipeline_outcome> etl_job::run_blob(std::string_view record_id, std::string_view blob_name,
                                           std::int32_t attempt, std::int64_t gen, const run_control& ctl) {
  auto p = prepare(record_id, blob_name, attempt, gen);
  if (p.ready) return std::move(*p.ready);
  auto r = make_run(p, ctl);
  const auto t0 = clock::now();
  auto ran = chain_->run(r);
  return finish(p, ran, *r, ms_since(t0));
}

std::vector<result<pipeline_outcome>> etl_job::run_batch(std::span<claimed_record* const> records,
                                                         std::span<const run_control> ctls) {
  const std::size_t n = records.size();
  std::vector<result<pipeline_outcome>> out(n, result<pipeline_outcome>(std::unexpected(error{errc::invalid_argument, "not run"})));
  if (n == 0) return out;
  if (!records.front()->owner.empty()) opts_.owner = records.front()->owner; // one lane, one owner
  std::vector<prepared> ps;
  ps.reserve(n);
  std::vector<std::shared_ptr<blob_run>> runs(n);
  std::vector<result<void>> ran(n);
  // By dataset, in the order of their first record: one chain group (SQL transaction) each.
  std::vector<std::pair<std::string, std::vector<std::size_t>>> groups;
  for (std::size_t i = 0; i < n; ++i) {
    const claimed_record& rec = *records[i];
    const std::string& blob = rec.payload.empty() ? rec.id : rec.payload;
    ps.push_back(prepare(rec.id, blob, rec.attempts, rec.gen));
    if (ps[i].ready) continue;
    runs[i] = make_run(ps[i], ctls[i]);
    const std::string& ds = runs[i]->data->name;
    auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& x) { return x.first == ds; });
    if (g == groups.end()) groups.push_back({ds, {i}});
    else g->second.push_back(i);
  }
  const auto t0 = clock::now();
  for (const auto& [ds, idx] : groups) {
    std::vector<std::shared_ptr<blob_run>> members;
    members.reserve(idx.size());
    for (std::size_t i : idx) members.push_back(runs[i]);
    auto results = chain_->run_group(members);
    for (std::size_t k = 0; k < idx.size(); ++k) ran[idx[k]] = std::move(results[k]);
  }
  const double ms = ms_since(t0);
  // The history writes: one request per blob (each its own partition), side by side.
  std::vector<std::size_t> todo;
  for (std::size_t i = 0; i < n; ++i) {
    if (ps[i].ready) out[i] = std::move(*ps[i].ready);
    else todo.push_back(i);
  }
  const std::size_t width = std::min<std::size_t>(todo.size(), 8);
  std::atomic<std::size_t> next{0};
  auto work = [&] {
    for (std::size_t k; (k = next.fetch_add(1)) < todo.size();) {
      const std::size_t i = todo[k];
      out[i] = finish(ps[i], ran[i], *runs[i], ms);
    }
  };
  std::vector<std::thread> helpers;
  for (std::size_t t = 1; t < width; ++t) helpers.emplace_back(work);
  work();
  for (auto& t : helpers) t.join();
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
    // The records still held go down the chain together: one SQL transaction per dataset.
    std::vector<std::size_t> live;
    std::vector<claimed_record> recs;
    for (std::size_t k = 0; k < held.size(); ++k) {
      if (held[k].lost()) { // expired while an earlier round loaded (renewals failed)
        (void)keeper.release(held[k]);
        ++sum.lost;
        continue;
      }
      live.push_back(k);
      recs.push_back(held[k].record());
    }
    std::vector<claimed_record*> ptrs;
    std::vector<run_control> ctls(live.size());
    for (std::size_t j = 0; j < live.size(); ++j) {
      ptrs.push_back(&recs[j]);
      ctls[j].lease_lost = [h = held[live[j]]] { return h.lost(); };
    }
    auto outs = run_batch(ptrs, ctls);
    std::vector<lease_keeper::handle> done;
    for (std::size_t j = 0; j < live.size(); ++j) {
      const auto& h = held[live[j]];
      const auto& out = outs[j];
      if (out) {
        done.push_back(h);
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
    // Completed only now, after their SQL commit: one transaction per partition.
    auto completed = keeper.complete_many(done);
    for (std::size_t j = 0; j < done.size(); ++j) {
      if (completed[j]) {
        ++sum.succeeded;
      } else {
        spdlog::warn("etl record {}: loaded, but completing it failed: {}", done[j].id(), completed[j].error().describe());
        ++sum.lost;
      }
    }
  }
  keeper.stop();
  return sum;
}

} // namespace shoal::workers::etl
