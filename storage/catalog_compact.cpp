// The catalog's compaction: old WAL entries and tombstones at or below the checkpoint.

#include "storage/catalog.hpp"

#include "storage/catalog_internal.hpp"

#include <algorithm>

namespace shoal::storage {

using namespace catalog_detail;

// -- compaction -----------------------------------------------------------------------------------

result<catalog_compaction_report> catalog::compact(std::chrono::milliseconds retention) const {
  catalog_compaction_report rep;
  auto cp = wal_.get_with_server_time(wal_pk, checkpoint_rk);
  if (!cp)
    return std::unexpected(cp.error());
  rep.checkpoint = int_prop(cp->first, "seq");
  const auto cutoff = to_table_time(cp->second - retention);
  if (rep.checkpoint == 0)
    return rep;

  // WAL entries ≤ checkpoint, older than the cutoff: deleted 100 per transaction.
  table_query q;
  q.filter = table_filter::partition(wal_pk) && table_filter::le("RowKey", pad(rep.checkpoint)) &&
             table_filter::lt("Timestamp", cutoff);
  q.select = {"PartitionKey", "RowKey"};
  std::vector<std::string> victims;
  auto seen = wal_.for_each(q, [&victims](const table_entity& e) {
    if (parse_seq(e.row_key))
      victims.push_back(e.row_key);
    return true;
  });
  if (!seen)
    return std::unexpected(seen.error());
  for (std::size_t i = 0; i < victims.size(); i += table_limits::max_batch_operations) {
    table_transaction tx;
    const std::size_t end = std::min(victims.size(), i + table_limits::max_batch_operations);
    for (std::size_t j = i; j < end; ++j)
      tx.delete_entity(std::string(wal_pk), victims[j]);
    if (auto r = wal_.submit_transaction(tx); r) {
      rep.wal_deleted += end - i;
      continue;
    }
    // Someone else is compacting too (404 on one row): fall back to single deletes.
    for (std::size_t j = i; j < end; ++j) {
      auto r = wal_.delete_entity(wal_pk, victims[j]);
      if (r)
        ++rep.wal_deleted;
      else if (r.error().code != errc::not_found)
        return std::unexpected(r.error());
    }
  }

  // Tombstones ≤ checkpoint, older than the cutoff; each deleted If-Match its ETag so a
  // re-insert that lands meanwhile is kept.
  table_query t;
  t.filter = table_filter::eq(del_prop, true) && table_filter::lt("Timestamp", cutoff);
  std::vector<table_entity> stones;
  auto found = index_.for_each(t, [&](const table_entity& e) {
    if (e.partition_key != meta_pk && int_prop(e, seq_prop) <= rep.checkpoint)
      stones.push_back(e);
    return true;
  });
  if (!found)
    return std::unexpected(found.error());
  for (const auto& e : stones) {
    auto r = index_.delete_entity(e.partition_key, e.row_key, e.etag);
    if (r)
      ++rep.tombstones_deleted;
    else if (r.error().code != errc::not_found && r.error().code != errc::precondition_failed)
      return std::unexpected(r.error());
  }
  return rep;
}

} // namespace shoal::storage
