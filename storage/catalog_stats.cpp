// The catalog's operator views: checkpoint and counter, stats (full scans), the WAL listing.

#include "storage/catalog.hpp"

#include "storage/catalog_internal.hpp"

namespace shoal::storage {

using namespace catalog_detail;

// -- operator views -------------------------------------------------------------------------------

result<std::pair<std::uint64_t, std::uint64_t>> catalog::checkpoint_and_counter() const {
  auto cp = wal_.get(wal_pk, checkpoint_rk);
  if (!cp)
    return std::unexpected(cp.error());
  auto counter = wal_.get(wal_pk, counter_rk);
  if (!counter)
    return std::unexpected(counter.error());
  return std::pair{int_prop(*cp, "seq"), int_prop(*counter, "seq")};
}

result<catalog_stats> catalog::stats() const {
  catalog_stats s;
  s.name = name_;
  s.schema = schema_;
  auto cc = checkpoint_and_counter();
  if (!cc)
    return std::unexpected(cc.error());
  s.checkpoint = cc->first;
  s.last_seq = cc->second;
  table_query w;
  w.filter = table_filter::partition(wal_pk) && table_filter::le("RowKey", max_pad());
  w.select = {"PartitionKey", "RowKey", "applied"};
  auto walked = wal_.for_each(w, [&s](const table_entity& e) {
    const auto seq = parse_seq(e.row_key);
    if (!seq)
      return true;
    ++s.wal_entries;
    // An entry at or below the checkpoint is applied whatever its flag says (a writer that moved
    // the checkpoint past its own entries does not mark them: write()).
    const auto* a = e.get<bool>("applied");
    if (*seq > s.checkpoint && (!a || !*a))
      ++s.unapplied;
    return true;
  });
  if (!walked)
    return std::unexpected(walked.error());
  for (const auto& k : schema_.index_keys)
    s.partitions_per_key[k] = 0;
  table_query x;
  x.select = {"PartitionKey", "RowKey", std::string(del_prop)};
  std::string last_pk;
  auto scanned = index_.for_each(x, [&](const table_entity& e) {
    if (e.partition_key == meta_pk)
      return true;
    const auto* d = e.get<bool>(del_prop);
    if (d && *d) {
      ++s.tombstones;
      return true;
    }
    ++s.index_entities;
    if (e.partition_key != last_pk) {
      last_pk = e.partition_key;
      // "{len}_{field}{value}" → field
      auto us = e.partition_key.find('_');
      if (us != std::string::npos) {
        std::size_t len = 0;
        for (std::size_t i = 0; i < us; ++i)
          len = len * 10 + static_cast<std::size_t>(e.partition_key[i] - '0');
        if (us + 1 + len <= e.partition_key.size()) {
          auto it = s.partitions_per_key.find(e.partition_key.substr(us + 1, len));
          if (it != s.partitions_per_key.end())
            ++it->second;
        }
      }
    }
    return true;
  });
  if (!scanned)
    return std::unexpected(scanned.error());
  return s;
}

result<std::vector<catalog_wal_entry>> catalog::wal(std::uint64_t from_seq, std::size_t limit) const {
  std::vector<catalog_wal_entry> out;
  table_query q;
  q.filter = table_filter::partition(wal_pk) && table_filter::ge("RowKey", pad(from_seq)) &&
             table_filter::le("RowKey", max_pad());
  q.max_entities = limit;
  std::optional<error> failed;
  auto walked = wal_.for_each(q, [&](const table_entity& row) {
    auto e = entry_from_entity(row);
    if (!e) {
      failed = e.error();
      return false;
    }
    out.push_back(std::move(*e));
    return true;
  });
  if (!walked)
    return std::unexpected(walked.error());
  if (failed)
    return std::unexpected(*failed);
  return out;
}

} // namespace shoal::storage
