// The work table's writes: one operation alone, a transaction, and apply_changes (changes of one
// partition in as few entity group transactions as possible, 412s resolved per policy).

#include "workers/claim/work_table_internal.hpp"

namespace shoal::workers {

using namespace std::chrono;

// -- writes ------------------------------------------------------------------------------------

// One operation as its own request (no $batch framing). The new ETag ("" for a delete).
storage::result<std::string> work_table::impl::single(const table_operation& o) const {
  auto sent = steady_now();
  storage::result<storage::table_write_result> r = std::unexpected(storage::error::invalid("unknown operation"));
  switch (o.kind) {
  case table_operation_kind::insert: r = table.insert(o.entity); break;
  case table_operation_kind::update: r = table.update(o.entity, o.if_match); break;
  case table_operation_kind::merge: r = table.merge(o.entity, o.if_match); break;
  case table_operation_kind::insert_or_replace: r = table.insert_or_replace(o.entity); break;
  case table_operation_kind::insert_or_merge: r = table.insert_or_merge(o.entity); break;
  case table_operation_kind::delete_entity:
    r = table.delete_entity(o.entity.partition_key, o.entity.row_key, o.if_match);
    break;
  }
  if (!r) return std::unexpected(r.error());
  observe(r->server_time, r->etag, sent, steady_now());
  return r->etag;
}

storage::table_transaction_outcome work_table::impl::submit(const storage::table_transaction& tx) const {
  auto sent = steady_now();
  auto r = table.submit_transaction(tx);
  if (r) {
    std::string first;
    for (const auto& e : r->etags)
      if (!e.empty()) { first = e; break; }
    observe(r->server_time, first, sent, steady_now());
  }
  return r;
}

// One change on its own: a single request when it has one operation, else a transaction.
change_outcome work_table::impl::run_alone(const std::vector<table_operation>& ops, std::atomic<std::uint64_t>* requests) const {
  change_outcome out;
  if (requests) claim_counters::add(*requests);
  if (ops.size() == 1) {
    auto r = single(ops.front());
    if (r) out.etags = std::vector<std::string>{*r};
    else {
      out.err = r.error();
      out.maybe_landed = r.error().attempts > 1;
    }
    return out;
  }
  storage::table_transaction tx;
  for (const auto& o : ops) tx.add(o.kind, o.entity, o.if_match);
  auto r = submit(tx);
  if (r) {
    out.etags = r->etags;
    out.etags->resize(ops.size());
    return out;
  }
  out.err = static_cast<const storage::error&>(r.error());
  out.failed_op = r.error().failed_index.value_or(0);
  out.maybe_landed = r.error().attempts > 1;
  return out;
}

// Applies changes of ONE partition, each change's operations committed together, as few
// transactions of ≤ 100 operations as possible. A change the service rejects is failed alone
// (its outcome says which operation and why) and the rest resubmitted, or — per `policy` —
// sent one by one after 412s.
std::vector<change_outcome> work_table::impl::apply_changes(const std::vector<std::vector<table_operation>>& changes, on_412 policy,
                                          std::atomic<std::uint64_t>* requests) const {
  std::vector<change_outcome> out(changes.size());
  std::size_t pos = 0;
  while (pos < changes.size()) {
    // The next chunk: as many whole changes as fit in one transaction.
    std::vector<std::size_t> rest;
    std::size_t n_ops = 0;
    while (pos < changes.size() && n_ops + changes[pos].size() <= max_tx_ops) {
      n_ops += changes[pos].size();
      rest.push_back(pos++);
    }
    if (rest.empty()) { // a change larger than a transaction cannot be: fail it
      out[pos].err = storage::error::invalid("change of more than 100 operations");
      ++pos;
      continue;
    }
    int rounds = 0, n412 = 0;
    bool singles = false;
    while (!rest.empty()) {
      if (singles || rest.size() == 1 || ++rounds > 8) {
        int consecutive = 0;
        for (auto i : rest) {
          if (policy == on_412::claim && consecutive >= opts.max_consecutive_contention) {
            out[i].err = storage::error{storage::errc::precondition_failed, 412, "UpdateConditionNotSatisfied", {}, false, 0,
                                        "skipped: partition contended"};
            continue;
          }
          out[i] = run_alone(changes[i], requests);
          if (!out[i].ok() && out[i].err.code == storage::errc::precondition_failed) ++consecutive;
          else consecutive = 0;
        }
        break;
      }
      storage::table_transaction tx;
      std::vector<std::size_t> offsets;
      for (auto i : rest) {
        offsets.push_back(tx.size());
        for (const auto& o : changes[i]) tx.add(o.kind, o.entity, o.if_match);
      }
      if (requests) claim_counters::add(*requests);
      auto r = submit(tx);
      if (r) {
        for (std::size_t k = 0; k < rest.size(); ++k) {
          const auto& ops = changes[rest[k]];
          std::vector<std::string> etags(ops.size());
          for (std::size_t j = 0; j < ops.size() && offsets[k] + j < r->etags.size(); ++j) etags[j] = r->etags[offsets[k] + j];
          out[rest[k]].etags = std::move(etags);
        }
        break;
      }
      const auto& err = r.error();
      const bool landed = err.attempts > 1;
      if (!err.failed_index || *err.failed_index >= tx.size()) {
        // The whole request failed (transport, throttling after retries, ...): one by one, so
        // each change gets its own answer (a retried-then-landed batch shows as 412s there).
        for (auto i : rest) {
          out[i] = run_alone(changes[i], requests);
          if (landed && !out[i].ok()) out[i].maybe_landed = true;
        }
        break;
      }
      const std::size_t at = *err.failed_index;
      std::size_t k = 0;
      while (k + 1 < offsets.size() && offsets[k + 1] <= at) ++k;
      const std::size_t bad = rest[k];
      out[bad].err = static_cast<const storage::error&>(err);
      out[bad].failed_op = at - offsets[k];
      out[bad].maybe_landed = landed;
      rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(k));
      if (err.code == storage::errc::precondition_failed) {
        ++n412;
        if (policy == on_412::claim) singles = true;
        if (policy == on_412::complete && n412 >= opts.complete_singles_after_412) singles = true;
      }
      if (landed)
        for (auto i : rest) out[i].maybe_landed = true;
    }
  }
  return out;
}

} // namespace shoal::workers
