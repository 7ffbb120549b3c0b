#include "workers/etl/etl_chain.hpp"

#include "actors/supervisor.hpp"
#include "workers/etl/orchestrator.hpp"

#include <spdlog/spdlog.h>

#include <chrono>

namespace shoal::workers::etl {

// -- blob_run / blob_slots ------------------------------------------------------------------------

void blob_run::finish(std::optional<error> err) {
  {
    std::lock_guard lk(m_);
    if (finished_) return;
    finished_ = true;
    err_ = std::move(err);
  }
  cv_.notify_all();
}

std::optional<error> blob_run::wait() {
  std::unique_lock lk(m_);
  cv_.wait(lk, [this] { return finished_; });
  return err_;
}

std::uint64_t blob_slots::put(std::shared_ptr<blob_run> r) {
  std::lock_guard lk(m_);
  auto id = next_++;
  runs_.emplace(id, std::move(r));
  return id;
}

std::shared_ptr<blob_run> blob_slots::get(std::uint64_t id) const {
  std::lock_guard lk(m_);
  auto it = runs_.find(id);
  return it == runs_.end() ? nullptr : it->second;
}

void blob_slots::erase(std::uint64_t id) {
  std::lock_guard lk(m_);
  runs_.erase(id);
}

void blob_slots::fail_all(const error& e) {
  std::vector<std::shared_ptr<blob_run>> all;
  {
    std::lock_guard lk(m_);
    for (auto& [id, r] : runs_) all.push_back(r);
  }
  for (auto& r : all) r->finish(e);
}

void blob_slots::fail_group(std::uint64_t group, const error& e) {
  std::vector<std::shared_ptr<blob_run>> members;
  {
    std::lock_guard lk(m_);
    for (auto& [id, r] : runs_)
      if (r->group == group) members.push_back(r);
  }
  for (auto& r : members) r->finish(e);
}

std::size_t blob_slots::size() const {
  std::lock_guard lk(m_);
  return runs_.size();
}

// -- the stages -----------------------------------------------------------------------------------

struct etl_chain::shared {
  blob_slots slots;
  std::string container;
  std::uint64_t max_blob_bytes = 0; ///< get_blob_options::max_bytes of every read
  std::optional<storage::blob_client> blobs;
  sink_factory open_sink;
  std::mutex first_m;
  std::unique_ptr<sql_sink> first_sink; ///< taken by the first load stage instance
  std::atomic<bool> broken{false};
  std::atomic<std::uint64_t> next_group{1};
};

namespace {

using clock = std::chrono::steady_clock;

constexpr const char* k_stage_names[] = {"extract", "validate", "transform", "load"};

// An error value (workers::fail without the unexpected; `fail` is also actor::fail in the stages).
error werr(errc c, std::string msg) { return error{c, std::move(msg), storage::errc::invalid_argument, 0}; }

/// What a stage's step decided: forward to the next stage, or end the blob (the last stage's
/// success, or a step error).
struct step_verdict {
  bool end = false;          ///< the blob is finished (successfully when err is empty)
  std::optional<error> err;  ///< the step failed
  bool restart = false;      ///< the stage itself is broken (SQL connection): fail the actor after answering
  bool held = false;         ///< kept by the stage (a group member waiting for its group's end)
};

/// Base of the four stages: the message handling, the durable-history helpers and the failure
/// handling shared by all of them. Each stage implements `step`.
class stage_actor : public actors::actor {
public:
  stage_actor(actors::actor_config& cfg, std::shared_ptr<etl_chain::shared> sh, int seq, std::string next)
      : actor(cfg), sh_(std::move(sh)), seq_(seq), next_name_(std::move(next)) {}

protected:
  actors::result<void> init() override {
    if (!next_name_.empty()) {
      auto n = sys().lookup(next_name_);
      if (!n) return std::unexpected(actors::error{actors::errc::init_failed, "next stage " + next_name_ + " is not running"});
      next_ = *n;
    }
    return {};
  }

  actors::behavior make_behavior() override {
    return {[this](const etl_blob& m) { handle(m); }, [this](const etl_group_end& m) { group_end(m); }};
  }

  virtual step_verdict step(blob_run& r) = 0;

  /// A group's end marker: passed on (the load stage loads the group instead).
  virtual void group_end(const etl_group_end& m) {
    if (auto t = tell(next_, m); !t)
      sh_->slots.fail_group(m.group, werr(errc::io, "ETL stage " + std::string(name()) +
                                                        " cannot pass a group's end on: " + t.error().message));
  }

  const char* name() const noexcept { return k_stage_names[seq_ - 1]; }

  // -- durable history helpers --------------------------------------------------------------
  /// Stop (drain, lease about to end) or lost lease: leave the rest to the next claimer.
  static std::optional<error> interrupted(const blob_run& r, std::string_view before) {
    if (!r.runs || !r.ctl) return std::nullopt;
    if (r.ctl->lease_lost && r.ctl->lease_lost())
      return werr(errc::lease_lost, "lease of " + r.record_id + " lost before " + std::string(before));
    if (r.ctl->stop && r.ctl->stop()) return werr(errc::cancelled, "stopped before " + std::string(before));
    return std::nullopt;
  }

  /// Writes this stage's history row for step `s`.
  std::optional<error> record(blob_run& r, const step_stats& s, std::chrono::system_clock::time_point started) {
    run_step h;
    h.seq = seq_;
    h.step = s.step;
    h.attempt = r.attempt;
    h.gen = r.gen;
    h.owner = r.owner;
    h.started = started;
    h.finished = std::chrono::system_clock::now();
    h.ms = s.ms;
    h.records_in = static_cast<std::int64_t>(s.records_in);
    h.records_out = static_cast<std::int64_t>(s.records_out);
    h.quarantined = static_cast<std::int64_t>(s.quarantined);
    h.detail = s.detail;
    if (r.defer_history) {
      r.deferred.push_back(std::move(h)); // written with the instance row at the end of the blob
    } else if (auto w = r.runs->record_step(r.record_id, h); !w) {
      return w.error();
    }
    if (r.inst) r.inst->step = s.step;
    return std::nullopt;
  }

  /// After a pure step: replayed when the history has it, else logged, crash_after, recorded.
  std::optional<error> finish_pure(blob_run& r, step_stats s) {
    if (!r.runs) {
      r.steps.push_back(std::move(s));
      return std::nullopt;
    }
    if (r.done.count(s.step)) {
      s.detail = s.detail.empty() ? "replayed" : s.detail + " replayed";
      log_step(r.blob, s);
      r.steps.push_back(std::move(s));
      return std::nullopt;
    }
    if (auto e = interrupted(r, "recording " + s.step)) return e;
    log_step(r.blob, s);
    if (r.crash_after && r.crash_after(s.step)) return werr(errc::cancelled, "simulated crash after " + s.step);
    auto started = std::chrono::system_clock::now() - std::chrono::microseconds(static_cast<std::int64_t>(s.ms * 1000));
    if (auto e = record(r, s, started)) return e;
    r.steps.push_back(std::move(s));
    return std::nullopt;
  }

  std::shared_ptr<etl_chain::shared> sh_;

private:
  void handle(const etl_blob& m) {
    auto r = sh_->slots.get(m.slot);
    if (!r) {
      spdlog::warn("etl {}: blob {} (slot {}) is no longer in flight", name(), m.blob, m.slot);
      return;
    }
    step_verdict v;
    std::optional<std::string> crashed;
    try {
      v = step(*r);
    } catch (const std::exception& ex) {
      crashed = ex.what();
    } catch (...) {
      crashed = "unknown exception";
    }
    if (crashed) {
      // The blob fails with a clear error, then the actor fails: its supervisor restarts it.
      auto msg = "ETL stage " + std::string(name()) + " failed (restarted by its supervisor): " + *crashed;
      r->finish(werr(errc::io, msg));
      actors::actor::fail(actors::error{actors::errc::handler_failed, msg});
      return;
    }
    if (v.held) return;
    if (v.end) {
      if (v.err && v.restart)
        v.err->message = "ETL stage " + std::string(name()) + " failed on SQL (restarted with a new connection): " + v.err->message;
      r->finish(v.err);
      if (v.restart) actors::actor::fail(actors::error{actors::errc::handler_failed, v.err ? v.err->describe() : "restart"});
      return;
    }
    if (auto t = tell(next_, m); !t)
      r->finish(werr(errc::io, "ETL stage " + std::string(name()) + " cannot pass blob " + r->blob + " on: " + t.error().message));
  }

  int seq_;                 // 1 extract … 4 load
  std::string next_name_;   // empty for the last stage
  actors::actor_ref next_;
};

step_verdict ended(error e) { return step_verdict{true, std::move(e), false}; }

/// Stage 1: reads the blob (unless given in memory) and splits it (both formats).
class extract_stage final : public stage_actor {
public:
  using stage_actor::stage_actor;

protected:
  step_verdict step(blob_run& r) override {
    double read_ms = 0;
    if (r.body.data() == nullptr) {
      if (!sh_->blobs) return ended(werr(errc::invalid_argument, "the ETL chain has no blob client"));
      auto t = clock::now();
      // The body is held whole while the blob loads: a larger one than the cap is refused from
      // its Content-Length, before a byte of it is read.
      storage::get_blob_options go;
      go.max_bytes = sh_->max_blob_bytes;
      auto dl = sh_->blobs->get_blob(sh_->container, r.blob, go);
      if (!dl) {
        if (dl.error().code == storage::errc::not_found)
          return ended(werr(errc::not_found, "blob " + sh_->container + "/" + r.blob + " does not exist"));
        if (dl.error().code == storage::errc::limit_exceeded)
          return ended(werr(errc::limit_exceeded, "blob " + sh_->container + "/" + r.blob +
                                                      " is larger than [etl] max_blob_bytes (" +
                                                      std::to_string(sh_->max_blob_bytes) +
                                                      " bytes): not loaded (" + dl.error().message + ")"));
        return ended(error::from_storage(dl.error(), "reading blob " + r.blob));
      }
      r.owned_body = std::move(dl->body);
      r.body = r.owned_body;
      read_ms = ms_since(t);
    }
    if (auto e = interrupted(r, "extract")) return ended(std::move(*e));
    auto s = extract_step(r.body, r.records);
    if (!s) return ended(s.error());
    s->ms += read_ms;
    if (r.inst) r.inst->records = static_cast<std::int64_t>(r.records.extracted.records.size());
    if (auto e = finish_pure(r, std::move(*s))) return ended(std::move(*e));
    return {};
  }
};

/// Stage 2: the schema check.
class validate_stage final : public stage_actor {
public:
  using stage_actor::stage_actor;

protected:
  step_verdict step(blob_run& r) override {
    if (auto e = finish_pure(r, validate_step(*r.data, r.records))) return ended(std::move(*e));
    return {};
  }
};

/// Stage 3: the dataset mapping.
class transform_stage final : public stage_actor {
public:
  using stage_actor::stage_actor;

protected:
  step_verdict step(blob_run& r) override {
    if (auto e = finish_pure(r, transform_step(*r.data, r.blob, r.records))) return ended(std::move(*e));
    return {};
  }
};

/// Stage 4: owns the SQL sink; one transaction per blob with the ledger, or per group of blobs.
class load_stage final : public stage_actor {
public:
  using stage_actor::stage_actor;
  // A restart (or the chain stopping) between a group's members and its end: they are not lost.
  ~load_stage() override {
    for (auto& [group, members] : pending_)
      for (auto& h : members)
        h.run->finish(werr(errc::io, "ETL stage load stopped before loading the group of " + h.run->blob));
  }

protected:
  actors::result<void> init() override {
    {
      std::lock_guard lk(sh_->first_m);
      sink_ = std::move(sh_->first_sink);
    }
    if (!sink_) {
      if (!sh_->open_sink) return std::unexpected(actors::error{actors::errc::init_failed, "no way to reopen the SQL sink"});
      auto s = sh_->open_sink();
      if (!s) return std::unexpected(actors::error{actors::errc::init_failed, "reopening the SQL sink: " + s.error().describe()});
      sink_ = std::move(*s);
    }
    return stage_actor::init();
  }

  step_verdict step(blob_run& r) override {
    const dataset& d = *r.data;
    if (!prepared_.count(d.name)) {
      if (auto p = sink_->prepare(d.ddl); !p) return broken(p.error());
      prepared_.insert(d.name);
    }
    held h;
    h.started = std::chrono::system_clock::now();
    h.t0 = clock::now();
    if (auto e = interrupted(r, "load")) return ended(std::move(*e));
    h.batch = make_load_batch(d, r.blob, r.records, r.owner);
    arm_commit_checks(r, h.batch);
    if (r.group != 0) {
      // Loaded with the rest of its group when the group's end marker comes.
      h.run = r.shared_from_this();
      pending_[r.group].push_back(std::move(h));
      return step_verdict{false, std::nullopt, false, true};
    }
    auto o = sink_->load(h.batch);
    if (!o) return r.crashed_before_commit ? crashed() : broken(o.error());
    return after_load(r, h, *o);
  }

  void group_end(const etl_group_end& m) override {
    auto it = pending_.find(m.group);
    if (it == pending_.end()) return; // every member ended in an earlier stage
    std::vector<held> members = std::move(it->second);
    pending_.erase(it);
    std::vector<const load_batch*> batches;
    batches.reserve(members.size());
    for (const auto& h : members) batches.push_back(&h.batch);
    auto outcomes = sink_->load_many(batches);
    if (!outcomes) {
      step_verdict v = broken(outcomes.error());
      if (v.restart)
        v.err->message = "ETL stage load failed on SQL (restarted with a new connection): " + v.err->message;
      for (auto& h : members) h.run->finish(v.err);
      if (v.restart) actors::actor::fail(actors::error{actors::errc::handler_failed, v.err->describe()});
      return;
    }
    std::optional<error> sql_broken;
    for (std::size_t i = 0; i < members.size(); ++i) {
      blob_run& r = *members[i].run;
      const auto& o = (*outcomes)[i];
      step_verdict v = o                        ? after_load(r, members[i], *o)
                       : r.crashed_before_commit ? crashed()
                                                 : broken(o.error());
      if (v.restart && !sql_broken) sql_broken = v.err;
      r.finish(v.err);
    }
    if (sql_broken) actors::actor::fail(actors::error{actors::errc::handler_failed, sql_broken->describe()});
  }

private:
  // A blob whose load batch is made, waiting for the SQL transaction.
  struct held {
    std::shared_ptr<blob_run> run;             // group members: kept alive until finished
    load_batch batch;
    std::chrono::system_clock::time_point started;
    clock::time_point t0;
  };

  // errc::io or unavailable from the sink: the connection (or database file) is suspect;
  // restart with a new one.
  static step_verdict broken(error e) {
    const bool io = e.code == errc::io || e.code == errc::unavailable;
    return step_verdict{true, std::move(e), io};
  }

  // Just before COMMIT: the fault hook's "commit" point, then the lease.
  static void arm_commit_checks(blob_run& r, load_batch& b) {
    const bool lease = r.runs && r.ctl && r.ctl->lease_lost;
    if (!lease && !r.crash_after) return;
    b.may_commit = [&r, lease] {
      if (r.crash_after && r.crash_after("commit")) { // a simulated death: roll back
        r.crashed_before_commit = true;
        return false;
      }
      return !(lease && r.ctl->lease_lost());
    };
  }

  static step_verdict crashed() { return ended(werr(errc::cancelled, "simulated crash before commit")); }

  // After the blob's rows committed (or were found loaded): log, fault hook, history, counts.
  step_verdict after_load(blob_run& r, const held& h, const load_outcome& o) {
    step_stats s = load_step_stats(h.batch, o, ms_since(h.t0));
    r.load = o;
    if (r.runs) {
      log_step(r.blob, s);
      if (r.crash_after && r.crash_after("load")) return ended(werr(errc::cancelled, "simulated crash after load"));
      if (auto e = record(r, s, h.started)) return ended(std::move(*e));
      if (r.inst) {
        if (!o.already_loaded) {
          r.inst->loaded = static_cast<std::int64_t>(o.inserted);
          r.inst->duplicates = static_cast<std::int64_t>(o.duplicates);
          r.inst->quarantined = static_cast<std::int64_t>(o.quarantined);
        } else if (auto led = sink_->ledger(r.blob); led && *led) {
          r.inst->loaded = (*led)->rows_loaded;
          r.inst->duplicates = (*led)->duplicates;
          r.inst->quarantined = (*led)->quarantined;
        }
      }
    }
    r.steps.push_back(std::move(s));
    return step_verdict{true, std::nullopt, false};
  }

  std::unique_ptr<sql_sink> sink_;
  std::set<std::string> prepared_; // datasets whose DDL ran on this connection
  std::map<std::uint64_t, std::vector<held>> pending_; // group → its members that got here
};

} // namespace

// -- etl_chain ------------------------------------------------------------------------------------

result<std::unique_ptr<etl_chain>> etl_chain::start(etl_chain_options opts, std::unique_ptr<sql_sink> first_sink) {
  if (!first_sink && !opts.open_sink) return std::unexpected(werr(errc::io, "the ETL chain needs a SQL sink"));
  std::unique_ptr<etl_chain> c(new etl_chain());
  c->shared_ = std::make_shared<shared>();
  c->shared_->container = opts.container;
  c->shared_->max_blob_bytes = opts.max_blob_bytes;
  c->shared_->blobs = std::move(opts.blobs);
  c->shared_->open_sink = std::move(opts.open_sink);
  c->shared_->first_sink = std::move(first_sink);
  c->sys_ = std::make_unique<actors::actor_system>(actors::system_options{.process = opts.name});

  // Children start in order: the last stage first, so each stage finds its next one in init().
  auto sh = c->shared_;
  std::vector<actors::child_spec> specs{
      actors::child_spec::of<load_stage>({.name = "etl-load"}, sh, 4, std::string()),
      actors::child_spec::of<transform_stage>({.name = "etl-transform"}, sh, 3, std::string("etl-load")),
      actors::child_spec::of<validate_stage>({.name = "etl-validate"}, sh, 2, std::string("etl-transform")),
      actors::child_spec::of<extract_stage>({.name = "etl-extract"}, sh, 1, std::string("etl-validate")),
  };
  actors::supervisor_options so;
  so.strategy = actors::restart_strategy::one_for_one;
  so.max_restarts = opts.max_restarts;
  so.period = opts.restart_period;
  std::weak_ptr<shared> weak = sh;
  so.on_escalate = [weak](const actors::error& e) {
    if (auto s = weak.lock()) {
      s->broken.store(true);
      spdlog::error("etl chain: the stage supervisor gave up: {}", e.message);
      s->slots.fail_all(werr(errc::io, "the ETL chain gave up: " + e.message));
    }
  };
  auto sup = c->sys_->spawn<actors::supervisor>({.name = "etl-stages"}, so, std::move(specs));
  if (!sup) return std::unexpected(werr(errc::io, "starting the ETL stage actors: " + sup.error().message));
  for (const char* n : {"etl-extract", "etl-validate", "etl-transform", "etl-load"}) {
    auto r = c->sys_->lookup(n);
    if (!r) return std::unexpected(werr(errc::io, std::string("ETL stage ") + n + " is not running"));
    c->stages_.push_back(*r);
  }
  c->head_ = c->stages_.front();
  return c;
}

etl_chain::~etl_chain() {
  if (sys_) sys_->shutdown();
  // Anything still waiting (it cannot be: run() blocks its caller) would be released here.
  if (shared_) shared_->slots.fail_all(werr(errc::cancelled, "the ETL chain stopped"));
}

bool etl_chain::broken() const noexcept {
  // The supervisor stops the stages before it reports giving up: a stopped stage means the same.
  if (shared_->broken.load()) return true;
  for (const auto& s : stages_)
    if (!s.alive()) return true;
  return false;
}

std::uint64_t etl_chain::restarts() const {
  std::uint64_t n = 0;
  for (const auto& s : stages_) n += s.stats().restarts;
  return n;
}

result<void> etl_chain::run(const std::shared_ptr<blob_run>& r) {
  if (broken()) return std::unexpected(werr(errc::io, "the ETL chain gave up after too many stage restarts"));
  const auto id = shared_->slots.put(r);
  struct erase_slot {
    blob_slots& s;
    std::uint64_t id;
    ~erase_slot() { s.erase(id); }
  } guard{shared_->slots, id};
  if (auto t = sys_->tell(head_, etl_blob{id, r->blob}); !t)
    r->finish(werr(errc::io, "the ETL chain does not take blob " + r->blob + ": " + t.error().message));
  if (auto e = r->wait()) return std::unexpected(std::move(*e));
  return {};
}

std::vector<result<void>> etl_chain::run_group(std::span<const std::shared_ptr<blob_run>> runs) {
  std::vector<result<void>> out(runs.size());
  if (broken()) {
    for (auto& o : out) o = std::unexpected(werr(errc::io, "the ETL chain gave up after too many stage restarts"));
    return out;
  }
  const std::uint64_t group = shared_->next_group.fetch_add(1);
  std::vector<std::uint64_t> ids;
  ids.reserve(runs.size());
  struct erase_slots {
    blob_slots& s;
    std::vector<std::uint64_t>& ids;
    ~erase_slots() {
      for (auto id : ids) s.erase(id);
    }
  } guard{shared_->slots, ids};
  for (const auto& r : runs) {
    r->group = group;
    ids.push_back(shared_->slots.put(r));
    if (auto t = sys_->tell(head_, etl_blob{ids.back(), r->blob}); !t)
      r->finish(werr(errc::io, "the ETL chain does not take blob " + r->blob + ": " + t.error().message));
  }
  // Behind every member in each stage's mailbox: the load stage loads the group when it comes.
  if (auto t = sys_->tell(head_, etl_group_end{group}); !t)
    shared_->slots.fail_group(group, werr(errc::io, "the ETL chain does not take a group's end: " + t.error().message));
  for (std::size_t i = 0; i < runs.size(); ++i)
    if (auto e = runs[i]->wait()) out[i] = std::unexpected(std::move(*e));
  return out;
}

result<pipeline_outcome> etl_chain::run_in_memory(const dataset& d, std::string_view blob_name, std::string_view body,
                                                  std::string_view owner) {
  auto r = std::make_shared<blob_run>();
  r->record_id = std::string(blob_name);
  r->blob = std::string(blob_name);
  r->data = &d;
  // A non-null view marks the body as given (an empty blob is still a blob).
  r->body = body.data() ? body : std::string_view("", 0);
  r->owner = std::string(owner);
  if (auto x = run(r); !x) return std::unexpected(x.error());
  pipeline_outcome out;
  out.blob = r->blob;
  out.dataset = d.name;
  out.steps = std::move(r->steps);
  out.load = r->load;
  return out;
}

} // namespace shoal::workers::etl
