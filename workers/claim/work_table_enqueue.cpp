// The work table's producing side: enqueue (record row + ticket per record, idempotent) and
// payload offload: oversized payloads stored in blobs, and read back.

#include "workers/claim/work_table_internal.hpp"

#include "storage/encoding.hpp"

#include <spdlog/spdlog.h>

namespace shoal::workers {

using namespace std::chrono;

// -- payloads ---------------------------------------------------------------------------------------

result<std::string> work_table::impl::read_payload(const table_entity& e) const {
  auto ref = str_prop(e, p_payload_blob);
  if (ref.empty()) return str_prop(e, p_payload);
  if (!blobs) return workers::fail(errc::invalid_argument, "record payload is in blob " + ref + " but no blob client is configured");
  auto slash = ref.find('/');
  if (slash == std::string::npos) return workers::fail(errc::parse, "bad payload_blob reference '" + ref + "'");
  auto b = blobs->get_blob(std::string_view(ref).substr(0, slash), std::string_view(ref).substr(slash + 1));
  if (!b) return std::unexpected(storage_error(b.error(), "reading payload blob " + ref));
  return std::move(b->body);
}

// -- enqueue --------------------------------------------------------------------------------------

result<enqueue_result> work_table::enqueue(std::string_view queue, std::span<const new_record> records) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  enqueue_result out;
  if (records.empty()) return out;
  auto now = m.server_now();
  if (!now) return std::unexpected(now.error());

  struct prepared {
    table_entity record;
    table_entity ticket;
    const new_record* src;
    std::size_t bytes;
  };
  std::map<std::string, std::vector<prepared>> by_partition;
  std::set<std::pair<std::string, std::string>> seen;
  // Validate everything before any I/O, so a bad id in a file inserts nothing.
  for (const auto& rec : records) {
    auto rk = escape_key(rec.id);
    if (!rk) return std::unexpected(error{rk.error().code, "record id '" + truncate_utf8(rec.id, 80) + "': " + rk.error().message, storage::errc::invalid_argument, 0});
    if (rk->size() > max_record_key_chars) {
      auto units = storage::utf16_length(*rk).value_or(rk->size());
      if (units > max_record_key_chars)
        return workers::fail(errc::limit_exceeded, "record id '" + truncate_utf8(rec.id, 80) + "': too long: its escaped key has " +
                                                       std::to_string(units) + " characters, at most " +
                                                       std::to_string(max_record_key_chars) + " allowed");
    }
    const auto shard = shard_of(rec.id, m.opts.work.shards);
    auto pk = partition_key(queue, shard);
    if (!seen.emplace(pk, *rk).second) continue;
    const bool inline_ok = rec.payload.size() <= m.opts.inline_payload_max_bytes && storage::utf16_length(rec.payload).has_value();
    if (!inline_ok && !m.blobs)
      return workers::fail(errc::limit_exceeded, "record '" + rec.id + "': payload of " + std::to_string(rec.payload.size()) +
                                            " bytes needs a blob but no blob client is configured");
    const sys_tp due = rec.delay.count() > 0 ? *now + rec.delay : sys_tp{};
    table_entity r = keys_of(pk, *rk);
    r.set(p_status, s_open);
    r.set(p_owner, std::string());
    r.set(p_gen, std::int64_t{0});
    r.set(p_attempts, std::int32_t{0});
    r.set(p_payload_bytes, static_cast<std::int64_t>(rec.payload.size()));
    r.set(p_created, tt(*now));
    r.set(p_updated, tt(*now));
    std::size_t bytes = 1200 + 4 * rk->size();
    if (inline_ok) {
      r.set(p_payload, rec.payload);
      bytes += 2 * json_string_bytes(rec.payload);
    }
    table_entity t = keys_of(pk, ticket_key(due, *rk));
    t.set(p_status, s_pending);
    t.set(p_owner, std::string());
    t.set(p_gen, std::int64_t{0});
    t.set(p_attempts, std::int32_t{0});
    t.set(p_lease_until, epoch_tt());
    t.set(p_not_before, tt(due));
    t.set(p_updated, tt(*now));
    r.set(p_ticket, t.row_key);
    by_partition[pk].push_back({std::move(r), std::move(t), &rec, bytes});
  }

  // The partitions (one per shard) are written by up to 8 threads at once: a round of the
  // persistor's registrar enqueues the blobs of many shards, and one transaction after another
  // made it wait for the sum of their round trips (issue 14).
  std::vector<std::pair<const std::string*, std::vector<prepared>*>> parts;
  for (auto& [pk, items] : by_partition) parts.emplace_back(&pk, &items);
  std::vector<enqueue_result> part_out(parts.size());
  std::vector<std::optional<error>> part_err(parts.size());
  auto enqueue_partition = [&](const std::string& pk, std::vector<prepared>& items, enqueue_result& out) -> result<void> {
    // Oversized payloads: the blob first (create-only: an existing blob, e.g. of a record
    // enqueued before, is left alone), then the entities that reference it.
    for (auto& it : items) {
      if (!it.record.find(p_payload)) {
        auto name = payload_blob_name(queue, shard_from_partition(pk), it.record.row_key);
        storage::put_blob_options po;
        po.create_only = true;
        auto put = m.blobs->upload(m.opts.payload_container, name, it.src->payload, storage::upload_options{po});
        if (!put && put.error().code != storage::errc::conflict)
          return std::unexpected(storage_error(put.error(), "storing the payload of record '" + it.src->id + "'"));
        it.record.set(p_payload_blob, m.opts.payload_container + "/" + name);
      }
      copy_payload(it.record, it.ticket);
    }
    // Chunks of ≤ 50 records (record + ticket = 2 operations each) and ≤ max_tx_body_bytes.
    std::size_t pos = 0;
    while (pos < items.size()) {
      std::vector<prepared*> chunk;
      std::size_t bytes = 0;
      while (pos < items.size() && 2 * (chunk.size() + 1) <= max_tx_ops &&
             (chunk.empty() || bytes + items[pos].bytes <= max_tx_body_bytes)) {
        bytes += items[pos].bytes;
        chunk.push_back(&items[pos++]);
      }
      for (int round = 0; !chunk.empty(); ++round) {
        storage::table_transaction tx;
        for (auto* p : chunk) {
          tx.insert(p->record);
          tx.insert(p->ticket);
        }
        auto r = m.submit(tx);
        if (r) {
          out.inserted += chunk.size();
          claim_counters::add(m.counters.enqueued, chunk.size());
          break;
        }
        if (r.error().code != storage::errc::conflict || round >= 8)
          return std::unexpected(storage_error(r.error(), "enqueueing " + std::to_string(chunk.size()) + " records into " + pk));
        // 409: an id exists (enqueued before, or by an earlier attempt of this very request).
        // The answer names the first one: drop it and resubmit; after a few rounds, read which
        // of the rest exist (one range query) instead.
        if (round < 3 && r.error().failed_index && *r.error().failed_index / 2 < chunk.size()) {
          const std::size_t k = *r.error().failed_index / 2;
          if (*r.error().failed_index % 2 == 1)
            spdlog::warn("enqueue: record '{}' of {}: its ticket key exists without its record row", chunk[k]->src->id, pk);
          ++out.already_present;
          claim_counters::add(m.counters.enqueue_existing);
          chunk.erase(chunk.begin() + static_cast<std::ptrdiff_t>(k));
          continue;
        }
        std::string lo = chunk.front()->record.row_key, hi = lo;
        for (auto* p : chunk) {
          lo = std::min(lo, p->record.row_key);
          hi = std::max(hi, p->record.row_key);
        }
        storage::table_query q;
        q.filter = table_filter::partition(pk) && table_filter::ge("RowKey", lo) && table_filter::le("RowKey", hi);
        q.select = {"RowKey"};
        auto existing = m.table.query_all(q);
        if (!existing) return std::unexpected(storage_error(existing.error(), "checking existing records in " + pk));
        std::set<std::string> have;
        for (const auto& e : existing.value()) have.insert(e.row_key);
        std::vector<prepared*> rest;
        for (auto* p : chunk) {
          if (have.count(p->record.row_key)) {
            ++out.already_present;
            claim_counters::add(m.counters.enqueue_existing);
          } else {
            rest.push_back(p);
          }
        }
        chunk = std::move(rest);
      }
    }
    return {};
  };
  fan_out(parts.size(), 8, [&](std::size_t k) {
    if (auto r = enqueue_partition(*parts[k].first, *parts[k].second, part_out[k]); !r) part_err[k] = r.error();
  });
  for (std::size_t k = 0; k < parts.size(); ++k) {
    out.inserted += part_out[k].inserted;
    out.already_present += part_out[k].already_present;
  }
  for (auto& e : part_err)
    if (e) return std::unexpected(*e);
  return out;
}

} // namespace shoal::workers
