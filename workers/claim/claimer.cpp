#include "workers/claim/claimer.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <future>
#include <map>
#include <set>

namespace shoal::workers {

using namespace std::chrono;

struct lease_keeper::state {
  std::function<steady_clock::time_point()> steady_now;
  mutable std::mutex mu;               // serialises writes of this record
  claimed_record rec;                  // guarded by mu
  std::string id;                      // immutable copy for handle::id()
  std::string payload;                 // immutable copy for handle::payload()
  std::string partition_key;           // immutable copy for handle::partition_key()
  std::atomic<std::int64_t> deadline_ns{0}; // steady time since epoch
  std::atomic<bool> lost{false};
  std::atomic<bool> finished{false};
  steady_clock::time_point last_renew;   // guarded by mu
  steady_clock::time_point last_attempt; // guarded by mu
  bool renew_failing = false;            // guarded by mu
  bool lost_reported = false;            // guarded by lease_keeper::mu_

  steady_clock::time_point now() const { return steady_now ? steady_now() : steady_clock::now(); }
  bool is_lost() const noexcept {
    return lost.load() || now().time_since_epoch().count() >= deadline_ns.load();
  }
  void set_deadline(steady_clock::time_point d) {
    deadline_ns.store(duration_cast<steady_clock::duration>(d.time_since_epoch()).count());
  }
};

const std::string& lease_keeper::handle::id() const noexcept { return s_->id; }
const std::string& lease_keeper::handle::payload() const noexcept { return s_->payload; }
claimed_record lease_keeper::handle::record() const {
  std::lock_guard lock(s_->mu);
  return s_->rec;
}
bool lease_keeper::handle::lost() const noexcept { return !s_ || s_->is_lost(); }
steady_clock::time_point lease_keeper::handle::deadline() const noexcept {
  if (!s_) return {};
  return steady_clock::time_point(steady_clock::duration(s_->deadline_ns.load()));
}
const std::string& lease_keeper::handle::partition_key() const noexcept { return s_->partition_key; }

lease_keeper::lease_keeper(work_table table, lease_keeper_options opts, lost_fn on_lost)
    : table_(std::move(table)), opts_(opts), on_lost_(std::move(on_lost)) {}

lease_keeper::~lease_keeper() { stop(); }

steady_clock::time_point lease_keeper::now() const { return table_.clock().steady_now(); }

lease_keeper::handle lease_keeper::hold(claimed_record r) {
  auto s = std::make_shared<state>();
  s->steady_now = table_.options().steady_now;
  s->id = r.id;
  s->payload = r.payload;
  s->partition_key = r.partition_key;
  s->set_deadline(r.deadline);
  s->last_renew = now();
  s->rec = std::move(r);
  {
    std::lock_guard lock(mu_);
    held_.push_back(s);
  }
  cv_.notify_all();
  return handle(std::move(s));
}

std::vector<lease_keeper::handle> lease_keeper::hold(std::vector<claimed_record> records) {
  std::vector<handle> out;
  out.reserve(records.size());
  for (auto& r : records) out.push_back(hold(std::move(r)));
  return out;
}

void lease_keeper::finish(const std::shared_ptr<state>& s) {
  s->finished.store(true);
  std::lock_guard lock(mu_);
  std::erase(held_, s);
}

void lease_keeper::mark_lost(const std::shared_ptr<state>& s, const error& e) {
  s->lost.store(true);
  bool report = false;
  {
    std::lock_guard lock(mu_);
    if (!s->lost_reported) {
      s->lost_reported = true;
      report = true;
    }
    std::erase(held_, s);
  }
  if (report && on_lost_) {
    claimed_record copy;
    {
      std::unique_lock lock(s->mu, std::try_to_lock);
      copy = lock.owns_lock() ? s->rec : claimed_record{};
      if (!lock.owns_lock()) copy.id = s->id;
    }
    on_lost_(copy, e);
  }
}

namespace {
error not_held(const std::string& id) {
  return error{errc::invalid_argument, "record '" + id + "' is no longer held (completed, failed, released or lost)",
               storage::errc::invalid_argument, 0};
}
} // namespace

result<void> lease_keeper::complete(const handle& h) {
  if (!h) return std::unexpected(not_held("?"));
  std::lock_guard lock(h.s_->mu);
  if (h.s_->finished.load()) return std::unexpected(not_held(h.s_->id));
  auto r = table_.complete(h.s_->rec);
  if (r || r.error().code == errc::lease_lost || r.error().code == errc::not_found) {
    if (!r) h.s_->lost.store(true);
    finish(h.s_);
  }
  return r;
}

std::vector<result<void>> lease_keeper::complete_many(std::span<const handle> hs) {
  std::vector<result<void>> out(hs.size());
  // One partition at a time, holding only that partition's records: a batch spanning many
  // partitions takes one transaction each, and the records waiting for a later one stay free
  // for renew_due (it try_locks) instead of going unrenewed for the whole batch.
  std::map<std::string_view, std::vector<std::size_t>> by_partition;
  for (std::size_t i = 0; i < hs.size(); ++i) {
    if (!hs[i])
      out[i] = std::unexpected(not_held("?"));
    else
      by_partition[hs[i].s_->partition_key].push_back(i);
  }
  for (auto& [pk, order] : by_partition) {
    std::vector<std::unique_lock<std::mutex>> locks;
    std::vector<claimed_record*> recs;
    std::vector<std::size_t> idx;
    // Lock in address order: renew_due only try_locks, so this cannot deadlock with it.
    std::sort(order.begin(), order.end(), [&](auto a, auto b) { return hs[a].s_.get() < hs[b].s_.get(); });
    for (auto i : order) {
      if (!locks.empty() && locks.back().mutex() == &hs[i].s_->mu) { // same handle twice
        out[i] = std::unexpected(not_held(hs[i].s_->id));
        continue;
      }
      locks.emplace_back(hs[i].s_->mu);
      if (hs[i].s_->finished.load()) {
        out[i] = std::unexpected(not_held(hs[i].s_->id));
        continue;
      }
      recs.push_back(&hs[i].s_->rec);
      idx.push_back(i);
    }
    auto res = table_.complete_many(recs);
    for (std::size_t k = 0; k < idx.size(); ++k) {
      const auto& s = hs[idx[k]].s_;
      if (res[k] || res[k].error().code == errc::lease_lost || res[k].error().code == errc::not_found) {
        if (!res[k]) s->lost.store(true);
        finish(s);
      }
      out[idx[k]] = std::move(res[k]);
    }
  }
  return out;
}

result<record_status> lease_keeper::fail(const handle& h, std::string_view error_text) {
  if (!h) return std::unexpected(not_held("?"));
  std::lock_guard lock(h.s_->mu);
  if (h.s_->finished.load()) return std::unexpected(not_held(h.s_->id));
  auto r = table_.fail(h.s_->rec, error_text);
  if (r || r.error().code == errc::lease_lost || r.error().code == errc::not_found) finish(h.s_);
  return r;
}

result<void> lease_keeper::release(const handle& h, bool count_attempt) {
  if (!h) return std::unexpected(not_held("?"));
  std::lock_guard lock(h.s_->mu);
  if (h.s_->finished.load()) return std::unexpected(not_held(h.s_->id));
  auto r = table_.release(h.s_->rec, count_attempt);
  if (r || r.error().code == errc::lease_lost || r.error().code == errc::not_found) finish(h.s_);
  return r;
}

std::size_t lease_keeper::release_all() {
  std::vector<std::shared_ptr<state>> all;
  {
    std::lock_guard lock(mu_);
    all = held_;
  }
  std::size_t n = 0;
  for (auto& s : all)
    if (release(handle(s), false)) ++n;
  return n;
}

void lease_keeper::renew_due() {
  std::vector<std::shared_ptr<state>> all;
  {
    std::lock_guard lock(mu_);
    all = held_;
  }
  const auto t = now();
  // A partition with a record due is renewed as a whole: every held record of it past half its
  // renew interval joins the same transaction, so records claimed at different moments fall
  // into step instead of costing one request each.
  std::set<std::string> due_partitions;
  for (auto& s : all) {
    if (s->finished.load() || s->is_lost()) continue;
    std::unique_lock lock(s->mu, std::try_to_lock);
    if (!lock.owns_lock()) continue;
    const bool is_due = s->renew_failing ? t - s->last_attempt >= opts_.retry_interval
                                         : t - s->last_renew >= opts_.renew_interval;
    if (is_due) due_partitions.insert(s->partition_key);
  }
  std::vector<std::shared_ptr<state>> due;
  std::vector<std::unique_lock<std::mutex>> locks;
  std::vector<claimed_record*> recs;
  for (auto& s : all) {
    if (s->finished.load()) continue;
    if (s->is_lost()) {
      claim_counters::add(table_.counters().local_expiries);
      mark_lost(s, error{errc::lease_lost, "record '" + s->id + "': lease deadline passed before a renewal succeeded; stop working on it",
                         storage::errc::timeout, 0});
      continue;
    }
    if (!due_partitions.contains(s->partition_key)) continue;
    std::unique_lock lock(s->mu, std::try_to_lock);
    if (!lock.owns_lock() || s->finished.load()) continue; // a worker is writing it right now
    const bool is_due = s->renew_failing ? t - s->last_attempt >= opts_.retry_interval
                                         : t - s->last_renew >= opts_.renew_interval / 2;
    if (!is_due) continue;
    s->last_attempt = t;
    locks.push_back(std::move(lock));
    due.push_back(s);
    recs.push_back(&s->rec);
  }
  if (recs.empty()) return;
  auto res = table_.renew_many(recs);
  for (std::size_t i = 0; i < due.size(); ++i) {
    auto& s = due[i];
    if (res[i]) {
      s->set_deadline(s->rec.deadline);
      s->last_renew = s->last_attempt;
      s->renew_failing = false;
    } else if (res[i].error().code == errc::lease_lost || res[i].error().code == errc::not_found) {
      locks[i].unlock();
      mark_lost(s, res[i].error());
    } else {
      s->renew_failing = true;
      spdlog::warn("lease_keeper: renewing record '{}' failed: {}", s->id, res[i].error().describe());
    }
  }
  locks.clear();
  // Re-check deadlines right away: a failed renewal may have run past one.
  for (auto& s : due) {
    if (!s->finished.load() && !s->lost.load() && s->is_lost()) {
      claim_counters::add(table_.counters().local_expiries);
      mark_lost(s, error{errc::lease_lost, "record '" + s->id + "': lease deadline passed before a renewal succeeded; stop working on it",
                         storage::errc::timeout, 0});
    }
  }
}

void lease_keeper::start() {
  std::lock_guard lock(mu_);
  if (running_) return;
  running_ = true;
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (running_) {
      lock.unlock();
      renew_due();
      lock.lock();
      // Wake at the earliest of: a renewal due, a retry due, a deadline; at least every
      // retry_interval so deadlines are noticed promptly.
      auto wait = std::min(opts_.retry_interval, opts_.renew_interval);
      cv_.wait_for(lock, wait, [this] { return !running_; });
    }
  });
}

void lease_keeper::stop() {
  {
    std::lock_guard lock(mu_);
    if (!running_) return;
    running_ = false;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::size_t lease_keeper::held() const {
  std::lock_guard lock(mu_);
  return held_.size();
}

result<drain_stats> drain(const work_table& table, std::string_view queue, std::span<const std::uint32_t> shards,
                          std::string_view owner, const drain_options& opts,
                          const std::function<void(const claimed_record&)>& on_completed) {
  drain_stats st;
  // Completions of batch k run on a helper thread while batch k+1 is being claimed, as a
  // worker's completions overlap its claims; at most one completion batch is in flight.
  std::future<void> completing;
  auto complete_async = [&](std::vector<claimed_record> batch) {
    return std::async(std::launch::async, [&table, &st, &on_completed, batch = std::move(batch)]() mutable {
      std::vector<claimed_record*> ptrs;
      for (auto& r : batch) ptrs.push_back(&r);
      auto res = table.complete_many(ptrs);
      for (std::size_t i = 0; i < res.size(); ++i) {
        if (res[i]) {
          ++st.completed;
          if (on_completed) on_completed(batch[i]);
        } else if (res[i].error().code == errc::lease_lost) {
          ++st.lease_lost;
        } else {
          ++st.errors;
          spdlog::warn("drain: completing '{}' failed: {}", batch[i].id, res[i].error().describe());
        }
      }
    });
  };
  auto wait_completing = [&] {
    if (completing.valid()) completing.get();
  };
  auto idle_since = steady_clock::now();
  for (;;) {
    auto got = table.claim(queue, shards, owner, opts.batch);
    if (!got) {
      wait_completing();
      return std::unexpected(got.error());
    }
    if (got->empty()) {
      wait_completing();
      auto open = table.has_open(queue);
      if (!open) return std::unexpected(open.error());
      if (!*open) return st;
      if (opts.max_idle.count() > 0 && steady_clock::now() - idle_since > opts.max_idle) return st;
      std::this_thread::sleep_for(opts.idle_poll);
      continue;
    }
    idle_since = steady_clock::now();
    st.claimed += got->size();
    wait_completing();
    completing = complete_async(std::move(*got));
  }
}

} // namespace shoal::workers
