// The worker's claiming: the claimer loop (how many records to hold ready, claims per assigned
// shard), the sweeper of done records, and the set-up loop that waits for the work table.
#include "workers/fleet/worker_internal.hpp"

namespace shoal::workers::fleet {

// -- claimer -------------------------------------------------------------------------------
// How many claimed records to keep ready for the lanes. A claim costs one query and one
// transaction whatever its size, so fast jobs are fed in big batches (up to 2 × claim_batch);
// slow jobs get only what the lanes can start well within a lease (a quarter of it), so
// records do not wait on one worker while another is idle. Until the first run is timed:
// one batch per lane.
std::size_t worker::impl::ready_target_locked() const {
  const std::size_t per_run = lanes.size() * max_batch;
  if (job_ms_ewma < 0)
    return per_run;
  const double lease_quarter_ms = static_cast<double>(opts.cfg.work.lease_ms) / 4.0;
  const double per_lane = lease_quarter_ms / std::max(job_ms_ewma, 0.05);
  const auto by_lease = static_cast<std::size_t>(std::max(1.0, per_lane) * static_cast<double>(lanes.size()));
  return std::clamp<std::size_t>(by_lease, per_run, std::max<std::size_t>(per_run, 2 * opts.cfg.work.claim_batch));
}

// The fallback poll (every assigned shard) backs off from poll_min to poll_max while the
// shards are empty; work.available for one shard claims from that shard alone without
// touching the backoff (issue 20: idle workers polling their shards at a fixed rate were a
// third of flights-20k's storage requests). A claim that came back short means the shards
// visited are drained: the next look is the backed-off poll or a wake-up, not an immediate
// re-poll — except after a failure of ours, whose retry nobody announces.
void worker::impl::claimer_loop() {
  const auto poll_min = milliseconds(opts.cfg.worker.poll_min_ms);
  const auto poll_max = milliseconds(opts.cfg.worker.poll_max_ms);
  // Under a supervisor the first poll waits (≤ 1 s) for ctl.assign, which follows the hello
  // at once: polling every shard of the queue before it costs a query and a meta-row read per
  // shard that is not ours. Alone, or when no assignment comes, every shard.
  // Linked to a supervisor, new work is announced (work.available), so an empty fallback poll
  // backs off four times as fast; alone, the backoff doubles.
  const bool linked = !opts.supervisor.empty();
  if (linked) {
    std::unique_lock lock(mu);
    if (opts.await_assign) // the supervisor is joining the fleet: not a shard before it says which
      cv.wait(lock, [&] { return assigned || draining; });
    else
      cv.wait_for(lock, seconds(1), [&] { return assigned || draining; });
  }
  const int backoff_factor = linked ? 4 : 2;
  auto backoff = poll_min;
  auto next_poll = clock_type::now();
  std::uint64_t errors_in_row = 0;
  // A supervised worker claims from the shards it is given: its supervisor answers the hello
  // with a ctl.assign at once, so wait for that (one heartbeat interval at most) instead of
  // claiming from every shard meanwhile, racing their owners on other hosts (bench "scale").
  if (!opts.supervisor.empty()) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, milliseconds(opts.cfg.fleet.heartbeat_interval_ms),
                [&] { return assign_epoch != 0 || draining; });
  }
  for (;;) {
    std::size_t want = 0;
    std::vector<std::uint32_t> from;
    bool full = false; // a poll of every assigned shard (else: the shards woken)
    bool no_shards_now = false; // ctl.assign said: no shard for this host
    {
      std::unique_lock lock(mu);
      for (;;) {
        if (draining)
          return;
        const std::size_t target = ready_target_locked();
        // Claim when the ready records would not cover the lanes for one more round: half
        // the target (at least one run per lane) is the low-water mark.
        const std::size_t low = std::max(lanes.size() * max_batch, target / 2);
        // The high-water mark bounds every record this worker holds, not only the ready ones:
        // done records waiting for the completer count too. Without it a fast job drains
        // `ready` at once and the claimer kept claiming while completions fell behind (a slow
        // or contended table), until the completer's backlog took longer to write than a lease
        // lasts: leases ran out, other workers re-claimed, completions were refused, and eight
        // noop workers ended up renewing 2,557 records and completing none (bench "scale").
        const std::size_t high = target + lanes.size() * max_batch + complete_full;
        const std::size_t held = keeper->held();
        std::size_t idle_lanes = 0;
        for (const auto& l : lanes)
          idle_lanes += l->busy ? 0 : 1;
        if (held >= high || (ready.size() >= low && !(idle_lanes > 0 && ready.empty()))) {
          cv.wait(lock); // the completer, a lane or a control message wakes us
          continue;
        }
        if (wake || !wake_shards.empty() || clock_type::now() >= next_poll) {
          want = std::min(target > ready.size() ? target - ready.size() : 0, high - held);
          break;
        }
        cv.wait_until(lock, next_poll);
      }
      no_shards_now = no_shards;
      const std::vector<std::uint32_t> none;
      const auto& mine = no_shards ? none : shards.empty() ? all_shards : shards;
      full = wake || clock_type::now() >= next_poll;
      if (full) {
        from = mine;
      } else {
        for (auto sh : wake_shards)
          if (std::find(mine.begin(), mine.end(), sh) != mine.end())
            from.push_back(sh);
      }
      if (wake)
        backoff = poll_min; // a wake-up for every shard means work: poll eagerly again afterwards
      wake = false;
      wake_shards.clear();
    }
    if (want > 0 && no_shards_now) {
      next_poll = clock_type::now() + poll_max; // no shard: wait for a ctl.assign (it wakes us)
      continue;
    }
    if (want == 0 || from.empty())
      continue;
    {
      // The set-up thread reads the server clock, then the shards' meta rows: a claim before
      // it has would send the same reads again, in a row, before its own (issue 19). Wait for
      // the clock and for the rows of these shards being read; a row not started yet the
      // claim reads itself.
      std::unique_lock lock(mu);
      cv.wait(lock, [&] {
        return draining || setup_done ||
               (clock_tried && std::none_of(from.begin(), from.end(), [&](auto sh) { return prep_in_flight.contains(sh); }));
      });
      if (draining)
        continue;
    }
    add(claim_calls);
    const auto claim_t0 = clock_type::now();
    auto got = table.claim(queue, from, owner, want);
    if (spdlog::should_log(spdlog::level::debug))
      spdlog::debug("worker {}: claim of up to {} from {} shard(s) ({}): {} in {} ms", opts.slot, want, from.size(),
                    full ? "poll" : "woken", got ? std::to_string(got->size()) : got.error().describe(),
                    duration_cast<milliseconds>(clock_type::now() - claim_t0).count());
    bool retry;
    {
      std::lock_guard lock(mu);
      retry = std::exchange(retry_soon, false);
    }
    if (retry)
      backoff = poll_min;
    if (!got) {
      add(storage_errors);
      ++errors_in_row;
      if (errors_in_row == 1 || errors_in_row % 20 == 0)
        spdlog::warn("worker {}: claim from queue '{}' failed ({} in a row): {}", opts.slot, queue,
                     errors_in_row, got.error().describe());
      if (!full) { // the woken shards are still to be looked at: the next poll covers them
        next_poll = std::min(next_poll, clock_type::now() + backoff);
        continue;
      }
      next_poll = clock_type::now() + backoff;
      backoff = std::min(backoff * 2, poll_max);
      continue;
    }
    errors_in_row = 0;
    if (got->size() < want) {
      // Drained (or empty): wait for the fallback poll or a wake-up. A targeted claim leaves
      // the fallback schedule as it was; a full poll moves it and backs off.
      if (!got->empty() && opts.supervisor.empty())
        backoff = poll_min; // alone, no wake-up will come: a trickle of work keeps the poll short
      if (full || retry) {
        next_poll = clock_type::now() + backoff;
        backoff = std::min(backoff * backoff_factor, poll_max);
      }
      if (retry)
        next_poll = std::min(next_poll, clock_type::now() + poll_min);
    } else {
      // A full batch: there may be more; claim again (from the same shards) as soon as the
      // lanes need more.
      backoff = poll_min;
      if (full) {
        next_poll = clock_type::now();
      } else {
        std::lock_guard lock(mu);
        wake_shards.insert(from.begin(), from.end());
      }
    }
    if (got->empty())
      continue;
    add(claimed, got->size());
    auto hs = keeper->hold(std::move(*got));
    std::vector<lease_keeper::handle> late;
    {
      std::lock_guard lock(mu);
      if (draining)
        late = std::move(hs); // the drain began during the claim: give these back
      else
        for (auto& h : hs)
          ready.push_back(std::move(h));
    }
    cv.notify_all();
    for (auto& h : late)
      release_uncounted(h, "draining");
    if (!late.empty())
      return;
  }
}

// -- sweeper -------------------------------------------------------------------------------
// Every max(done_retention_ms / 4, 2 s) (at most 6 h), removes the done records of this
// worker's shards older than the retention (work_table::sweep), first after one interval.
void worker::impl::sweeper_loop() {
  const auto interval = std::clamp<milliseconds>(milliseconds(opts.cfg.work.done_retention_ms / 4), seconds(2), hours(6));
  auto next = clock_type::now() + interval;
  for (;;) {
    std::vector<std::uint32_t> from;
    {
      std::unique_lock lock(mu);
      if (cv.wait_until(lock, next, [&] { return draining || drain_requested; }))
        return;
      if (no_shards || (opts.await_assign && !assigned)) {
        next = clock_type::now() + interval; // no shard of ours to sweep (yet)
        continue;
      }
      from = shards.empty() ? all_shards : shards;
    }
    auto r = table.sweep(queue, from, milliseconds(opts.cfg.work.done_retention_ms));
    if (r) {
      add(swept, r->removed);
      if (r->removed > 0)
        spdlog::info("worker {}: removed {} done record(s) older than {} ms from {} shard(s)", opts.slot,
                     r->removed, opts.cfg.work.done_retention_ms, from.size());
    } else {
      spdlog::warn("worker {}: sweeping done records failed: {}", opts.slot, r.error().describe());
    }
    next = clock_type::now() + interval;
  }
}

// Under a supervisor nothing waits for this (issue 19: a joining host's first claim) but the
// claims, for what they would otherwise read themselves. The server clock first; with
// opts.create_table, a clock read that finds no table makes the table and its payload
// container, and the reads are retried (200 ms doubling to 5 s) until the clock is known or
// the worker drains.
void worker::impl::setup_loop() {
  const auto t0 = clock_type::now();
  result<void> clock = table.sync_clock();
  for (std::uint32_t attempt = 1; !clock && opts.create_table; ++attempt) {
    if (clock.error().code == errc::not_found) {
      if (auto r = table.create_if_missing(); r) {
        spdlog::info("worker {}: work table '{}' created", opts.slot, table.table().name());
        clock = table.sync_clock();
        continue;
      } else {
        clock = std::unexpected(r.error());
      }
    }
    add(storage_errors);
    const auto delay = retry_delay(attempt, milliseconds(200), milliseconds(5'000), 0.5);
    spdlog::warn("worker {}: work table '{}': {} (retrying in {} ms)", opts.slot, table.table().name(),
                 clock.error().describe(), delay.count());
    {
      std::unique_lock lock(mu);
      if (cv.wait_for(lock, delay, [&] { return draining || drain_requested; }))
        return;
    }
    clock = table.sync_clock();
  }
  // Then what the first claim would otherwise read itself, in a row, after the assignment:
  // meta rows, 4 at once. Until the ctl.assign, of every shard of the queue; once it came,
  // only of the assigned shards left: the rest would only queue ahead of the claims at a busy
  // storage account.
  if (!clock)
    spdlog::warn("worker {}: storage clock not known yet: {}", opts.slot, clock.error().describe());
  {
    std::lock_guard lock(mu);
    clock_tried = true;
  }
  cv.notify_all();
  if (!clock)
    return;
  auto next_shard = [&]() -> std::optional<std::uint32_t> {
    std::lock_guard lock(mu);
    if (draining || drain_requested || (assigned && no_shards))
      return std::nullopt;
    const auto& wanted = assigned && !shards.empty() ? shards : all_shards;
    for (auto sh : wanted)
      if (prep_started.insert(sh).second) {
        prep_in_flight.insert(sh);
        return sh;
      }
    return std::nullopt;
  };
  std::atomic<bool> failed{false};
  auto read_rows = [&] {
    while (auto sh = next_shard()) {
      const std::uint32_t one[] = {*sh};
      auto r = table.prepare(queue, one);
      if (r)
        prepared_shards.fetch_add(1);
      else if (!failed.exchange(true))
        spdlog::warn("worker {}: shard meta row not read ahead (the claim reads it): {}", opts.slot,
                     r.error().describe());
      {
        std::lock_guard lock(mu);
        prep_in_flight.erase(*sh);
      }
      cv.notify_all();
    }
  };
  {
    std::vector<std::jthread> pool;
    for (int i = 0; i < 3; ++i)
      pool.emplace_back(read_rows);
    read_rows();
  }
  spdlog::info("worker {}: storage prepared in {} ms: server clock, {} of {} shard meta row(s)", opts.slot,
               duration_cast<milliseconds>(clock_type::now() - t0).count(), prepared_shards.load(),
               all_shards.size());
}

} // namespace shoal::workers::fleet
