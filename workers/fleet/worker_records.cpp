// The worker's record path: lanes that run the job on claimed records, the completer that
// batches their completions, and what happens to a record whose lease is lost or whose job broke.
#include "workers/fleet/worker_internal.hpp"

namespace shoal::workers::fleet {

// -- lease loss ----------------------------------------------------------------------------
// From the keeper's thread: stop the lane running that record at once.
// A lane running one record stops at once; a lane running a batch stops when every record of
// the batch is lost (the job sees which through job_context::record_lost).
void worker::impl::on_lost(const claimed_record& rec, const error& e) {
  std::lock_guard lock(mu);
  for (auto& l : lanes) {
    if (!l->busy || l->stopped_for_loss)
      continue;
    bool mine = false, all_lost = true;
    for (const auto& h : l->held) {
      mine = mine || h.id() == rec.id;
      all_lost = all_lost && h.lost();
    }
    if (!mine)
      continue;
    if (all_lost) {
      l->stopped_for_loss = true;
      l->stop.request_stop();
      spdlog::warn("worker {}: lease of record '{}' lost ({}); stopping its job", opts.slot, rec.id,
                   e.describe());
    } else {
      spdlog::warn("worker {}: lease of record '{}' lost ({}); the rest of its batch goes on",
                   opts.slot, rec.id, e.describe());
    }
  }
}

void worker::impl::release_uncounted(const lease_keeper::handle& h, std::string_view why) {
  auto r = with_retries(h, [&] { return keeper->release(h, false); });
  if (r) {
    add(released);
    spdlog::debug("worker {}: record '{}' released ({})", opts.slot, h.id(), why);
  } else if (r.error().code == errc::lease_lost || r.error().code == errc::not_found) {
    spdlog::debug("worker {}: record '{}' not released: {}", opts.slot, h.id(), r.error().describe());
  } else {
    spdlog::warn("worker {}: record '{}' could not be released ({}); its lease will expire",
                 opts.slot, h.id(), r.error().describe());
  }
}

// -- lanes ---------------------------------------------------------------------------------
void worker::impl::broken(const lease_keeper::handle& h, const error& e, std::string_view job_name) {
  spdlog::error("worker {}: the {} job is broken on record '{}': {}", opts.slot, job_name, h.id(),
                e.describe());
  release_uncounted(h, "job broken");
  {
    std::lock_guard lock(mu);
    if (!fatal)
      fatal = e;
  }
  drain(milliseconds(0), "job broken");
}

// Runs the lane's job on `hs`: run() on the one record when the job's max_batch() is 1,
// else run_batch() on the 1..max_batch records taken together (even when only one was ready).
void worker::impl::process(lane& l, const std::vector<lease_keeper::handle>& hs, std::stop_token stop) {
  std::vector<claimed_record> recs;
  recs.reserve(hs.size());
  for (const auto& h : hs)
    recs.push_back(h.record());
  job_context ctx;
  ctx.stop = stop;
  ctx.lease_deadline = [&hs] {
    auto d = hs.front().deadline();
    for (const auto& h : hs)
      d = std::min(d, h.deadline());
    return d;
  };
  ctx.lease_lost = [&hs] {
    return std::any_of(hs.begin(), hs.end(), [](const auto& h) { return h.lost(); });
  };
  const auto t0 = clock_type::now();
  std::vector<job_result> results;
  if (max_batch == 1) {
    result<job_result> r = [&]() -> result<job_result> {
      try {
        return l.job->run(recs.front(), ctx);
      } catch (const std::exception& e) { // a job must not throw; treat it as broken
        return fail(errc::io, std::string("job threw: ") + e.what());
      }
    }();
    if (!r)
      return broken(hs.front(), r.error(), l.job->name());
    results.push_back(*std::move(r));
  } else {
    ctx.record_lost = [&hs](std::size_t i) { return i < hs.size() && hs[i].lost(); };
    std::vector<claimed_record*> ptrs;
    for (auto& r : recs)
      ptrs.push_back(&r);
    result<std::vector<job_result>> r = [&]() -> result<std::vector<job_result>> {
      try {
        return l.job->run_batch(ptrs, ctx);
      } catch (const std::exception& e) {
        return fail(errc::io, std::string("job threw: ") + e.what());
      }
    }();
    if (!r || r->size() != hs.size()) {
      const error e = !r ? r.error()
                         : error{errc::io, "run_batch returned " + std::to_string(r->size()) + " results for " +
                                               std::to_string(hs.size()) + " records", storage::errc::invalid_argument, 0};
      for (std::size_t i = 1; i < hs.size(); ++i)
        release_uncounted(hs[i], "job broken");
      return broken(hs.front(), e, l.job->name());
    }
    results = *std::move(r);
  }
  const auto ms = duration_cast<milliseconds>(clock_type::now() - t0).count();
  {
    std::lock_guard lock(mu);
    const double per = static_cast<double>(ms) / static_cast<double>(hs.size());
    job_ms_ewma = job_ms_ewma < 0 ? per : 0.8 * job_ms_ewma + 0.2 * per;
  }
  for (std::size_t i = 0; i < hs.size(); ++i)
    settle(hs[i], recs[i], std::move(results[i]), hs[i].lost(), ms);
}

void worker::impl::lane_loop(std::size_t i) {
  lane& l = *lanes[i];
  for (;;) {
    std::vector<lease_keeper::handle> hs;
    std::stop_token token;
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return !ready.empty() || draining; });
      if (ready.empty() || draining) // draining: the control thread releases what is ready
        return;
      while (!ready.empty() && hs.size() < max_batch) {
        hs.push_back(std::move(ready.front()));
        ready.pop_front();
      }
      l.busy = true;
      l.held = hs;
      l.stopped_for_loss = false;
      l.stop = std::stop_source();
      token = l.stop.get_token();
    }
    cv.notify_all(); // the claimer tops up `ready`
    process(l, hs, token);
    {
      std::lock_guard lock(mu);
      l.busy = false;
      l.held.clear();
    }
    cv.notify_all();
  }
}

void worker::impl::completer_loop() {
  for (;;) {
    std::vector<to_complete> batch;
    {
      std::unique_lock lock(cmu);
      ccv.wait(lock, [&] { return !completing.empty() || completer_stop; });
      if (completing.empty())
        return;
      ccv.wait_until(lock, clock_type::now() + complete_linger, [&] {
        return completing.size() >= complete_full || completer_stop || completer_flush.load();
      });
      batch.swap(completing);
      completing_busy = batch.size();
    }
    std::vector<lease_keeper::handle> hs;
    hs.reserve(batch.size());
    for (const auto& c : batch)
      hs.push_back(c.h);
    add(complete_calls);
    auto res = keeper->complete_many(hs);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto r = std::move(res[i]);
      const auto& h = batch[i].h;
      if (!r && r.error().code != errc::lease_lost && r.error().code != errc::not_found &&
          r.error().code != errc::invalid_argument && !h.lost())
        r = with_retries(h, [&] { return keeper->complete(h); }); // storage trouble: one by one
      if (r) {
        add(done);
        spdlog::debug("worker {}: record '{}' done ({} ms): {}", opts.slot, h.id(), batch[i].ms,
                      batch[i].detail);
      } else if (r.error().code == errc::lease_lost || r.error().code == errc::not_found) {
        add(lease_lost);
        spdlog::warn("worker {}: record '{}' ran but its completion was refused: {}", opts.slot,
                     h.id(), r.error().describe());
      } else {
        spdlog::warn("worker {}: record '{}' ran but could not be completed: {}", opts.slot,
                     h.id(), r.error().describe());
        if (h.lost())
          add(lease_lost);
      }
    }
    {
      std::lock_guard lock(cmu);
      completing_busy = 0;
    }
    ccv.notify_all();
    // The records written left the keeper (held() fell): the claimer may be waiting on its
    // high-water mark. Taking mu orders this with its check, so the wake-up cannot be lost.
    { std::lock_guard lock(mu); }
    cv.notify_all();
  }
}

void worker::impl::stop_completer() {
  {
    std::lock_guard lock(cmu);
    completer_stop = true;
  }
  ccv.notify_all();
  if (completer.joinable())
    completer.join();
}

} // namespace shoal::workers::fleet
