// The catalog's apply side: fan-out of WAL entries to index entities (highest sequence wins),
// marking entries applied, advancing the checkpoint, and recovery (steps 3-5 of catalog.hpp).

#include "storage/catalog.hpp"

#include "storage/catalog_internal.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>

namespace shoal::storage {

using namespace catalog_detail;

result<void> catalog::apply(const catalog_wal_entry& e, bool inject_faults) const {
  const std::string rk = row_key(schema_, e.record);
  std::size_t done = 0;
  for (const auto& k : schema_.index_keys) {
    auto desired = index_entity(e, k, rk);
    if (!desired)
      return std::unexpected(desired.error());
    if (auto r = apply_one(desired->partition_key, rk, *desired, e.seq); !r)
      return std::unexpected(with_context(r.error(), "applying WAL entry " + std::to_string(e.seq) + " to " +
                                                         desired->partition_key));
    ++done;
    if (inject_faults && opts_.fault && opts_.fault(write_stage::after_index_entity, done))
      return std::unexpected(fault_error(write_stage::after_index_entity, done));
  }
  if (inject_faults && opts_.fault && opts_.fault(write_stage::after_fan_out, done))
    return std::unexpected(fault_error(write_stage::after_fan_out, done));
  return {};
}

result<void> catalog::apply_many(std::span<const catalog_wal_entry> entries, bool inject_faults) const {
  // The index entities of all entries, by partition. Of several entries that write the same
  // entity only the highest sequence is kept: it is what applying them all in sequence order
  // leaves, and a transaction may name an entity once.
  std::map<std::string, std::map<std::string, table_entity>> parts;
  for (const auto& e : entries) {
    const std::string rk = row_key(schema_, e.record);
    for (const auto& k : schema_.index_keys) {
      auto desired = index_entity(e, k, rk);
      if (!desired)
        return std::unexpected(desired.error());
      auto& slot = parts[desired->partition_key][rk];
      if (slot.row_key.empty() || int_prop(slot, seq_prop) < e.seq)
        slot = std::move(*desired);
    }
  }
  // One job per transaction-sized group of one partition. Entries are independent (highest
  // sequence wins per entity), so the jobs may run in any order and at once.
  std::vector<std::vector<table_entity>> jobs;
  for (auto& [pk, rows] : parts) {
    std::vector<table_entity> es;
    es.reserve(rows.size());
    for (auto& [rk, ent] : rows)
      es.push_back(std::move(ent));
    for (auto [b, e] : batch_ranges(es, table_limits::max_batch_operations))
      jobs.emplace_back(std::make_move_iterator(es.begin() + static_cast<std::ptrdiff_t>(b)),
                        std::make_move_iterator(es.begin() + static_cast<std::ptrdiff_t>(e)));
  }

  std::mutex mu; // guards everything below it, and the fault hook
  std::size_t next = 0;
  std::size_t done = 0;
  std::optional<error> failed;
  auto worker = [&] {
    for (;;) {
      std::size_t j = 0;
      {
        std::lock_guard lock(mu);
        if (failed || next >= jobs.size())
          return;
        j = next++;
      }
      auto r = apply_group(jobs[j]);
      std::lock_guard lock(mu);
      if (!r) {
        if (!failed)
          failed = r.error();
        return;
      }
      done += jobs[j].size();
      if (!failed && inject_faults && opts_.fault && opts_.fault(write_stage::after_index_entity, done))
        failed = fault_error(write_stage::after_index_entity, done);
    }
  };
  const std::size_t width = std::clamp<std::size_t>(opts_.fan_out_concurrency, 1, jobs.size());
  std::vector<std::thread> helpers;
  for (std::size_t t = 1; t < width; ++t) {
    try {
      helpers.emplace_back(worker);
    } catch (const std::system_error& ex) {
      // No thread to be had: the ones already running (and this one) do the work.
      spdlog::debug("catalog {}: fan-out thread not started: {}", name_, ex.what());
      break;
    }
  }
  worker();
  for (auto& t : helpers)
    t.join();
  if (failed)
    return std::unexpected(*failed);
  if (inject_faults && opts_.fault && opts_.fault(write_stage::after_fan_out, done))
    return std::unexpected(fault_error(write_stage::after_fan_out, done));
  return {};
}

result<void> catalog::apply_group(const std::vector<table_entity>& group) const {
  // The common case: none of the entities exists yet, and one transaction of INSERTs writes
  // them all. If one exists (a re-registration, or another process applied the entry), the
  // transaction is refused as a whole and each entity is settled by highest sequence wins.
  if (group.size() > 1) {
    table_transaction tx;
    for (const auto& e : group)
      tx.insert(e);
    auto r = index_.submit_transaction(tx);
    if (r)
      return {};
    if (r.error().code != errc::conflict)
      return std::unexpected(with_context(r.error(), "writing " + std::to_string(group.size()) +
                                                         " index entities to " + group.front().partition_key));
  }
  for (const auto& e : group) {
    const std::uint64_t seq = int_prop(e, seq_prop);
    if (auto r = apply_one(e.partition_key, e.row_key, e, seq); !r)
      return std::unexpected(with_context(r.error(), "applying WAL entry " + std::to_string(seq) + " to " +
                                                         e.partition_key));
  }
  return {};
}

result<void> catalog::apply_one(const std::string& pk, const std::string& rk, const table_entity& desired,
                                std::uint64_t seq) const {
  // Highest sequence wins: insert; if something is there, replace it only when it is older,
  // guarded by its ETag (a 412 or 404 means someone else changed it: look again).
  for (int round = 0; round < max_apply_rounds; ++round) {
    auto ins = index_.insert(desired);
    if (ins)
      return {};
    if (ins.error().code != errc::conflict)
      return std::unexpected(ins.error());
    auto cur = index_.get(pk, rk);
    if (!cur) {
      if (cur.error().code == errc::not_found)
        continue; // removed meanwhile (compaction): insert again
      return std::unexpected(cur.error());
    }
    if (int_prop(*cur, seq_prop) >= seq)
      return {}; // the same or a later operation is already there
    auto upd = index_.update(desired, cur->etag);
    if (upd)
      return {};
    if (upd.error().code != errc::precondition_failed && upd.error().code != errc::not_found)
      return std::unexpected(upd.error());
    backoff(round);
  }
  return std::unexpected(make_error(errc::conflict, "index entity " + pk + "/" + rk + " kept changing"));
}

result<void> catalog::mark_applied(std::uint64_t seq) const {
  auto r = wal_.merge(applied_row(seq), "*");
  if (!r && r.error().code != errc::not_found) // not_found: compacted, so applied long ago
    return std::unexpected(r.error());
  return {};
}

result<void> catalog::mark_applied_many(std::span<const catalog_wal_entry> entries) const {
  if (entries.size() == 1)
    return mark_applied(entries.front().seq);
  // MERGE applied=true for up to 100 entries per transaction on partition `wal`.
  for (std::size_t b = 0; b < entries.size(); b += table_limits::max_batch_operations) {
    const std::size_t e = std::min(entries.size(), b + table_limits::max_batch_operations);
    table_transaction tx;
    for (std::size_t i = b; i < e; ++i)
      tx.merge(applied_row(entries[i].seq), "*");
    auto r = wal_.submit_transaction(tx);
    if (r)
      continue;
    if (r.error().code != errc::not_found)
      return std::unexpected(r.error());
    // An entry is gone (compacted, so applied long ago): settle the others one by one.
    for (std::size_t i = b; i < e; ++i)
      if (auto one = mark_applied(entries[i].seq); !one)
        return one;
  }
  return {};
}

result<std::uint64_t> catalog::advance(std::size_t* replayed, std::size_t* skipped, bool replay_all) const {
  for (int round = 0; round < max_advance_rounds; ++round) {
    auto cp = wal_.get_with_server_time(wal_pk, checkpoint_rk);
    if (!cp)
      return std::unexpected(with_context(cp.error(), "reading the checkpoint of catalog '" + name_ + "'"));
    const table_entity& cp_row = cp->first;
    const std::chrono::system_clock::time_point server_now = cp->second;
    const std::uint64_t start = int_prop(cp_row, "seq");
    std::uint64_t next = start + 1; // the sequence number we need next
    std::size_t gaps = 0;
    std::optional<error> failed;
    table_query q;
    q.filter = table_filter::partition(wal_pk) && table_filter::gt("RowKey", pad(start)) &&
               table_filter::le("RowKey", max_pad());
    if (!replay_all)
      q.max_entities = std::max<std::size_t>(1, opts_.max_advance_entries);
    auto walked = wal_.for_each(q, [&](const table_entity& row) {
      auto e = entry_from_entity(row);
      if (!e) {
        failed = e.error();
        return false;
      }
      if (e->seq > next) {
        // Numbers next..seq-1 are missing although a later entry exists. The counter and the
        // entry commit in one transaction, so they were never written or were deleted by hand:
        // they can never appear, and waiting for them would block the catalog forever.
        spdlog::warn("catalog {}: WAL sequence numbers {}..{} are missing; stepping over them", name_, next,
                     e->seq - 1);
        gaps += e->seq - next;
      }
      if (!e->applied) {
        bool stalled = e->timestamp && server_now - std::chrono::system_clock::time_point(*e->timestamp) >
                                           opts_.stall_timeout;
        if (!replay_all && !stalled)
          return false; // in flight at its writer: the checkpoint stops here
        if (auto r = apply(*e, false); !r) {
          failed = r.error();
          return false;
        }
        if (auto r = mark_applied(e->seq); !r) {
          failed = r.error();
          return false;
        }
        if (replayed)
          ++*replayed;
      }
      next = e->seq + 1;
      return true;
    });
    if (!walked)
      return std::unexpected(with_context(walked.error(), "scanning the WAL of catalog '" + name_ + "'"));
    const std::uint64_t reached = next - 1;
    std::string etag = cp_row.etag;
    if (reached > start) {
      auto moved = wal_.merge(seq_row(checkpoint_rk, reached), cp_row.etag);
      if (!moved) {
        if (moved.error().code == errc::precondition_failed)
          continue; // another process advanced it: look again from there
        return std::unexpected(with_context(moved.error(), "advancing the checkpoint of catalog '" + name_ + "'"));
      }
      etag = moved->etag;
    }
    {
      std::lock_guard lk(cache_->m); // the next write may move it without reading (write())
      cache_->checkpoint.emplace(reached, std::move(etag));
    }
    if (skipped)
      *skipped = gaps;
    if (failed)
      return std::unexpected(*failed);
    return reached;
  }
  return std::unexpected(make_error(errc::conflict, "catalog '" + name_ + "': the checkpoint kept moving"));
}

// -- recovery and maintenance ---------------------------------------------------------------------

result<catalog_recovery_report> catalog::recover() const {
  catalog_recovery_report rep;
  auto before = wal_.get(wal_pk, checkpoint_rk);
  if (!before)
    return std::unexpected(with_context(before.error(), "reading the checkpoint of catalog '" + name_ + "'"));
  rep.checkpoint_before = int_prop(*before, "seq");
  auto after = advance(&rep.replayed, &rep.skipped, true);
  if (!after)
    return std::unexpected(after.error());
  rep.checkpoint_after = *after;
  auto counter = wal_.get(wal_pk, counter_rk);
  if (!counter)
    return std::unexpected(counter.error());
  rep.last_seq = int_prop(*counter, "seq");
  if (rep.replayed || rep.skipped)
    spdlog::info("catalog {}: recovery replayed {} WAL entries, stepped over {} missing; checkpoint {} -> {}", name_,
                 rep.replayed, rep.skipped, rep.checkpoint_before, rep.checkpoint_after);
  return rep;
}

} // namespace shoal::storage
