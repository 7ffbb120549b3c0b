#include "workers/claim/work_table.hpp"

#include "storage/backoff.hpp"
#include "storage/encoding.hpp"

#include "workers/claim/key_escape.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>

namespace shoal::workers {

using namespace std::chrono;
using storage::table_entity;
using storage::table_filter;
using storage::table_operation;
using storage::table_operation_kind;
using storage::table_time;
using steady_tp = steady_clock::time_point;
using sys_tp = system_clock::time_point;

namespace {

// -- property names (workers/claim/SCHEMA.md "Properties") --------------------------------------------
constexpr const char* p_status = "status";
constexpr const char* p_owner = "owner";
constexpr const char* p_gen = "gen";
constexpr const char* p_attempts = "attempts";
constexpr const char* p_lease_until = "lease_until";
constexpr const char* p_not_before = "not_before";
constexpr const char* p_payload = "payload";
constexpr const char* p_payload_blob = "payload_blob";
constexpr const char* p_payload_bytes = "payload_bytes";
constexpr const char* p_last_error = "last_error";
constexpr const char* p_created = "created";
constexpr const char* p_updated = "updated";
constexpr const char* p_ticket = "ticket";
constexpr const char* p_layout = "layout";
constexpr const char* p_done_removed = "done_removed";

// -- stored status values -------------------------------------------------------------------------
// Record rows: open (the ticket holds pending/claimed), done, dead; layout 1 wrote pending and
// claimed on the record row itself. Tickets: pending, claimed.
const std::string s_pending = "pending";
const std::string s_claimed = "claimed";
const std::string s_open = "open";
const std::string s_done = "done";
const std::string s_dead = "dead";

// -- row keys (workers/claim/SCHEMA.md "Keys") ----------------------------------------------------------
// An escaped record id never holds a '%' followed by anything but two hex digits, so keys that
// start with "%|" (tickets) or "%~" (the meta row) can never be a record's.
constexpr std::string_view ticket_prefix = "%|";
constexpr std::string_view ticket_end = "%}"; // first key after every ticket
constexpr std::string_view meta_key = "%~meta";
constexpr std::size_t ticket_time_chars = 28; // 2024-01-02T03:04:05.1234567Z
constexpr std::size_t ticket_head_chars = 2 + ticket_time_chars + 1;
constexpr std::int32_t layout_version = 2;

constexpr std::size_t max_last_error_bytes = 8 * 1024;
constexpr std::size_t max_tx_body_bytes = 3'500'000; // under the 4 MiB $batch limit, with room for framing
constexpr std::size_t max_tx_ops = storage::table_limits::max_batch_operations;

table_time tt(sys_tp t) { return storage::to_table_time(t); }
table_time epoch_tt() { return table_time{}; }
sys_tp as_sys(table_time t) { return sys_tp(duration_cast<system_clock::duration>(t.time_since_epoch())); }

// "%|{due}|{rk}": due truncated to the 100 ns of Edm.DateTime, the same value as not_before.
std::string ticket_key(sys_tp due, std::string_view rk) {
  std::string k(ticket_prefix);
  k += storage::format_iso8601(as_sys(tt(due)));
  k += '|';
  k += rk;
  return k;
}
// Every ticket due strictly before `now` sorts below this key.
std::string ticket_bound(sys_tp now) { return std::string(ticket_prefix) + storage::format_iso8601(as_sys(tt(now))); }
bool is_ticket(std::string_view rk) { return rk.starts_with(ticket_prefix); }
bool is_meta(std::string_view rk) { return rk.starts_with("%~"); }
// The record RowKey a ticket belongs to ("" when the key is malformed).
std::string_view ticket_record_key(std::string_view tk) {
  if (!is_ticket(tk) || tk.size() <= ticket_head_chars || tk[ticket_head_chars - 1] != '|') return {};
  return tk.substr(ticket_head_chars);
}
table_filter ticket_range() {
  return table_filter::ge("RowKey", std::string(ticket_prefix)) && table_filter::lt("RowKey", std::string(ticket_end));
}
// Rows that are neither tickets nor meta: record rows.
table_filter record_rows() {
  return table_filter::lt("RowKey", std::string(ticket_prefix)) || table_filter::ge("RowKey", std::string(ticket_end));
}

// Bytes `s` takes as a JSON string value (escapes included).
std::size_t json_string_bytes(std::string_view s) {
  std::size_t n = s.size() + 2;
  for (unsigned char c : s) {
    if (c < 0x20) n += 5;
    else if (c == '"' || c == '\\') n += 1;
  }
  return n;
}

// Cuts `s` to at most `max` bytes without splitting a UTF-8 sequence.
std::string truncate_utf8(std::string_view s, std::size_t max) {
  if (s.size() <= max) return std::string(s);
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n));
}

std::int64_t int_prop(const table_entity& e, std::string_view name) {
  if (const auto* v = e.get<std::int64_t>(name)) return *v;
  if (const auto* v = e.get<std::int32_t>(name)) return *v;
  if (const auto* v = e.get<double>(name)) return static_cast<std::int64_t>(*v);
  if (const auto* v = e.get<std::string>(name)) {
    try { return std::stoll(*v); } catch (...) { return 0; }
  }
  return 0;
}

std::string str_prop(const table_entity& e, std::string_view name) {
  if (const auto* v = e.get<std::string>(name)) return *v;
  return {};
}

sys_tp time_prop(const table_entity& e, std::string_view name) {
  if (const auto* v = e.get<table_time>(name)) return as_sys(*v);
  return {};
}

// The status of a ticket or a layout-1 record row (pending/claimed), or of a settled record.
std::optional<record_status> status_prop(const table_entity& e) {
  auto s = parse_record_status(str_prop(e, p_status));
  if (!s) return std::nullopt;
  return *s;
}

// Parses "{queue}-{shard:02x}".
std::uint32_t shard_from_partition(std::string_view pk) {
  auto dash = pk.rfind('-');
  if (dash == std::string_view::npos) return 0;
  std::uint32_t v = 0;
  for (char c : pk.substr(dash + 1)) {
    int d = storage::hex_value(c);
    v = v * 16 + static_cast<std::uint32_t>(std::max(d, 0));
  }
  return v;
}

std::string id_from_key(std::string_view rk) {
  auto id = unescape_key(rk);
  return id ? *id : std::string(rk);
}

std::string payload_blob_name(std::string_view queue, std::uint32_t shard, std::string_view rk) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%02x", shard & 0xFFu);
  return "work/" + std::string(queue) + "/" + buf + "/" + std::string(rk) + ".payload";
}

table_filter queue_filter(std::string_view queue) {
  return table_filter::starts_with("PartitionKey", std::string(queue) + "-");
}

error storage_error(const storage::error& e, std::string_view what) {
  error out = error::from_storage(e, what);
  if (e.code == storage::errc::not_found) out.code = errc::not_found;
  return out;
}

table_entity keys_of(std::string_view pk, std::string_view rk) {
  table_entity e;
  e.partition_key = std::string(pk);
  e.row_key = std::string(rk);
  return e;
}

table_operation op(table_operation_kind k, table_entity e, std::string if_match = "*") {
  return table_operation{k, std::move(e), std::move(if_match)};
}
table_operation del(std::string_view pk, std::string_view rk, std::string if_match) {
  return op(table_operation_kind::delete_entity, keys_of(pk, rk), std::move(if_match));
}

// Copies the payload columns of `from` (a record row or a ticket) into `to`.
void copy_payload(const table_entity& from, table_entity& to) {
  for (const char* p : {p_payload, p_payload_blob, p_payload_bytes})
    if (const auto* v = from.find(p)) to.set(p, *v);
}

// A ticket for record row key `rk` due at `due` with the given state; payload from `src`.
table_entity make_ticket(std::string_view pk, std::string_view rk, sys_tp due, const std::string& status,
                         const std::string& owner, std::int64_t gen, std::int32_t attempts, table_time lease_until,
                         const std::string& last_error, const table_entity& payload_src, sys_tp now) {
  table_entity t = keys_of(pk, ticket_key(due, rk));
  t.set(p_status, status);
  t.set(p_owner, owner);
  t.set(p_gen, gen);
  t.set(p_attempts, attempts);
  t.set(p_lease_until, lease_until);
  t.set(p_not_before, tt(due));
  if (!last_error.empty()) t.set(p_last_error, last_error);
  copy_payload(payload_src, t);
  t.set(p_updated, tt(now));
  return t;
}

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

} // namespace

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

// -- impl -----------------------------------------------------------------------------------------

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

  void observe(sys_tp date, const std::string& etag, steady_tp sent, steady_tp received) const {
    if (date.time_since_epoch().count() > 0) clock.observe(date, sent, received, seconds(1));
    if (auto t = storage::etag_time(etag)) clock.observe(*t, sent, received, milliseconds(1)); // JS Date: ms
  }

  // The local deadline of a lease `lease_until` written with a request sent at `sent`: the
  // server's time at `sent` was at most upper_bound_at(sent) (the tightest bound known now,
  // which may include samples from the response itself), so the lease lasts at least
  // lease_until − upper from `sent`; minus the safety margin.
  steady_tp deadline_for(steady_tp sent, sys_tp lease_until) const {
    auto upper = clock.upper_bound_at(sent);
    if (!upper) return sent; // cannot happen once a sample exists; treat the lease as gone
    return sent + duration_cast<steady_clock::duration>(lease_until - *upper) - margin;
  }

  result<sys_tp> server_now() const {
    if (auto n = clock.now()) return *n;
    if (auto ok = sync(); !ok) return std::unexpected(ok.error());
    if (auto n = clock.now()) return *n;
    return workers::fail(errc::storage, "the storage service sent no Date header: server time unknown");
  }

  result<void> sync() const {
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

  // -- writes ------------------------------------------------------------------------------------

  // One operation as its own request (no $batch framing). The new ETag ("" for a delete).
  storage::result<std::string> single(const table_operation& o) const {
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

  storage::table_transaction_outcome submit(const storage::table_transaction& tx) const {
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
  change_outcome run_alone(const std::vector<table_operation>& ops, std::atomic<std::uint64_t>* requests) const {
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
  std::vector<change_outcome> apply_changes(const std::vector<std::vector<table_operation>>& changes, on_412 policy,
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

  // -- reading -----------------------------------------------------------------------------------

  result<std::string> read_payload(const table_entity& e) const {
    auto ref = str_prop(e, p_payload_blob);
    if (ref.empty()) return str_prop(e, p_payload);
    if (!blobs) return workers::fail(errc::invalid_argument, "record payload is in blob " + ref + " but no blob client is configured");
    auto slash = ref.find('/');
    if (slash == std::string::npos) return workers::fail(errc::parse, "bad payload_blob reference '" + ref + "'");
    auto b = blobs->get_blob(std::string_view(ref).substr(0, slash), std::string_view(ref).substr(slash + 1));
    if (!b) return std::unexpected(storage_error(b.error(), "reading payload blob " + ref));
    return std::move(b->body);
  }

  // The view of a record from its record row and, while it is open, its ticket.
  record_view view(const table_entity& rec, const table_entity* ticket) const {
    record_view v;
    v.partition_key = rec.partition_key;
    v.row_key = rec.row_key;
    auto dash = rec.partition_key.rfind('-');
    v.queue = dash == std::string::npos ? rec.partition_key : rec.partition_key.substr(0, dash);
    v.shard = shard_from_partition(rec.partition_key);
    v.id = id_from_key(rec.row_key);
    const table_entity& st = ticket ? *ticket : rec;
    v.status = status_prop(st).value_or(record_status::pending); // "open" without its ticket: pending
    v.owner = str_prop(st, p_owner);
    v.gen = int_prop(st, p_gen);
    v.attempts = static_cast<std::int32_t>(int_prop(st, p_attempts));
    v.not_before = time_prop(st, p_not_before);
    v.lease_until = time_prop(st, p_lease_until);
    v.last_error = st.find(p_last_error) ? str_prop(st, p_last_error) : str_prop(rec, p_last_error);
    v.payload = str_prop(rec, p_payload);
    v.payload_blob = str_prop(rec, p_payload_blob);
    v.payload_bytes = int_prop(rec, p_payload_bytes);
    v.created = time_prop(rec, p_created);
    v.updated = time_prop(st, p_updated);
    const auto& ts = st.timestamp ? st.timestamp : rec.timestamp;
    if (ts) v.timestamp = as_sys(*ts);
    v.etag = st.etag;
    return v;
  }

  // A view of a ticket alone (list): the record row's created time is not known.
  record_view view_of_ticket(const table_entity& t) const {
    table_entity rec = keys_of(t.partition_key, ticket_record_key(t.row_key));
    copy_payload(t, rec);
    return view(rec, &t);
  }

  // -- layout ------------------------------------------------------------------------------------

  bool layout_known(const std::string& pk) const {
    std::lock_guard lock(layout_mu);
    return layout2.contains(pk);
  }

  // Makes sure partition `pk` is on layout 2: once per partition and process, a point read of
  // its meta row; a partition without one is migrated (SCHEMA.md "Migration").
  result<void> ensure_layout(const std::string& pk, migrate_result* stats = nullptr, bool force = false) const {
    if (!force && layout_known(pk)) return {};
    if (stats) ++stats->partitions;
    auto meta = table.get(pk, meta_key);
    if (meta && int_prop(*meta, p_layout) >= layout_version && !force) {
      std::lock_guard lock(layout_mu);
      layout2.insert(pk);
      if (stats) ++stats->already;
      return {};
    }
    if (!meta && meta.error().code != storage::errc::not_found)
      return std::unexpected(storage_error(meta.error(), "reading the meta row of " + pk));
    if (meta && int_prop(*meta, p_layout) >= layout_version && stats) ++stats->already;
    if (auto ok = migrate_partition(pk, stats); !ok) return ok;
    table_entity m = keys_of(pk, meta_key);
    m.set(p_layout, layout_version);
    if (auto w = single(op(table_operation_kind::insert_or_merge, m)); !w)
      return std::unexpected(storage_error(w.error(), "writing the meta row of " + pk));
    std::lock_guard lock(layout_mu);
    layout2.insert(pk);
    return {};
  }

  // Gives every layout-1 pending/claimed record of `pk` its ticket: per record one transaction
  // of a conditional merge of the record (status open, ticket) and the ticket's insert.
  result<void> migrate_partition(const std::string& pk, migrate_result* stats) const {
    storage::table_query q;
    q.filter = table_filter::partition(pk) &&
               (table_filter::eq(p_status, s_pending) || table_filter::eq(p_status, s_claimed)) && record_rows();
    auto legacy = table.query_all(q);
    if (!legacy) return std::unexpected(storage_error(legacy.error(), "listing layout-1 records of " + pk));
    if (legacy->empty()) return {};
    auto now = server_now();
    if (!now) return std::unexpected(now.error());
    std::vector<table_entity> todo = std::move(*legacy);
    for (int round = 0; round < 4 && !todo.empty(); ++round) {
      std::vector<std::vector<table_operation>> changes;
      std::vector<table_entity> sources;
      for (auto& e : todo) {
        if (e.row_key.size() > max_record_key_chars) {
          if (stats)
            stats->skipped.push_back(id_from_key(e.row_key) + ": id too long for a ticket key (" +
                                     std::to_string(e.row_key.size()) + " > " + std::to_string(max_record_key_chars) + ")");
          continue;
        }
        const std::string st = str_prop(e, p_status) == s_claimed ? s_claimed : s_pending;
        auto t = make_ticket(pk, e.row_key, time_prop(e, p_not_before), st, str_prop(e, p_owner), int_prop(e, p_gen),
                             static_cast<std::int32_t>(int_prop(e, p_attempts)),
                             e.find(p_lease_until) ? tt(time_prop(e, p_lease_until)) : epoch_tt(), str_prop(e, p_last_error), e, *now);
        table_entity patch = keys_of(pk, e.row_key);
        patch.set(p_status, s_open);
        patch.set(p_ticket, t.row_key);
        changes.push_back({op(table_operation_kind::merge, std::move(patch), e.etag), op(table_operation_kind::insert, std::move(t))});
        sources.push_back(std::move(e));
      }
      auto res = apply_changes(changes, on_412::resubmit, nullptr);
      std::vector<table_entity> again;
      for (std::size_t i = 0; i < res.size(); ++i) {
        if (res[i].ok()) {
          claim_counters::add(counters.migrated);
          if (stats) ++stats->migrated;
          continue;
        }
        if (res[i].err.code == storage::errc::precondition_failed || res[i].maybe_landed) {
          // The record changed since it was read (a layout-1 claimer, or our retried request
          // landed): read it again and migrate what it is now.
          auto cur = table.get(pk, sources[i].row_key);
          if (cur && (str_prop(*cur, p_status) == s_pending || str_prop(*cur, p_status) == s_claimed)) again.push_back(std::move(*cur));
          else if (!cur && cur.error().code != storage::errc::not_found)
            return std::unexpected(storage_error(cur.error(), "re-reading a layout-1 record of " + pk));
          continue;
        }
        if (stats) stats->skipped.push_back(id_from_key(sources[i].row_key) + ": " + res[i].err.describe());
      }
      todo = std::move(again);
    }
    for (const auto& e : todo)
      if (stats) stats->skipped.push_back(id_from_key(e.row_key) + ": kept changing during the migration");
    return {};
  }

  // -- held records ------------------------------------------------------------------------------

  error lease_lost_error(const claimed_record& r, const table_entity& cur, bool is_ticket_row) const {
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

  enum class change { renew, complete, fail_pending, fail_dead, release };

  // After a 412/404 (or an ambiguous failure) on a change of `r`: re-reads its ticket (and, when
  // the ticket is gone, the record row). Returns true when we still hold it (r.etag refreshed:
  // retry), false when the change is already applied (an earlier attempt landed), or
  // lease_lost / not_found / storage.
  result<bool> resolve(claimed_record& r, change c) const {
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
  std::vector<table_operation> ops_for(const claimed_record& r, change c, sys_tp now, std::string_view error_text,
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

  void after_success(claimed_record& r, change c, steady_tp sent, sys_tp now, const std::vector<std::string>& etags,
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

  std::atomic<std::uint64_t>* request_counter(change c) const {
    return c == change::complete ? &counters.complete_requests : nullptr;
  }

  // True when the failure of a change of a held record says the ticket moved on: a 412 on its
  // conditional write, or a 404 because it was deleted.
  static bool ticket_moved(const change_outcome& o) {
    return o.failed_op == 0 && (o.err.code == storage::errc::precondition_failed || o.err.code == storage::errc::not_found);
  }

  // One change of one held record, with 412 resolution (bounded).
  result<void> change_one(claimed_record& r, change c, std::string_view error_text, bool count_attempt) const {
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
  std::vector<result<void>> change_many(std::span<claimed_record* const> records, change c, bool count_attempt = false) const {
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

  // The claimed_record of ticket `t` (as the claim just wrote it).
  claimed_record claim_of(std::string_view queue, std::uint32_t shard, const table_entity& t) const {
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
  storage::result<std::vector<table_entity>> claimable(const std::string& pk, sys_tp now, std::size_t top) const {
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
};

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

// -- claim ----------------------------------------------------------------------------------------

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

// -- held records ---------------------------------------------------------------------------------

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

// -- views ------------------------------------------------------------------------------------------

result<record_view> work_table::get(std::string_view queue, std::string_view id, bool resolve_payload) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  auto rk = escape_key(id);
  if (!rk) return std::unexpected(rk.error());
  auto pk = partition_key(queue, shard_of(id, m.opts.work.shards));
  auto e = m.table.get(pk, *rk);
  if (!e) {
    if (e.error().code == storage::errc::not_found)
      return workers::fail(errc::not_found, "no record '" + std::string(id) + "' in queue '" + std::string(queue) + "'");
    return std::unexpected(storage_error(e.error(), "reading record '" + std::string(id) + "'"));
  }
  std::optional<table_entity> ticket;
  if (str_prop(*e, p_status) == s_open) {
    auto tk = str_prop(*e, p_ticket);
    auto t = tk.empty() ? storage::result<table_entity>(std::unexpected(storage::error::invalid("no ticket"))) : m.table.get(pk, tk);
    if (t) ticket = std::move(*t);
    else if (t.error().code != storage::errc::not_found && t.error().code != storage::errc::invalid_argument)
      return std::unexpected(storage_error(t.error(), "reading the ticket of record '" + std::string(id) + "'"));
  }
  auto v = m.view(*e, ticket ? &*ticket : nullptr);
  if (resolve_payload && !v.payload_blob.empty()) {
    auto p = m.read_payload(*e);
    if (!p) return std::unexpected(p.error());
    v.payload = std::move(*p);
  }
  return v;
}

namespace {

// The rows of one partition, by kind.
struct partition_rows {
  std::vector<table_entity> records;
  std::map<std::string, table_entity, std::less<>> tickets; // by ticket RowKey
  std::optional<table_entity> meta;
};

// Walks `queue` partition by partition (each partition's rows complete before `fn` sees them),
// reading the properties in `select` (empty = all). `fn` returns false to stop.
result<void> for_each_partition(const storage::table_client& table, std::string_view queue, std::vector<std::string> select,
                                const std::function<bool(const std::string&, partition_rows&)>& fn) {
  storage::table_query q;
  q.filter = queue_filter(queue);
  q.select = std::move(select);
  std::string current;
  partition_rows rows;
  bool stop = false;
  auto flush = [&] {
    if (!current.empty() && !stop) stop = !fn(current, rows);
    rows = partition_rows{};
  };
  auto n = table.for_each(q, [&](const table_entity& e) {
    if (e.partition_key != current) {
      flush();
      current = e.partition_key;
      if (stop) return false;
    }
    if (is_ticket(e.row_key)) rows.tickets.emplace(e.row_key, e);
    else if (is_meta(e.row_key)) rows.meta = e;
    else rows.records.push_back(e);
    return true;
  });
  if (!n) return std::unexpected(storage_error(n.error(), "reading queue " + std::string(queue)));
  flush();
  return {};
}

} // namespace

result<std::vector<record_view>> work_table::list(std::string_view queue, std::optional<record_status> status,
                                                  std::size_t max) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  std::vector<record_view> out;
  if (max == 0) return out;
  auto ok = for_each_partition(m.table, queue, {}, [&](const std::string&, partition_rows& rows) {
    for (const auto& rec : rows.records) {
      const table_entity* t = nullptr;
      if (str_prop(rec, p_status) == s_open) {
        auto it = rows.tickets.find(str_prop(rec, p_ticket));
        if (it != rows.tickets.end()) t = &it->second;
      }
      auto v = m.view(rec, t);
      if (status && v.status != *status) continue;
      out.push_back(std::move(v));
      if (out.size() >= max) return false;
    }
    return true;
  });
  if (!ok) return std::unexpected(ok.error());
  return out;
}

result<record_counts> work_table::counts(std::string_view queue) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  storage::table_query q;
  q.filter = queue_filter(queue);
  q.select = {"PartitionKey", "RowKey", p_status, p_done_removed}; // keys are returned only when selected
  record_counts out;
  auto n = m.table.for_each(q, [&](const table_entity& e) {
    const auto shard = shard_from_partition(e.partition_key);
    if (is_meta(e.row_key)) {
      const auto removed = static_cast<std::size_t>(std::max<std::int64_t>(0, int_prop(e, p_done_removed)));
      if (removed > 0) {
        out.by_status[record_status::done] += removed;
        out.by_shard[shard][record_status::done] += removed;
        out.total += removed;
        out.swept += removed;
      }
      return true;
    }
    if (!is_ticket(e.row_key) && str_prop(e, p_status) == s_open) return true; // counted by its ticket
    auto st = status_prop(e).value_or(record_status::pending);
    ++out.by_status[st];
    ++out.by_shard[shard][st];
    ++out.total;
    return true;
  });
  if (!n) return std::unexpected(storage_error(n.error(), "counting queue " + std::string(queue)));
  return out;
}

result<std::optional<std::pair<std::chrono::system_clock::time_point, bool>>>
work_table::oldest_waiting(std::string_view queue, std::size_t max_scan) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  const auto now = m.clock.now().value_or(std::chrono::system_clock::now());
  storage::table_query q;
  // Tickets that are pending, plus layout-1 record rows that still say so (not yet migrated).
  q.filter = queue_filter(queue) && table_filter::eq(p_status, std::string("pending"));
  q.select = {"RowKey", p_not_before, p_updated, p_created};
  q.max_entities = max_scan;
  std::optional<std::chrono::system_clock::time_point> oldest;
  std::size_t seen = 0;
  auto n = m.table.for_each(q, [&](const table_entity& e) {
    ++seen;
    std::optional<std::chrono::system_clock::time_point> since;
    if (is_ticket(e.row_key)) {
      const sys_tp due = time_prop(e, p_not_before), upd = time_prop(e, p_updated);
      if (due > now) return true; // backing off: not waiting yet
      since = std::max(due, upd);
    } else if (e.properties.contains(p_created)) {
      since = time_prop(e, p_created);
    }
    if (since && *since != sys_tp{} && (!oldest || *since < *oldest)) oldest = since;
    return true;
  });
  if (!n) return std::unexpected(storage_error(n.error(), "reading the pending records of " + std::string(queue)));
  if (!oldest) return std::optional<std::pair<std::chrono::system_clock::time_point, bool>>{};
  return std::optional{std::pair{*oldest, seen >= max_scan}};
}

result<bool> work_table::has_open(std::string_view queue) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  for (std::uint32_t shard = 0; shard < m.opts.work.shards; ++shard) {
    const std::string pk = partition_key(queue, shard);
    if (auto ok = m.ensure_layout(pk); !ok) return std::unexpected(ok.error());
    storage::table_query q;
    q.filter = table_filter::partition(pk) && ticket_range();
    q.select = {"PartitionKey"};
    q.page_size = 1;
    q.max_entities = 1;
    auto all = m.table.query_all(q);
    if (!all) return std::unexpected(storage_error(all.error(), "checking queue " + std::string(queue)));
    if (!all->empty()) return true;
  }
  return false;
}

// -- operator changes -------------------------------------------------------------------------------

namespace {

// A record selected by requeue/purge: its row and, while open, its ticket.
struct target {
  table_entity record;
  std::optional<table_entity> ticket;
};

} // namespace

// The records `which` selects, by (PK, RK).
static result<std::vector<target>> select_targets(const work_table& t, const storage::table_client& table, std::string_view queue,
                                                  const record_selector& which) {
  const auto shards = t.options().work.shards;
  std::map<std::pair<std::string, std::string>, target> found;
  auto add_record = [&](table_entity rec) -> result<void> {
    target tg{std::move(rec), std::nullopt};
    if (str_prop(tg.record, p_status) == s_open) {
      auto tk = str_prop(tg.record, p_ticket);
      if (!tk.empty()) {
        auto tr = table.get(tg.record.partition_key, tk);
        if (tr) tg.ticket = std::move(*tr);
        else if (tr.error().code != storage::errc::not_found)
          return std::unexpected(storage_error(tr.error(), "reading a ticket of " + tg.record.partition_key));
      }
    }
    auto key = std::pair{tg.record.partition_key, tg.record.row_key};
    found.insert_or_assign(std::move(key), std::move(tg));
    return {};
  };
  for (const auto& id : which.ids) {
    auto rk = escape_key(id);
    if (!rk) return std::unexpected(rk.error());
    auto pk = partition_key(queue, shard_of(id, shards));
    auto e = table.get(pk, *rk);
    if (!e) {
      if (e.error().code == storage::errc::not_found) continue;
      return std::unexpected(storage_error(e.error(), "reading record '" + id + "'"));
    }
    if (auto ok = add_record(std::move(*e)); !ok) return std::unexpected(ok.error());
  }
  // Settled records by status: record rows. Open ones (pending, claimed, stuck): their tickets.
  table_filter settled, live;
  for (auto s : which.statuses) {
    if (s == record_status::done || s == record_status::dead) settled = settled || table_filter::eq(p_status, std::string(to_string(s)));
    else live = live || table_filter::eq(p_status, std::string(to_string(s)));
  }
  if (which.stuck) {
    auto now = t.clock().now();
    if (!now) {
      if (auto ok = t.sync_clock(); !ok) return std::unexpected(ok.error());
      now = t.clock().now();
    }
    live = live || (table_filter::eq(p_status, s_claimed) && table_filter::lt(p_lease_until, tt(*now)));
  }
  if (!settled.empty()) {
    storage::table_query q;
    q.filter = queue_filter(queue) && settled && record_rows();
    auto all = table.query_all(q);
    if (!all) return std::unexpected(storage_error(all.error(), "selecting records of " + std::string(queue)));
    for (auto& e : *all)
      if (auto ok = add_record(std::move(e)); !ok) return std::unexpected(ok.error());
  }
  if (!live.empty()) {
    storage::table_query q;
    q.filter = queue_filter(queue) && ticket_range() && live;
    auto all = table.query_all(q);
    if (!all) return std::unexpected(storage_error(all.error(), "selecting records of " + std::string(queue)));
    for (auto& tk : *all) {
      auto rk = std::string(ticket_record_key(tk.row_key));
      if (rk.empty() || found.contains({tk.partition_key, rk})) continue;
      auto rec = table.get(tk.partition_key, rk);
      if (!rec) {
        if (rec.error().code == storage::errc::not_found) continue;
        return std::unexpected(storage_error(rec.error(), "reading a record of " + tk.partition_key));
      }
      found.insert_or_assign(std::pair{tk.partition_key, rk}, target{std::move(*rec), std::move(tk)});
    }
  }
  std::vector<target> out;
  for (auto& [k, tg] : found) out.push_back(std::move(tg));
  return out;
}

result<std::size_t> work_table::requeue(std::string_view queue, const record_selector& which) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  for (std::uint32_t s = 0; s < m.opts.work.shards; ++s)
    if (auto ok = m.ensure_layout(partition_key(queue, s)); !ok) return std::unexpected(ok.error());
  auto targets = select_targets(*this, m.table, queue, which);
  if (!targets) return std::unexpected(targets.error());
  auto now = m.server_now();
  if (!now) return std::unexpected(now.error());
  // The transaction that requeues one target, or none (open without a ticket: check() says so).
  auto requeue_ops = [&](const target& tg) -> std::optional<std::vector<table_operation>> {
    const auto& rec = tg.record;
    const auto& pk = rec.partition_key;
    const std::string k0 = ticket_key(sys_tp{}, rec.row_key); // claimable at once
    std::vector<table_operation> ops;
    if (tg.ticket) {
      const auto& t = *tg.ticket;
      if (t.row_key == k0) {
        table_entity p = keys_of(pk, k0);
        p.set(p_status, s_pending);
        p.set(p_attempts, std::int32_t{0});
        p.set(p_lease_until, epoch_tt());
        p.set(p_not_before, epoch_tt());
        p.set(p_updated, tt(*now));
        ops.push_back(op(table_operation_kind::merge, std::move(p), t.etag));
      } else {
        auto nt = make_ticket(pk, rec.row_key, sys_tp{}, s_pending, str_prop(t, p_owner), int_prop(t, p_gen), 0, epoch_tt(),
                              str_prop(t, p_last_error), t, *now);
        table_entity rp = keys_of(pk, rec.row_key);
        rp.set(p_ticket, k0);
        rp.set(p_updated, tt(*now));
        ops.push_back(del(pk, t.row_key, t.etag));
        ops.push_back(op(table_operation_kind::insert, std::move(nt)));
        ops.push_back(op(table_operation_kind::merge, std::move(rp), rec.etag));
      }
    } else if (str_prop(rec, p_status) == s_done || str_prop(rec, p_status) == s_dead) {
      auto nt = make_ticket(pk, rec.row_key, sys_tp{}, s_pending, str_prop(rec, p_owner), int_prop(rec, p_gen), 0, epoch_tt(),
                            str_prop(rec, p_last_error), rec, *now);
      table_entity rp = keys_of(pk, rec.row_key);
      rp.set(p_status, s_open);
      rp.set(p_ticket, k0);
      rp.set(p_attempts, std::int32_t{0});
      rp.set(p_updated, tt(*now));
      ops.push_back(op(table_operation_kind::merge, std::move(rp), rec.etag));
      ops.push_back(op(table_operation_kind::insert, std::move(nt)));
    } else {
      return std::nullopt;
    }
    return ops;
  };
  // Whether a target read again is still one `which` selects (a holder's renewal or a claim
  // changed it meanwhile: an id named, or a status still matching, is requeued all the same; a
  // "stuck" claim whose lease was renewed is not stuck any more).
  auto still_selected = [&](const target& tg) {
    if (std::find(which.ids.begin(), which.ids.end(), id_from_key(tg.record.row_key)) != which.ids.end()) return true;
    const table_entity& st = tg.ticket ? *tg.ticket : tg.record;
    auto s = status_prop(st);
    if (s && which.statuses.contains(*s)) return true;
    return which.stuck && tg.ticket && str_prop(*tg.ticket, p_status) == s_claimed && time_prop(*tg.ticket, p_lease_until) < *now;
  };
  std::size_t n = 0;
  std::vector<target> todo = std::move(*targets);
  for (int round = 0; round < 4 && !todo.empty(); ++round) {
    std::map<std::string, std::vector<std::size_t>> groups;
    std::vector<std::vector<table_operation>> all_ops(todo.size());
    for (std::size_t i = 0; i < todo.size(); ++i) {
      auto ops = requeue_ops(todo[i]);
      if (!ops) continue;
      all_ops[i] = std::move(*ops);
      groups[todo[i].record.partition_key].push_back(i);
    }
    std::vector<target> again;
    for (auto& [pk, idx] : groups) {
      std::vector<std::vector<table_operation>> changes;
      for (auto i : idx) changes.push_back(all_ops[i]);
      auto res = m.apply_changes(changes, on_412::resubmit, nullptr);
      for (std::size_t k = 0; k < res.size(); ++k) {
        if (res[k].ok()) {
          ++n;
          continue;
        }
        if (res[k].err.code != storage::errc::precondition_failed && res[k].err.code != storage::errc::not_found && !res[k].maybe_landed)
          continue;
        // Changed since it was read: read it again.
        const auto& rec = todo[idx[k]].record;
        auto cur = m.table.get(pk, rec.row_key);
        if (!cur) continue; // purged meanwhile
        target tg{std::move(*cur), std::nullopt};
        if (str_prop(tg.record, p_status) == s_open) {
          auto t = m.table.get(pk, str_prop(tg.record, p_ticket));
          if (!t) continue;
          tg.ticket = std::move(*t);
        }
        if (still_selected(tg)) again.push_back(std::move(tg));
      }
    }
    todo = std::move(again);
  }
  return n;
}

result<std::size_t> work_table::purge(std::string_view queue, const record_selector& which) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  for (std::uint32_t s = 0; s < m.opts.work.shards; ++s)
    if (auto ok = m.ensure_layout(partition_key(queue, s)); !ok) return std::unexpected(ok.error());
  auto targets = select_targets(*this, m.table, queue, which);
  if (!targets) return std::unexpected(targets.error());
  std::map<std::string, std::vector<std::pair<std::vector<table_operation>, std::string>>> groups;
  for (const auto& tg : *targets) {
    std::vector<table_operation> ops{del(tg.record.partition_key, tg.record.row_key, tg.record.etag)};
    if (tg.ticket) ops.push_back(del(tg.ticket->partition_key, tg.ticket->row_key, tg.ticket->etag));
    groups[tg.record.partition_key].push_back({std::move(ops), str_prop(tg.record, p_payload_blob)});
  }
  std::size_t n = 0;
  for (auto& [pk, items] : groups) {
    std::vector<std::vector<table_operation>> changes;
    for (auto& it : items) changes.push_back(it.first);
    auto res = m.apply_changes(changes, on_412::resubmit, nullptr);
    for (std::size_t i = 0; i < res.size(); ++i) {
      if (!res[i].ok()) continue;
      ++n;
      const auto& ref = items[i].second;
      if (!ref.empty() && m.blobs) {
        auto slash = ref.find('/');
        if (slash != std::string::npos) (void)m.blobs->delete_blob(std::string_view(ref).substr(0, slash), std::string_view(ref).substr(slash + 1));
      }
    }
  }
  return n;
}

// -- housekeeping -----------------------------------------------------------------------------------

result<sweep_result> work_table::sweep(std::string_view queue, std::span<const std::uint32_t> shards,
                                       std::optional<milliseconds> retention) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  std::vector<std::uint32_t> which(shards.begin(), shards.end());
  if (which.empty())
    for (std::uint32_t s = 0; s < m.opts.work.shards; ++s) which.push_back(s);
  auto now = m.server_now();
  if (!now) return std::unexpected(now.error());
  const sys_tp cutoff = *now - retention.value_or(milliseconds(m.opts.work.done_retention_ms));
  sweep_result out;
  for (auto shard : which) {
    if (shard >= m.opts.work.shards)
      return workers::fail(errc::invalid_argument, "shard " + std::to_string(shard) + " out of range");
    const std::string pk = partition_key(queue, shard);
    ++out.partitions;
    storage::table_query q;
    q.filter = table_filter::partition(pk) && table_filter::eq(p_status, s_done) && table_filter::lt(p_updated, tt(cutoff));
    if (!m.history) q.select = {"PartitionKey", "RowKey", p_status};
    auto done = m.table.query_all(q);
    if (!done) return std::unexpected(storage_error(done.error(), "listing done records of " + pk));
    if (done->empty()) continue;
    // The meta row: its count of removed records moves with every deleting transaction.
    std::optional<table_entity> meta;
    auto read_meta = [&]() -> result<void> {
      auto mr = m.table.get(pk, meta_key);
      if (mr) meta = std::move(*mr);
      else if (mr.error().code == storage::errc::not_found) meta.reset();
      else return std::unexpected(storage_error(mr.error(), "reading the meta row of " + pk));
      return {};
    };
    if (auto ok = read_meta(); !ok) return std::unexpected(ok.error());
    std::size_t pos = 0;
    while (pos < done->size()) {
      std::vector<table_entity*> chunk;
      std::size_t bytes = 0;
      while (pos < done->size() && chunk.size() < max_tx_ops - 1) {
        const std::size_t b = 1200 + 2 * (*done)[pos].row_key.size() + json_string_bytes(str_prop((*done)[pos], p_payload)) +
                              json_string_bytes(str_prop((*done)[pos], p_last_error));
        if (!chunk.empty() && bytes + b > max_tx_body_bytes) break;
        bytes += b;
        chunk.push_back(&(*done)[pos++]);
      }
      if (m.history) {
        // Copies first (idempotent upserts): a crash before the delete leaves a copy of a record
        // that is still here, which the next sweep writes again.
        storage::table_transaction copies;
        for (auto* e : chunk) {
          table_entity c = *e;
          c.etag.clear();
          c.timestamp.reset();
          copies.insert_or_replace(std::move(c));
        }
        if (auto r = m.history->submit_transaction(copies); !r)
          return std::unexpected(storage_error(r.error(), "copying done records of " + pk + " to " + m.history->name()));
      }
      for (int round = 0; round < 8 && !chunk.empty(); ++round) {
        storage::table_transaction tx;
        for (auto* e : chunk) tx.delete_entity(pk, e->row_key, e->etag);
        const std::int64_t before = meta ? int_prop(*meta, p_done_removed) : 0;
        table_entity mp = keys_of(pk, meta_key);
        mp.set(p_done_removed, before + static_cast<std::int64_t>(chunk.size()));
        if (meta) tx.merge(mp, meta->etag);
        else tx.insert(mp);
        auto r = m.submit(tx);
        if (r) {
          out.removed += chunk.size();
          if (m.history) out.archived += chunk.size();
          claim_counters::add(m.counters.swept, chunk.size());
          meta = mp;
          meta->etag = r->etags.empty() ? std::string() : r->etags.back();
          if (meta->etag.empty()) {
            if (auto ok = read_meta(); !ok) return std::unexpected(ok.error());
          }
          break;
        }
        const auto& err = r.error();
        if (err.failed_index && *err.failed_index < chunk.size() &&
            (err.code == storage::errc::precondition_failed || err.code == storage::errc::not_found)) {
          chunk.erase(chunk.begin() + static_cast<std::ptrdiff_t>(*err.failed_index)); // requeued or purged meanwhile
          continue;
        }
        if (err.failed_index && *err.failed_index == chunk.size()) { // another sweeper moved the meta row
          if (auto ok = read_meta(); !ok) return std::unexpected(ok.error());
          continue;
        }
        return std::unexpected(storage_error(err, "removing done records of " + pk));
      }
    }
  }
  return out;
}

result<migrate_result> work_table::migrate(std::string_view queue) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  migrate_result out;
  for (std::uint32_t s = 0; s < m.opts.work.shards; ++s)
    if (auto ok = m.ensure_layout(partition_key(queue, s), &out, true); !ok) return std::unexpected(ok.error());
  return out;
}

result<check_result> work_table::check(std::string_view queue) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  check_result out;
  auto problem = [&](std::string s) {
    if (out.problems.size() < 1000) out.problems.push_back(std::move(s));
  };
  auto ok = for_each_partition(m.table, queue, {"PartitionKey", "RowKey", p_status, p_ticket, p_owner, p_gen},
                               [&](const std::string& pk, partition_rows& rows) {
    out.records += rows.records.size();
    out.tickets += rows.tickets.size();
    std::set<std::string, std::less<>> pointed;
    for (const auto& rec : rows.records) {
      const auto st = str_prop(rec, p_status);
      const auto tk = str_prop(rec, p_ticket);
      const auto where = pk + "/" + id_from_key(rec.row_key);
      if (st == s_open) {
        ++out.open;
        auto it = rows.tickets.find(tk);
        if (tk.empty()) problem(where + ": open without a ticket key");
        else if (it == rows.tickets.end()) problem(where + ": open, its ticket " + tk + " is missing");
        else if (ticket_record_key(tk) != rec.row_key) problem(where + ": its ticket " + tk + " names another record");
        pointed.insert(tk);
      } else if (st == s_done || st == s_dead) {
        if (!tk.empty()) problem(where + ": " + st + " but still names ticket " + tk);
      } else if (st == s_pending || st == s_claimed) {
        problem(where + ": layout 1 (" + st + " without a ticket): run `shoal records migrate`");
      } else {
        problem(where + ": unknown status '" + st + "'");
      }
    }
    for (const auto& [tk, t] : rows.tickets) {
      const auto st = str_prop(t, p_status);
      if (st != s_pending && st != s_claimed) problem(pk + "/" + tk + ": ticket with status '" + st + "'");
      if (!pointed.contains(tk)) problem(pk + "/" + tk + ": ticket of no open record (" + std::string(ticket_record_key(tk)) + ")");
    }
    return true;
  });
  if (!ok) return std::unexpected(ok.error());
  return out;
}

} // namespace shoal::workers
