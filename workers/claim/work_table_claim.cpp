// The work table's claim protocol: a key-range query of due tickets, a random subset, and one
// transaction of conditional ticket merges (SCHEMA.md "Protocol").

#include "workers/claim/work_table_internal.hpp"

#include <spdlog/spdlog.h>

#include <unordered_map>

namespace shoal::workers {

using namespace std::chrono;

// -- claim ----------------------------------------------------------------------------------------

// The claimed_record of ticket `t` (as the claim just wrote it).
claimed_record work_table::impl::claim_of(std::string_view queue, std::uint32_t shard, const table_entity& t) const {
  claimed_record r;
  r.queue = std::string(queue);
  r.partition_key = t.partition_key;
  r.row_key = std::string(ticket_record_key(t.row_key));
  r.ticket = t.row_key;
  r.id = id_from_key(r.row_key);
  r.shard = shard;
  r.etag = t.etag;
  r.owner = str_prop(t, p_owner);
  r.gen = int_prop(t, p_gen);
  r.attempts = static_cast<std::int32_t>(int_prop(t, p_attempts));
  r.last_error = str_prop(t, p_last_error);
  r.payload_blob = str_prop(t, p_payload_blob);
  r.payload_bytes = int_prop(t, p_payload_bytes);
  r.lease_until = time_prop(t, p_lease_until);
  return r;
}

// Up to `top` claimable tickets of `pk` (due before `now`, lease expired or never taken),
// following at most 4 continuations (the service may answer a range scan with empty pages).
storage::result<std::vector<table_entity>> work_table::impl::claimable(const std::string& pk, sys_tp now, std::size_t top) const {
  storage::table_query q;
  q.filter = table_filter::partition(pk) && table_filter::ge("RowKey", std::string(ticket_prefix)) &&
             table_filter::lt("RowKey", ticket_bound(now)) && table_filter::lt(p_lease_until, tt(now));
  q.page_size = static_cast<int>(std::clamp<std::size_t>(top, 1, storage::table_limits::max_page_size));
  std::vector<table_entity> out;
  std::optional<storage::table_continuation> from;
  for (int page_no = 0; page_no < 5; ++page_no) {
    auto sent = steady_now();
    auto page = table.query_page(q, from);
    if (!page) return std::unexpected(page.error());
    observe(page->server_time, {}, sent, steady_now());
    claim_counters::add(counters.claim_queries);
    claim_counters::add(counters.claim_query_entities, page->entities.size());
    for (auto& e : page->entities) out.push_back(std::move(e));
    if (!out.empty() || !page->continuation) break;
    from = page->continuation;
  }
  return out;
}

result<std::vector<claimed_record>> work_table::claim(std::string_view queue, std::span<const std::uint32_t> shards,
                                                      std::string_view owner, std::size_t max) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  if (owner.empty() || owner.size() > 256) return workers::fail(errc::invalid_argument, "claim owner must have 1 to 256 characters");
  std::vector<claimed_record> out;
  if (max == 0 || shards.empty()) return out;
  for (auto s : shards)
    if (s >= m.opts.work.shards)
      return workers::fail(errc::invalid_argument, "shard " + std::to_string(s) + " out of range (work.shards = " + std::to_string(m.opts.work.shards) + ")");
  if (auto ok = sync_clock(); !ok) return std::unexpected(ok.error());

  std::vector<std::uint32_t> order(shards.begin(), shards.end());
  std::rotate(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(order.size() - 1, static_cast<std::size_t>(m.unit() * static_cast<double>(order.size())))), order.end());
  std::optional<error> last_error;
  bool any_ok = false;
  const std::size_t batch = m.opts.work.claim_batch;

  for (auto shard : order) {
    if (out.size() >= max) break;
    const std::size_t need = max - out.size();
    const std::string pk = partition_key(queue, shard);
    if (auto ok = m.ensure_layout(pk); !ok) {
      last_error = ok.error();
      continue;
    }
    auto now = m.clock.now();
    if (!now) return workers::fail(errc::storage, "server time unknown");
    auto found = m.claimable(pk, *now, need + need / 2 + 16);
    if (!found) {
      last_error = storage_error(found.error(), "querying claimable records in " + pk);
      continue;
    }
    any_ok = true;
    auto candidates = std::move(*found);
    if (candidates.empty()) continue;
    m.shuffle(candidates);
    if (candidates.size() > need) candidates.resize(need);

    for (std::size_t start = 0; start < candidates.size(); start += batch) {
      const std::size_t end = std::min(candidates.size(), start + batch);
      auto csent = m.steady_now();
      auto cnow = m.clock.lower_bound_at(csent);
      if (!cnow) break;
      const auto lease_until = as_sys(tt(*cnow + m.lease));
      std::vector<std::vector<table_operation>> changes;
      for (std::size_t i = start; i < end; ++i) {
        const auto& c = candidates[i];
        table_entity p = keys_of(c.partition_key, c.row_key);
        p.set(p_status, s_claimed);
        p.set(p_owner, std::string(owner));
        p.set(p_gen, static_cast<std::int64_t>(int_prop(c, p_gen) + 1));
        p.set(p_attempts, static_cast<std::int32_t>(int_prop(c, p_attempts) + 1));
        p.set(p_lease_until, tt(lease_until));
        p.set(p_updated, tt(*cnow));
        changes.push_back({op(table_operation_kind::merge, std::move(p), c.etag)});
      }
      auto res = m.apply_changes(changes, on_412::claim, &m.counters.claim_requests);
      const auto deadline = m.deadline_for(csent, lease_until);
      std::vector<std::size_t> unresolved;
      for (std::size_t k = 0; k < changes.size(); ++k) {
        if (res[k].ok()) continue;
        if (res[k].maybe_landed) unresolved.push_back(k);
        else if (res[k].err.code == storage::errc::precondition_failed || res[k].err.code == storage::errc::not_found)
          claim_counters::add(m.counters.contention);
        else last_error = storage_error(res[k].err, "claiming in " + pk);
      }
      if (!unresolved.empty()) {
        // A retried request may have landed: our claims are the tickets now showing our owner
        // and the gen we wrote (a query over the partition's tickets only).
        storage::table_query mine;
        mine.filter = table_filter::partition(pk) && ticket_range() && table_filter::eq(p_owner, std::string(owner)) &&
                      table_filter::eq(p_status, s_claimed);
        auto held = m.table.query_all(mine);
        std::unordered_map<std::string, table_entity> by_rk;
        if (held)
          for (auto& e : *held) by_rk.emplace(e.row_key, std::move(e));
        for (auto k : unresolved) {
          auto it = by_rk.find(changes[k][0].entity.row_key);
          if (it != by_rk.end() && int_prop(it->second, p_gen) == int_prop(changes[k][0].entity, p_gen))
            res[k].etags = std::vector<std::string>{it->second.etag};
          else claim_counters::add(m.counters.contention);
        }
      }
      for (std::size_t k = 0; k < changes.size(); ++k) {
        if (!res[k].ok()) continue;
        const auto& c = candidates[start + k];
        table_entity written = c;
        for (const auto& [name, v] : changes[k][0].entity.properties) written.set(name, v);
        written.etag = (*res[k].etags)[0];
        claimed_record r = m.claim_of(queue, shard, written);
        r.lease_until = lease_until;
        r.deadline = deadline;
        auto payload = m.read_payload(c);
        if (!payload) {
          spdlog::warn("claim: record '{}' of {}: {}; releasing it", r.id, pk, payload.error().describe());
          (void)release(r, false);
          continue;
        }
        r.payload = std::move(*payload);
        claim_counters::add(m.counters.claims);
        out.push_back(std::move(r));
      }
    }
  }
  if (out.empty() && !any_ok && last_error) return std::unexpected(*last_error);
  return out;
}

} // namespace shoal::workers
