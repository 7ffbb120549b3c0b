#pragma once
// Private to workers/claim/work_table*.cpp: the stored names (SCHEMA.md), the row helpers and
// the declaration of work_table::impl that the work table's pieces share. Not installed, not
// public API: nothing outside workers/claim/work_table*.cpp includes it.

#include "workers/claim/work_table.hpp"

#include "workers/claim/key_escape.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace shoal::workers::work_table_detail {

using storage::table_entity;
using storage::table_filter;
using storage::table_operation;
using storage::table_operation_kind;
using storage::table_time;
using steady_tp = std::chrono::steady_clock::time_point;
using sys_tp = std::chrono::system_clock::time_point;
using std::chrono::milliseconds;

// -- property names (workers/claim/SCHEMA.md "Properties") --------------------------------------------
inline constexpr const char* p_status = "status";
inline constexpr const char* p_owner = "owner";
inline constexpr const char* p_gen = "gen";
inline constexpr const char* p_attempts = "attempts";
inline constexpr const char* p_lease_until = "lease_until";
inline constexpr const char* p_not_before = "not_before";
inline constexpr const char* p_payload = "payload";
inline constexpr const char* p_payload_blob = "payload_blob";
inline constexpr const char* p_payload_bytes = "payload_bytes";
inline constexpr const char* p_last_error = "last_error";
inline constexpr const char* p_created = "created";
inline constexpr const char* p_updated = "updated";
inline constexpr const char* p_ticket = "ticket";
inline constexpr const char* p_layout = "layout";
inline constexpr const char* p_done_removed = "done_removed";

// -- stored status values -------------------------------------------------------------------------
// Record rows: open (the ticket holds pending/claimed), done, dead; layout 1 wrote pending and
// claimed on the record row itself. Tickets: pending, claimed.
inline const std::string s_pending = "pending";
inline const std::string s_claimed = "claimed";
inline const std::string s_open = "open";
inline const std::string s_done = "done";
inline const std::string s_dead = "dead";

// -- row keys (workers/claim/SCHEMA.md "Keys") ----------------------------------------------------------
// An escaped record id never holds a '%' followed by anything but two hex digits, so keys that
// start with "%|" (tickets) or "%~" (the meta row) can never be a record's.
inline constexpr std::string_view ticket_prefix = "%|";
inline constexpr std::string_view ticket_end = "%}"; // first key after every ticket
inline constexpr std::string_view meta_key = "%~meta";
inline constexpr std::size_t ticket_time_chars = 28; // 2024-01-02T03:04:05.1234567Z
inline constexpr std::size_t ticket_head_chars = 2 + ticket_time_chars + 1;
inline constexpr std::int32_t layout_version = 2;

inline constexpr std::size_t max_last_error_bytes = 8 * 1024;
inline constexpr std::size_t max_tx_body_bytes = 3'500'000; // under the 4 MiB $batch limit, with room for framing
inline constexpr std::size_t max_tx_ops = storage::table_limits::max_batch_operations;

// -- row helpers (work_table_rows.cpp) ------------------------------------------------------------

table_time tt(sys_tp t);
table_time epoch_tt();
sys_tp as_sys(table_time t);
// "%|{due}|{rk}": due truncated to the 100 ns of Edm.DateTime, the same value as not_before.
std::string ticket_key(sys_tp due, std::string_view rk);
// Every ticket due strictly before `now` sorts below this key.
std::string ticket_bound(sys_tp now);
bool is_ticket(std::string_view rk);
bool is_meta(std::string_view rk);
// The record RowKey a ticket belongs to ("" when the key is malformed).
std::string_view ticket_record_key(std::string_view tk);
table_filter ticket_range();
// Rows that are neither tickets nor meta: record rows.
table_filter record_rows();
// Bytes `s` takes as a JSON string value (escapes included).
std::size_t json_string_bytes(std::string_view s);
// Cuts `s` to at most `max` bytes without splitting a UTF-8 sequence.
std::string truncate_utf8(std::string_view s, std::size_t max);
// Property reads through table_entity's typed getters (one set of coercion rules), with the
// default a row written before the property existed has: 0, "", the epoch.
std::int64_t int_prop(const table_entity& e, std::string_view name);
std::string str_prop(const table_entity& e, std::string_view name);
sys_tp time_prop(const table_entity& e, std::string_view name);
// The status of a ticket or a layout-1 record row (pending/claimed), or of a settled record.
std::optional<record_status> status_prop(const table_entity& e);
// Parses "{queue}-{shard:02x}".
std::uint32_t shard_from_partition(std::string_view pk);
std::string id_from_key(std::string_view rk);
std::string payload_blob_name(std::string_view queue, std::uint32_t shard, std::string_view rk);
table_filter queue_filter(std::string_view queue);
error storage_error(const storage::error& e, std::string_view what);
table_entity keys_of(std::string_view pk, std::string_view rk);
table_operation op(table_operation_kind k, table_entity e, std::string if_match = "*");
table_operation del(std::string_view pk, std::string_view rk, std::string if_match);
// Copies the payload columns of `from` (a record row or a ticket) into `to`.
void copy_payload(const table_entity& from, table_entity& to);
// A ticket for record row key `rk` due at `due` with the given state; payload from `src`.
table_entity make_ticket(std::string_view pk, std::string_view rk, sys_tp due, const std::string& status,
                         const std::string& owner, std::int64_t gen, std::int32_t attempts, table_time lease_until,
                         const std::string& last_error, const table_entity& payload_src, sys_tp now);

// The outcome of one change (a group of operations that must commit together).
struct change_outcome {
  std::optional<std::vector<std::string>> etags; // one per operation on success ("" for deletes)
  storage::error err;                            // on failure
  std::size_t failed_op = 0;                     // which operation of the change was rejected
  bool maybe_landed = false;                     // failed after a retried request: it may have landed
  bool ok() const noexcept { return etags.has_value(); }
};

// What apply_changes does after a 412.
enum class on_412 {
  resubmit,  // drop the failed change, resubmit the rest as a transaction
  claim,     // drop it; the rest one by one, giving up after max_consecutive_contention 412s
  complete,  // resubmit, but after complete_singles_after_412 412s the rest one by one
};

// Runs visit(k) for every k in [0, n) on up to `width` threads (the caller's one of them), each
// thread taking the next k: the shard fan-outs of enqueue and release_owner, which wait for the
// slowest partition instead of the sum of one round trip per partition.
template <class F> void fan_out(std::size_t n, std::size_t width, F&& visit) {
  std::atomic<std::size_t> next{0};
  auto run = [&] {
    for (std::size_t k; (k = next.fetch_add(1)) < n;) visit(k);
  };
  {
    std::vector<std::jthread> pool;
    for (std::size_t t = 1; t < std::min(n, width); ++t) pool.emplace_back(run);
    run();
  }
}

// -- partition walks (work_table_views.cpp) -------------------------------------------------------

// The rows of one partition, by kind.
struct partition_rows {
  std::vector<table_entity> records;
  std::map<std::string, table_entity, std::less<>> tickets; // by ticket RowKey
  std::optional<table_entity> meta;
};

// Walks `queue` partition by partition (each partition's rows complete before `fn` sees them),
// reading the properties in `select` (empty = all). `fn` returns false to stop.
result<void> for_each_partition(const storage::table_client& table, std::string_view queue, std::vector<std::string> select,
                                const std::function<bool(const std::string&, partition_rows&)>& fn);

} // namespace shoal::workers::work_table_detail

namespace shoal::workers {

// The pieces of the work table all use the helpers above unqualified (they were one file).
using namespace work_table_detail;

struct work_table::impl {
  storage::table_client table;
  std::optional<storage::blob_client> blobs;
  std::optional<storage::table_client> history;
  work_table_options opts;
  mutable claim_counters counters;
  mutable storage::server_clock clock;
  mutable std::mutex rng_mu;
  mutable std::mt19937_64 rng{std::random_device{}()};
  mutable std::mutex layout_mu;
  mutable std::set<std::string> layout2; // partitions known to be on layout 2 (guarded by layout_mu)
  milliseconds lease{};
  milliseconds margin{};

  impl(storage::table_client t, std::optional<storage::blob_client> b, work_table_options o)
      : table(std::move(t)), blobs(std::move(b)), opts(std::move(o)), clock(opts.steady_now) {
    lease = milliseconds(opts.work.lease_ms);
    margin = opts.lease_safety_margin.count() > 0 ? opts.lease_safety_margin
                                                  : std::max(milliseconds(200), lease / 10);
    if (!opts.work.history_table.empty())
      if (auto h = storage::table_client::make(table.transport(), opts.work.history_table)) history = *h;
  }

  steady_tp steady_now() const { return clock.steady_now(); }

  double unit() const {
    if (opts.random_unit) return opts.random_unit();
    std::lock_guard lock(rng_mu);
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  }

  template <class T> void shuffle(std::vector<T>& v) const {
    for (std::size_t i = v.size(); i > 1; --i) {
      auto j = static_cast<std::size_t>(unit() * static_cast<double>(i));
      std::swap(v[i - 1], v[std::min(j, i - 1)]);
    }
  }

  // -- what the held-record changes are ---------------------------------------------------------
  enum class change { renew, complete, fail_pending, fail_dead, release };

  std::atomic<std::uint64_t>* request_counter(change c) const {
    return c == change::complete ? &counters.complete_requests : nullptr;
  }

  // True when the failure of a change of a held record says the ticket moved on: a 412 on its
  // conditional write, or a 404 because it was deleted.
  static bool ticket_moved(const change_outcome& o) {
    return o.failed_op == 0 && (o.err.code == storage::errc::precondition_failed || o.err.code == storage::errc::not_found);
  }

  // -- server clock and leases (work_table_lease.cpp) -----------------------------------------
  void observe(sys_tp date, const std::string& etag, steady_tp sent, steady_tp received) const;
  steady_tp deadline_for(steady_tp sent, sys_tp lease_until) const;
  result<sys_tp> server_now() const;
  result<void> sync() const;

  // -- writes (work_table_tx.cpp) -------------------------------------------------------------
  storage::result<std::string> single(const table_operation& o) const;
  storage::table_transaction_outcome submit(const storage::table_transaction& tx) const;
  change_outcome run_alone(const std::vector<table_operation>& ops, std::atomic<std::uint64_t>* requests) const;
  std::vector<change_outcome> apply_changes(const std::vector<std::vector<table_operation>>& changes, on_412 policy,
                                            std::atomic<std::uint64_t>* requests) const;

  // -- payloads and views (work_table_enqueue.cpp, work_table_views.cpp) ----------------------
  result<std::string> read_payload(const table_entity& e) const;
  record_view view(const table_entity& rec, const table_entity* ticket) const;
  record_view view_of_ticket(const table_entity& t) const;

  // -- layout (work_table_housekeeping.cpp) ---------------------------------------------------
  bool layout_known(const std::string& pk) const {
    std::lock_guard lock(layout_mu);
    return layout2.contains(pk);
  }

  result<void> ensure_layout(const std::string& pk, migrate_result* stats = nullptr, bool force = false) const;
  result<void> migrate_partition(const std::string& pk, migrate_result* stats) const;

  // -- held records (work_table_lease.cpp) ----------------------------------------------------
  error lease_lost_error(const claimed_record& r, const table_entity& cur, bool is_ticket_row) const;
  result<bool> resolve(claimed_record& r, change c) const;
  std::vector<table_operation> ops_for(const claimed_record& r, change c, sys_tp now, std::string_view error_text,
                                       bool count_attempt, std::string* new_ticket) const;
  void after_success(claimed_record& r, change c, steady_tp sent, sys_tp now, const std::vector<std::string>& etags,
                     const std::string& new_ticket) const;
  result<void> change_one(claimed_record& r, change c, std::string_view error_text, bool count_attempt) const;
  std::vector<result<void>> change_many(std::span<claimed_record* const> records, change c, bool count_attempt = false) const;

  // -- claiming (work_table_claim.cpp) --------------------------------------------------------
  claimed_record claim_of(std::string_view queue, std::uint32_t shard, const table_entity& t) const;
  storage::result<std::vector<table_entity>> claimable(const std::string& pk, sys_tp now, std::size_t top) const;
};

} // namespace shoal::workers
