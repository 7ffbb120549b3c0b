// The work table's lease arithmetic and held records: the server clock estimate, local lease
// deadlines, and renew/complete/fail/release with 412 resolution (SCHEMA.md "Protocol").

#include "workers/claim/work_table_internal.hpp"

#include "storage/encoding.hpp"

namespace shoal::workers {

using namespace std::chrono;

// -- server clock and leases -----------------------------------------------------------------------

void work_table::impl::observe(sys_tp date, const std::string& etag, steady_tp sent, steady_tp received) const {
  if (date.time_since_epoch().count() > 0) clock.observe(date, sent, received, seconds(1));
  if (auto t = storage::etag_time(etag)) clock.observe(*t, sent, received, milliseconds(1)); // JS Date: ms
}

// The local deadline of a lease `lease_until` written with a request sent at `sent`: the
// server's time at `sent` was at most upper_bound_at(sent) (the tightest bound known now,
// which may include samples from the response itself), so the lease lasts at least
// lease_until − upper from `sent`; minus the safety margin.
steady_tp work_table::impl::deadline_for(steady_tp sent, sys_tp lease_until) const {
  auto upper = clock.upper_bound_at(sent);
  if (!upper) return sent; // cannot happen once a sample exists; treat the lease as gone
  return sent + duration_cast<steady_clock::duration>(lease_until - *upper) - margin;
}

result<sys_tp> work_table::impl::server_now() const {
  if (auto n = clock.now()) return *n;
  if (auto ok = sync(); !ok) return std::unexpected(ok.error());
  if (auto n = clock.now()) return *n;
  return workers::fail(errc::storage, "the storage service sent no Date header: server time unknown");
}

result<void> work_table::impl::sync() const {
  storage::table_query q;
  q.filter = table_filter::eq("PartitionKey", std::string("~clock"));
  q.page_size = 1;
  q.select = {"PartitionKey"};
  auto sent = steady_now();
  auto page = table.query_page(q);
  auto recv = steady_now();
  if (!page) return std::unexpected(storage_error(page.error(), "reading the server clock"));
  observe(page->server_time, {}, sent, recv);
  return {};
}

// -- held records: the changes -------------------------------------------------------------------

error work_table::impl::lease_lost_error(const claimed_record& r, const table_entity& cur, bool is_ticket_row) const {
  claim_counters::add(counters.lease_lost);
  std::string st = str_prop(cur, p_status);
  if (st == s_open) st = "open";
  std::string msg = "record '" + r.id + "' of queue '" + r.queue + "': lease lost: claim gen " +
                    std::to_string(r.gen) + " by " + r.owner + " no longer holds it; it is now " + (st.empty() ? "unknown" : st);
  auto owner = str_prop(cur, p_owner);
  if (!owner.empty()) msg += " owned by " + owner;
  msg += " (gen " + std::to_string(int_prop(cur, p_gen)) + ")";
  if (!is_ticket_row && st == s_open) msg += ", under another ticket";
  error e;
  e.code = errc::lease_lost;
  e.message = std::move(msg);
  e.storage_code = storage::errc::precondition_failed;
  e.http_status = 412;
  return e;
}

// After a 412/404 (or an ambiguous failure) on a change of `r`: re-reads its ticket (and, when
// the ticket is gone, the record row). Returns true when we still hold it (r.etag refreshed:
// retry), false when the change is already applied (an earlier attempt landed), or
// lease_lost / not_found / storage.
result<bool> work_table::impl::resolve(claimed_record& r, change c) const {
  auto t = table.get(r.partition_key, r.ticket);
  if (t) {
    const bool ours = str_prop(*t, p_owner) == r.owner && int_prop(*t, p_gen) == r.gen;
    const auto st = str_prop(*t, p_status);
    if (ours && st == s_claimed) {
      r.etag = t->etag;
      return true;
    }
    if (ours && st == s_pending && c == change::release) {
      r.etag = t->etag;
      return false;
    }
    return std::unexpected(lease_lost_error(r, *t, true));
  }
  if (t.error().code != storage::errc::not_found)
    return std::unexpected(storage_error(t.error(), "re-reading the ticket of record '" + r.id + "'"));
  auto rec = table.get(r.partition_key, r.row_key);
  if (!rec) {
    if (rec.error().code == storage::errc::not_found)
      return workers::fail(errc::not_found, "record '" + r.id + "' of queue '" + r.queue + "' no longer exists (purged)");
    return std::unexpected(storage_error(rec.error(), "re-reading record '" + r.id + "'"));
  }
  const bool ours = str_prop(*rec, p_owner) == r.owner && int_prop(*rec, p_gen) == r.gen;
  const auto st = str_prop(*rec, p_status);
  if (ours && ((c == change::complete && st == s_done) || (c == change::fail_dead && st == s_dead))) return false;
  if (st == s_open && c == change::fail_pending) {
    const auto tk = str_prop(*rec, p_ticket);
    if (!tk.empty() && tk != r.ticket) {
      auto moved = table.get(r.partition_key, tk);
      if (moved && str_prop(*moved, p_owner) == r.owner && int_prop(*moved, p_gen) == r.gen && str_prop(*moved, p_status) == s_pending) {
        r.ticket = tk;
        r.etag = moved->etag;
        return false;
      }
      if (moved) return std::unexpected(lease_lost_error(r, *moved, true));
    }
  }
  return std::unexpected(lease_lost_error(r, *rec, false));
}

// The operations of change `c` of `r`, stamped at server time `now`. For fail_pending the new
// ticket's key is stored in `*new_ticket`.
std::vector<table_operation> work_table::impl::ops_for(const claimed_record& r, change c, sys_tp now, std::string_view error_text,
                                     bool count_attempt, std::string* new_ticket) const {
  std::vector<table_operation> ops;
  auto settle = [&](const std::string& status) {
    ops.push_back(del(r.partition_key, r.ticket, r.etag));
    table_entity rec = keys_of(r.partition_key, r.row_key);
    rec.set(p_status, status);
    rec.set(p_owner, r.owner);
    rec.set(p_gen, r.gen);
    rec.set(p_attempts, r.attempts);
    rec.set(p_ticket, std::string());
    rec.set(p_lease_until, tt(r.lease_until));
    rec.set(p_updated, tt(now));
    if (status == s_dead) rec.set(p_last_error, truncate_utf8(error_text, max_last_error_bytes));
    ops.push_back(op(table_operation_kind::merge, std::move(rec)));
  };
  switch (c) {
  case change::renew: {
    table_entity t = keys_of(r.partition_key, r.ticket);
    t.set(p_lease_until, tt(now + lease));
    t.set(p_updated, tt(now));
    ops.push_back(op(table_operation_kind::merge, std::move(t), r.etag));
    break;
  }
  case change::release: {
    table_entity t = keys_of(r.partition_key, r.ticket);
    t.set(p_status, s_pending);
    t.set(p_lease_until, epoch_tt());
    t.set(p_not_before, epoch_tt());
    t.set(p_attempts, static_cast<std::int32_t>(count_attempt ? r.attempts : std::max(0, r.attempts - 1)));
    t.set(p_updated, tt(now));
    ops.push_back(op(table_operation_kind::merge, std::move(t), r.etag));
    break;
  }
  case change::complete: settle(s_done); break;
  case change::fail_dead: settle(s_dead); break;
  case change::fail_pending: {
    auto delay = retry_delay(static_cast<std::uint32_t>(std::max(1, r.attempts)), milliseconds(opts.work.retry_base_ms),
                             milliseconds(opts.work.retry_max_ms), unit());
    table_entity src;
    if (!r.payload_blob.empty()) src.set(p_payload_blob, r.payload_blob);
    else src.set(p_payload, r.payload);
    src.set(p_payload_bytes, r.payload_bytes);
    auto t = make_ticket(r.partition_key, r.row_key, now + delay, s_pending, r.owner, r.gen, r.attempts, epoch_tt(),
                         truncate_utf8(error_text, max_last_error_bytes), src, now);
    if (t.row_key == r.ticket) t.row_key = ticket_key(now + delay + microseconds(1), r.row_key); // never the same key
    if (new_ticket) *new_ticket = t.row_key;
    table_entity rec = keys_of(r.partition_key, r.row_key);
    rec.set(p_ticket, t.row_key);
    rec.set(p_updated, tt(now));
    ops.push_back(del(r.partition_key, r.ticket, r.etag));
    ops.push_back(op(table_operation_kind::insert, std::move(t)));
    ops.push_back(op(table_operation_kind::merge, std::move(rec)));
    break;
  }
  }
  return ops;
}

void work_table::impl::after_success(claimed_record& r, change c, steady_tp sent, sys_tp now, const std::vector<std::string>& etags,
                   const std::string& new_ticket) const {
  switch (c) {
  case change::renew:
    if (!etags.empty() && !etags[0].empty()) r.etag = etags[0];
    r.lease_until = as_sys(tt(now + lease));
    r.deadline = deadline_for(sent, r.lease_until);
    claim_counters::add(counters.renewals);
    break;
  case change::release:
    if (!etags.empty() && !etags[0].empty()) r.etag = etags[0];
    claim_counters::add(counters.releases);
    break;
  case change::complete: claim_counters::add(counters.completions); break;
  case change::fail_pending:
    if (!new_ticket.empty()) r.ticket = new_ticket;
    if (etags.size() > 1 && !etags[1].empty()) r.etag = etags[1];
    claim_counters::add(counters.failures);
    break;
  case change::fail_dead: claim_counters::add(counters.dead_letters); break;
  }
}

// One change of one held record, with 412 resolution (bounded).
result<void> work_table::impl::change_one(claimed_record& r, change c, std::string_view error_text, bool count_attempt) const {
  if (r.ticket.empty())
    return workers::fail(errc::invalid_argument, "record '" + r.id + "': not a claim of the work table (no ticket)");
  for (int round = 0; round < 4; ++round) {
    auto sent = steady_now();
    auto now = server_now();
    if (!now) return std::unexpected(now.error());
    std::string new_ticket;
    auto ops = ops_for(r, c, *now, error_text, count_attempt, &new_ticket);
    auto res = run_alone(ops, request_counter(c));
    if (res.ok()) {
      after_success(r, c, sent, *now, *res.etags, new_ticket);
      return {};
    }
    if (!ticket_moved(res) && !res.maybe_landed) {
      if (c == change::renew) claim_counters::add(counters.renew_failures);
      return std::unexpected(storage_error(res.err, std::string(c == change::renew ? "renewing" : "updating") + " record '" + r.id + "'"));
    }
    auto again = resolve(r, c);
    if (!again) {
      if (c == change::renew && again.error().code != errc::lease_lost) claim_counters::add(counters.renew_failures);
      return std::unexpected(again.error());
    }
    if (!*again) { // already applied by an earlier attempt
      after_success(r, c, sent, *now, {}, {});
      return {};
    }
  }
  return workers::fail(errc::conflict, "record '" + r.id + "': the record kept changing under us");
}

// The same change for many records: one transaction per partition chunk; 412s and
// ambiguous failures resolved record by record with change_one.
std::vector<result<void>> work_table::impl::change_many(std::span<claimed_record* const> records, change c, bool count_attempt) const {
  std::vector<result<void>> out(records.size());
  std::map<std::string, std::vector<std::size_t>> groups;
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (records[i]->ticket.empty()) {
      out[i] = workers::fail(errc::invalid_argument, "record '" + records[i]->id + "': not a claim of the work table (no ticket)");
      continue;
    }
    groups[records[i]->partition_key].push_back(i);
  }
  for (auto& [pk, idx] : groups) {
    auto sent = steady_now();
    auto now = server_now();
    if (!now) {
      for (auto i : idx) out[i] = std::unexpected(now.error());
      continue;
    }
    std::vector<std::vector<table_operation>> changes;
    for (auto i : idx) changes.push_back(ops_for(*records[i], c, *now, {}, count_attempt, nullptr));
    auto res = apply_changes(changes, c == change::complete ? on_412::complete : on_412::resubmit, request_counter(c));
    for (std::size_t k = 0; k < idx.size(); ++k) {
      auto& r = *records[idx[k]];
      if (res[k].ok()) {
        after_success(r, c, sent, *now, *res[k].etags, {});
        out[idx[k]] = {};
      } else if (ticket_moved(res[k]) || res[k].maybe_landed) {
        // Re-read first (the ETag we hold may be stale): lost, already applied, or retry.
        auto again = resolve(r, c);
        if (!again) {
          if (c == change::renew && again.error().code != errc::lease_lost) claim_counters::add(counters.renew_failures);
          out[idx[k]] = std::unexpected(again.error());
        } else if (!*again) { after_success(r, c, sent, *now, {}, {}); out[idx[k]] = {}; }
        else out[idx[k]] = change_one(r, c, {}, count_attempt);
      } else if (res[k].err.retryable) {
        out[idx[k]] = change_one(r, c, {}, count_attempt);
      } else {
        if (c == change::renew) claim_counters::add(counters.renew_failures);
        out[idx[k]] = std::unexpected(storage_error(res[k].err, "updating record '" + r.id + "'"));
      }
    }
  }
  return out;
}

// -- held records: the public calls --------------------------------------------------------------

result<void> work_table::renew(claimed_record& r) const { return impl_->change_one(r, impl::change::renew, {}, false); }

std::vector<result<void>> work_table::renew_many(std::span<claimed_record* const> records) const {
  return impl_->change_many(records, impl::change::renew);
}

result<void> work_table::complete(claimed_record& r) const { return impl_->change_one(r, impl::change::complete, {}, false); }

std::vector<result<void>> work_table::complete_many(std::span<claimed_record* const> records) const {
  return impl_->change_many(records, impl::change::complete);
}

result<record_status> work_table::fail(claimed_record& r, std::string_view error_text) const {
  const bool dead = static_cast<std::uint32_t>(std::max(0, r.attempts)) >= impl_->opts.work.max_attempts;
  auto res = impl_->change_one(r, dead ? impl::change::fail_dead : impl::change::fail_pending, error_text, false);
  if (!res) return std::unexpected(res.error());
  return dead ? record_status::dead : record_status::pending;
}

result<void> work_table::release(claimed_record& r, bool count_attempt) const {
  return impl_->change_one(r, impl::change::release, {}, count_attempt);
}

result<std::size_t> work_table::release_owner(std::string_view queue, std::string_view owner) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  // One query (and, when it finds any, one transaction) per shard, the shards visited by up to
  // 8 threads at once: a supervisor releasing a dead worker's claims waits for the slowest
  // shard, not for the sum of 16 round trips in a row (issue 20).
  const std::uint32_t shards = m.opts.work.shards;
  std::atomic<std::size_t> n{0};
  std::mutex err_mu;
  std::optional<error> first_error;
  fan_out(shards, 8, [&](std::size_t k) {
    const auto shard = static_cast<std::uint32_t>(k);
    auto failed = [&](error e) {
      std::lock_guard lock(err_mu);
      if (!first_error) first_error = std::move(e);
    };
    const std::string pk = partition_key(queue, shard);
    if (auto ok = m.ensure_layout(pk); !ok) {
      failed(ok.error());
      return;
    }
    storage::table_query q;
    q.filter = table_filter::partition(pk) && ticket_range() && table_filter::eq(p_owner, std::string(owner)) &&
               table_filter::eq(p_status, s_claimed);
    auto held = m.table.query_all(q);
    if (!held) {
      failed(storage_error(held.error(), "listing records held by " + std::string(owner)));
      return;
    }
    if (held->empty()) return;
    std::vector<claimed_record> recs;
    for (const auto& t : *held) recs.push_back(m.claim_of(queue, shard, t));
    std::vector<claimed_record*> ptrs;
    for (auto& r : recs) ptrs.push_back(&r);
    for (auto& r : m.change_many(ptrs, impl::change::release, true)) n += r ? 1 : 0;
  });
  if (first_error) return std::unexpected(*first_error);
  return n.load();
}

} // namespace shoal::workers
