// The work table's construction, accessors, status names and retry delay (the other pieces:
// workers/claim/work_table_*.cpp; the schema and protocol: SCHEMA.md).

#include "workers/claim/work_table_internal.hpp"

#include "storage/backoff.hpp"

namespace shoal::workers {

using namespace std::chrono;

// -- status names ---------------------------------------------------------------------------------

std::string_view to_string(record_status s) noexcept {
  switch (s) {
  case record_status::pending: return "pending";
  case record_status::claimed: return "claimed";
  case record_status::done: return "done";
  case record_status::dead: return "dead";
  }
  return "unknown";
}

result<record_status> parse_record_status(std::string_view s) {
  if (s == "pending") return record_status::pending;
  if (s == "claimed") return record_status::claimed;
  if (s == "done") return record_status::done;
  if (s == "dead") return record_status::dead;
  return workers::fail(errc::invalid_argument, "unknown record status '" + std::string(s) +
                                          "' (pending, claimed, done, dead)");
}

milliseconds retry_delay(std::uint32_t attempts, milliseconds base, milliseconds max, double unit) noexcept {
  // The one backoff policy (storage/backoff.hpp), ±20 %.
  return storage::backoff_delay({base, max, 0.2}, static_cast<int>(std::min<std::uint32_t>(attempts, 64)), unit);
}

// -- construction ---------------------------------------------------------------------------------

result<work_table> work_table::make(storage::table_client table, std::optional<storage::blob_client> blobs,
                                    work_table_options opts) {
  config c;
  c.work = opts.work;
  if (auto ok = validate(c); !ok) return std::unexpected(ok.error());
  if (opts.inline_payload_max_bytes > 32 * 1024)
    return workers::fail(errc::invalid_argument, "inline_payload_max_bytes must be at most 32768 (a table string property)");
  if (opts.complete_singles_after_412 < 1)
    return workers::fail(errc::invalid_argument, "complete_singles_after_412 must be at least 1");
  if (blobs) {
    if (auto ok = storage::validate_container_name(opts.payload_container); !ok)
      return std::unexpected(error::from_storage(ok.error(), "payload container"));
  }
  if (!opts.work.history_table.empty()) {
    if (auto h = storage::table_client::make(table.transport(), opts.work.history_table); !h)
      return std::unexpected(error::from_storage(h.error(), "history table"));
  }
  return work_table(std::make_shared<impl>(std::move(table), std::move(blobs), std::move(opts)));
}

claim_counters& work_table::counters() const noexcept { return impl_->counters; }
storage::server_clock& work_table::clock() const noexcept { return impl_->clock; }
const work_table_options& work_table::options() const noexcept { return impl_->opts; }
const storage::table_client& work_table::table() const noexcept { return impl_->table; }
result<void> work_table::sync_clock() const {
  if (impl_->clock.known()) return {};
  return impl_->sync();
}

result<void> work_table::prepare(std::string_view queue, std::span<const std::uint32_t> shards) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  for (auto s : shards)
    if (s >= m.opts.work.shards)
      return workers::fail(errc::invalid_argument, "shard " + std::to_string(s) + " out of range (work.shards = " + std::to_string(m.opts.work.shards) + ")");
  if (auto ok = sync_clock(); !ok) return std::unexpected(ok.error());
  std::mutex err_mu;
  std::optional<error> first_error;
  fan_out(shards.size(), 8, [&](std::size_t k) {
    if (auto ok = m.ensure_layout(partition_key(queue, shards[k])); !ok) {
      std::lock_guard lock(err_mu);
      if (!first_error) first_error = ok.error();
    }
  });
  if (first_error) return std::unexpected(*first_error);
  return {};
}

result<void> work_table::create_if_missing() const {
  if (auto r = impl_->table.create_table_if_not_exists(); !r)
    return std::unexpected(storage_error(r.error(), "creating table " + impl_->table.name()));
  if (impl_->history) {
    if (auto r = impl_->history->create_table_if_not_exists(); !r)
      return std::unexpected(storage_error(r.error(), "creating table " + impl_->history->name()));
  }
  if (impl_->blobs) {
    if (auto r = impl_->blobs->create_container_if_not_exists(impl_->opts.payload_container); !r)
      return std::unexpected(storage_error(r.error(), "creating container " + impl_->opts.payload_container));
  }
  return {};
}

} // namespace shoal::workers
