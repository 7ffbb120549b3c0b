#include "workers/work_table.hpp"

#include "storage/encoding.hpp"

#include "workers/key_escape.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <random>
#include <unordered_map>
#include <utility>

namespace shoal::workers {

using namespace std::chrono;
using storage::table_entity;
using storage::table_filter;
using storage::table_time;
using steady_tp = steady_clock::time_point;

namespace {

// -- property names (workers/SCHEMA.md "Properties") --------------------------------------------
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

constexpr std::size_t max_last_error_bytes = 8 * 1024;
constexpr std::size_t max_tx_body_bytes = 3'500'000; // under the 4 MiB $batch limit, with room for framing

table_time tt(system_clock::time_point t) { return storage::to_table_time(t); }
table_time epoch_tt() { return table_time{}; }

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

system_clock::time_point time_prop(const table_entity& e, std::string_view name) {
  if (const auto* v = e.get<table_time>(name)) return system_clock::time_point(duration_cast<system_clock::duration>(v->time_since_epoch()));
  return {};
}

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
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : 0;
    v = v * 16 + static_cast<std::uint32_t>(d);
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

// One conditional write of a batch.
struct cond_op {
  bool del = false;
  table_entity patch; // keys + properties to merge (keys only for a delete)
  std::string etag;
};

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
  double d = static_cast<double>(base.count());
  for (std::uint32_t i = 1; i < attempts && d < static_cast<double>(max.count()); ++i) d *= 2;
  d = std::min(d, static_cast<double>(max.count()));
  d *= 1.0 + 0.4 * (std::clamp(unit, 0.0, 1.0) - 0.5);
  return milliseconds(static_cast<std::int64_t>(std::max(0.0, d)));
}

// -- impl -----------------------------------------------------------------------------------------

struct work_table::impl {
  storage::table_client table;
  std::optional<storage::blob_client> blobs;
  work_table_options opts;
  mutable claim_counters counters;
  mutable server_clock clock;
  mutable std::mutex rng_mu;
  mutable std::mt19937_64 rng{std::random_device{}()};
  milliseconds lease{};
  milliseconds margin{};

  impl(storage::table_client t, std::optional<storage::blob_client> b, work_table_options o)
      : table(std::move(t)), blobs(std::move(b)), opts(std::move(o)), clock(opts.steady_now) {
    lease = milliseconds(opts.work.lease_ms);
    margin = opts.lease_safety_margin.count() > 0 ? opts.lease_safety_margin
                                                  : std::max(milliseconds(200), lease / 10);
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

  void observe(system_clock::time_point date, const std::string& etag, steady_tp sent, steady_tp received) const {
    if (date.time_since_epoch().count() > 0) clock.observe(date, sent, received, seconds(1));
    if (auto t = etag_time(etag)) clock.observe(*t, sent, received, milliseconds(1)); // JS Date: ms
  }

  // The local deadline of a lease `lease_until` written with a request sent at `sent`: the
  // server's time at `sent` was at most upper_bound_at(sent) (the tightest bound known now,
  // which may include samples from the response itself), so the lease lasts at least
  // lease_until − upper from `sent`; minus the safety margin.
  steady_tp deadline_for(steady_tp sent, system_clock::time_point lease_until) const {
    auto upper = clock.upper_bound_at(sent);
    if (!upper) return sent; // cannot happen once a sample exists; treat the lease as gone
    return sent + duration_cast<steady_clock::duration>(lease_until - *upper) - margin;
  }

  result<system_clock::time_point> server_now() const {
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

  // A merge with timing: observes the clock on success.
  storage::result<storage::table_write_result> merge(const table_entity& patch, std::string_view etag) const {
    auto sent = steady_now();
    auto r = table.merge(patch, etag);
    if (r) observe(r->server_time, r->etag, sent, steady_now());
    return r;
  }

  storage::table_transaction_outcome submit(const storage::table_transaction& tx, steady_tp sent) const {
    auto r = table.submit_transaction(tx);
    if (r) observe(r->server_time, r->etags.empty() ? std::string() : r->etags.front(), sent, steady_now());
    return r;
  }

  // Applies conditional ops of ONE partition, batched by ≤ `batch`. Per op: the new ETag or
  // the storage error. An op the service rejects by index is failed alone and the rest is
  // resubmitted; with `singles_after_412` a 412 sends the rest one by one instead (claims),
  // giving up after max_consecutive_contention 412s in a row (those get precondition_failed).
  // `maybe_landed[i]` is set when op i failed after a retried request (an earlier attempt may
  // have been applied).
  std::vector<storage::result<std::string>> apply(const std::vector<cond_op>& ops, std::size_t batch,
                                                  bool singles_after_412, std::vector<bool>* maybe_landed,
                                                  std::atomic<std::uint64_t>* request_counter) const {
    std::vector<storage::result<std::string>> out(ops.size(), std::unexpected(storage::error::invalid("not sent")));
    if (maybe_landed) maybe_landed->assign(ops.size(), false);
    auto single = [&](std::size_t i) {
      if (request_counter) claim_counters::add(*request_counter);
      const auto& op = ops[i];
      if (op.del) {
        auto r = table.delete_entity(op.patch.partition_key, op.patch.row_key, op.etag);
        if (r) out[i] = std::string();
        else out[i] = std::unexpected(r.error());
      } else {
        auto r = merge(op.patch, op.etag);
        if (r) out[i] = r->etag;
        else out[i] = std::unexpected(r.error());
      }
      if (!out[i] && maybe_landed && out[i].error().attempts > 1) (*maybe_landed)[i] = true;
    };
    for (std::size_t start = 0; start < ops.size(); start += batch) {
      std::vector<std::size_t> rest;
      for (std::size_t i = start; i < std::min(ops.size(), start + batch); ++i) rest.push_back(i);
      int rounds = 0;
      while (!rest.empty()) {
        if (rest.size() == 1) {
          single(rest.front());
          break;
        }
        if (++rounds > 8) { // pathological: finish one by one
          for (auto i : rest) single(i);
          break;
        }
        storage::table_transaction tx;
        for (auto i : rest) {
          if (ops[i].del) tx.delete_entity(ops[i].patch.partition_key, ops[i].patch.row_key, ops[i].etag);
          else tx.merge(ops[i].patch, ops[i].etag);
        }
        if (request_counter) claim_counters::add(*request_counter);
        auto sent = steady_now();
        auto r = submit(tx, sent);
        if (r) {
          for (std::size_t k = 0; k < rest.size(); ++k)
            out[rest[k]] = k < r->etags.size() ? r->etags[k] : std::string();
          break;
        }
        const auto& err = r.error();
        const bool landed = err.attempts > 1;
        if (!err.failed_index || *err.failed_index >= rest.size()) {
          // The whole request failed (transport, throttling after retries, ...): one by one,
          // so each op gets its own answer (and a retried-then-landed batch shows as 412s).
          for (auto i : rest) single(i);
          if (landed && maybe_landed)
            for (auto i : rest) (*maybe_landed)[i] = true;
          break;
        }
        const std::size_t bad = rest[*err.failed_index];
        out[bad] = std::unexpected(static_cast<const storage::error&>(err));
        if (maybe_landed && landed) (*maybe_landed)[bad] = true;
        rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(*err.failed_index));
        if (err.code == storage::errc::precondition_failed && singles_after_412) {
          int consecutive = 1;
          for (auto i : rest) {
            if (consecutive >= opts.max_consecutive_contention) {
              out[i] = std::unexpected(storage::error{storage::errc::precondition_failed, 412, "UpdateConditionNotSatisfied", {}, false, 0,
                                                      "skipped: partition contended"});
              continue;
            }
            single(i);
            if (!out[i] && out[i].error().code == storage::errc::precondition_failed) ++consecutive;
            else consecutive = 0;
            if (landed && maybe_landed && !out[i]) (*maybe_landed)[i] = true;
          }
          break;
        }
        if (landed && maybe_landed)
          for (auto i : rest) (*maybe_landed)[i] = true;
      }
    }
    return out;
  }

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

  record_view view(const table_entity& e) const {
    record_view v;
    v.partition_key = e.partition_key;
    v.row_key = e.row_key;
    auto dash = e.partition_key.rfind('-');
    v.queue = dash == std::string::npos ? e.partition_key : e.partition_key.substr(0, dash);
    v.shard = shard_from_partition(e.partition_key);
    v.id = id_from_key(e.row_key);
    v.status = status_prop(e).value_or(record_status::pending);
    v.owner = str_prop(e, p_owner);
    v.gen = int_prop(e, p_gen);
    v.attempts = static_cast<std::int32_t>(int_prop(e, p_attempts));
    v.not_before = time_prop(e, p_not_before);
    v.lease_until = time_prop(e, p_lease_until);
    v.last_error = str_prop(e, p_last_error);
    v.payload = str_prop(e, p_payload);
    v.payload_blob = str_prop(e, p_payload_blob);
    v.payload_bytes = int_prop(e, p_payload_bytes);
    v.created = time_prop(e, p_created);
    v.updated = time_prop(e, p_updated);
    if (e.timestamp) v.timestamp = system_clock::time_point(duration_cast<system_clock::duration>(e.timestamp->time_since_epoch()));
    v.etag = e.etag;
    return v;
  }

  error lease_lost_error(const claimed_record& r, const table_entity& cur) const {
    claim_counters::add(counters.lease_lost);
    auto st = status_prop(cur);
    std::string msg = "record '" + r.id + "' of queue '" + r.queue + "': lease lost: claim gen " +
                      std::to_string(r.gen) + " by " + r.owner + " no longer holds it; it is now " +
                      std::string(st ? to_string(*st) : "unknown");
    auto owner = str_prop(cur, p_owner);
    if (!owner.empty()) msg += " owned by " + owner;
    msg += " (gen " + std::to_string(int_prop(cur, p_gen)) + ")";
    error e;
    e.code = errc::lease_lost;
    e.message = std::move(msg);
    e.storage_code = storage::errc::precondition_failed;
    e.http_status = 412;
    return e;
  }

  enum class change { renew, complete, fail_pending, fail_dead, release };

  static bool applied(change c, record_status s) {
    switch (c) {
    case change::renew: return false;
    case change::complete: return s == record_status::done;
    case change::fail_dead: return s == record_status::dead;
    case change::fail_pending:
    case change::release: return s == record_status::pending;
    }
    return false;
  }

  // After a 412 (or an ambiguous failure) on a change of `r`: re-reads the record. Returns
  // true when we still hold it (r.etag refreshed: retry), false when the change is already
  // applied (our earlier attempt landed), or lease_lost / not_found / storage.
  result<bool> resolve(claimed_record& r, change c) const {
    auto cur = table.get(r.partition_key, r.row_key);
    if (!cur) return std::unexpected(storage_error(cur.error(), "re-reading record '" + r.id + "'"));
    auto st = status_prop(*cur);
    if (str_prop(*cur, p_owner) == r.owner && int_prop(*cur, p_gen) == r.gen && st) {
      if (*st == record_status::claimed) {
        r.etag = cur->etag;
        return true;
      }
      if (applied(c, *st)) {
        r.etag = cur->etag;
        return false;
      }
    }
    return std::unexpected(lease_lost_error(r, *cur));
  }

  table_entity keys(const claimed_record& r) const {
    table_entity e;
    e.partition_key = r.partition_key;
    e.row_key = r.row_key;
    return e;
  }

  // The patch of change `c` for `r`, stamped at server time `now`.
  table_entity patch_for(const claimed_record& r, change c, system_clock::time_point now,
                         std::string_view error_text, bool count_attempt) const {
    table_entity e = keys(r);
    e.set(p_updated, tt(now));
    switch (c) {
    case change::renew:
      e.set(p_lease_until, tt(now + lease));
      break;
    case change::complete:
      e.set(p_status, std::string("done"));
      break;
    case change::fail_dead:
      e.set(p_status, std::string("dead"));
      e.set(p_last_error, truncate_utf8(error_text, max_last_error_bytes));
      break;
    case change::fail_pending: {
      auto delay = retry_delay(static_cast<std::uint32_t>(std::max(1, r.attempts)), milliseconds(opts.work.retry_base_ms),
                               milliseconds(opts.work.retry_max_ms), unit());
      e.set(p_status, std::string("pending"));
      e.set(p_not_before, tt(now + delay));
      e.set(p_last_error, truncate_utf8(error_text, max_last_error_bytes));
      break;
    }
    case change::release:
      e.set(p_status, std::string("pending"));
      e.set(p_not_before, epoch_tt());
      e.set(p_attempts, static_cast<std::int32_t>(count_attempt ? r.attempts : std::max(0, r.attempts - 1)));
      break;
    }
    return e;
  }

  void after_success(claimed_record& r, change c, steady_tp sent, system_clock::time_point now) const {
    switch (c) {
    case change::renew:
      r.lease_until = now + lease;
      r.deadline = deadline_for(sent, r.lease_until);
      claim_counters::add(counters.renewals);
      break;
    case change::complete: claim_counters::add(counters.completions); break;
    case change::fail_pending: claim_counters::add(counters.failures); break;
    case change::fail_dead: claim_counters::add(counters.dead_letters); break;
    case change::release: claim_counters::add(counters.releases); break;
    }
  }

  // One change of one held record, with 412 resolution (bounded).
  result<void> change_one(claimed_record& r, change c, std::string_view error_text, bool count_attempt) const {
    for (int round = 0; round < 4; ++round) {
      auto sent = steady_now();
      auto now = server_now();
      if (!now) return std::unexpected(now.error());
      auto res = merge(patch_for(r, c, *now, error_text, count_attempt), r.etag);
      if (res) {
        r.etag = res->etag;
        after_success(r, c, sent, *now);
        return {};
      }
      if (res.error().code != storage::errc::precondition_failed) {
        if (c == change::renew) claim_counters::add(counters.renew_failures);
        return std::unexpected(storage_error(res.error(), std::string(c == change::renew ? "renewing" : "updating") + " record '" + r.id + "'"));
      }
      auto again = resolve(r, c);
      if (!again) {
        if (c == change::renew && again.error().code != errc::lease_lost) claim_counters::add(counters.renew_failures);
        return std::unexpected(again.error());
      }
      if (!*again) { // already applied by an earlier attempt
        after_success(r, c, sent, *now);
        return {};
      }
    }
    return workers::fail(errc::conflict, "record '" + r.id + "': the record kept changing under us");
  }

  // The same change for many records: one transaction per partition chunk; 412s and
  // ambiguous failures resolved record by record with change_one.
  std::vector<result<void>> change_many(std::span<claimed_record* const> records, change c) const {
    std::vector<result<void>> out(records.size());
    std::map<std::string, std::vector<std::size_t>> groups;
    for (std::size_t i = 0; i < records.size(); ++i) groups[records[i]->partition_key].push_back(i);
    for (auto& [pk, idx] : groups) {
      auto sent = steady_now();
      auto now = server_now();
      if (!now) {
        for (auto i : idx) out[i] = std::unexpected(now.error());
        continue;
      }
      std::vector<cond_op> ops;
      for (auto i : idx) ops.push_back({false, patch_for(*records[i], c, *now, {}, false), records[i]->etag});
      auto res = apply(ops, table_limits_batch(), false, nullptr, nullptr);
      for (std::size_t k = 0; k < idx.size(); ++k) {
        auto& r = *records[idx[k]];
        if (res[k]) {
          r.etag = *res[k];
          after_success(r, c, sent, *now);
          out[idx[k]] = {};
        } else if (res[k].error().code == storage::errc::precondition_failed) {
          // Re-read first (the ETag we hold is stale): lost, already applied, or retry.
          auto again = resolve(r, c);
          if (!again) out[idx[k]] = std::unexpected(again.error());
          else if (!*again) { after_success(r, c, sent, *now); out[idx[k]] = {}; }
          else out[idx[k]] = change_one(r, c, {}, false);
        } else if (res[k].error().retryable || res[k].error().attempts > 1) {
          out[idx[k]] = change_one(r, c, {}, false);
        } else {
          if (c == change::renew) claim_counters::add(counters.renew_failures);
          out[idx[k]] = std::unexpected(storage_error(res[k].error(), "updating record '" + r.id + "'"));
        }
      }
    }
    return out;
  }

  static std::size_t table_limits_batch() { return storage::table_limits::max_batch_operations; }
};

// -- construction ---------------------------------------------------------------------------------

result<work_table> work_table::make(storage::table_client table, std::optional<storage::blob_client> blobs,
                                    work_table_options opts) {
  config c;
  c.work = opts.work;
  if (auto ok = validate(c); !ok) return std::unexpected(ok.error());
  if (opts.inline_payload_max_bytes > 32 * 1024)
    return workers::fail(errc::invalid_argument, "inline_payload_max_bytes must be at most 32768 (a table string property)");
  if (blobs) {
    if (auto ok = storage::validate_container_name(opts.payload_container); !ok)
      return std::unexpected(error::from_storage(ok.error(), "payload container"));
  }
  return work_table(std::make_shared<impl>(std::move(table), std::move(blobs), std::move(opts)));
}

claim_counters& work_table::counters() const noexcept { return impl_->counters; }
server_clock& work_table::clock() const noexcept { return impl_->clock; }
const work_table_options& work_table::options() const noexcept { return impl_->opts; }
const storage::table_client& work_table::table() const noexcept { return impl_->table; }
result<void> work_table::sync_clock() const {
  if (impl_->clock.known()) return {};
  return impl_->sync();
}

result<void> work_table::create_if_missing() const {
  if (auto r = impl_->table.create_table_if_not_exists(); !r)
    return std::unexpected(storage_error(r.error(), "creating table " + impl_->table.name()));
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
    table_entity e;
    const new_record* src;
    std::size_t bytes;
  };
  std::map<std::string, std::vector<prepared>> by_partition;
  std::set<std::pair<std::string, std::string>> seen;
  // Validate everything before any I/O, so a bad id in a file inserts nothing.
  for (const auto& rec : records) {
    auto rk = escape_key(rec.id);
    if (!rk) return std::unexpected(error{rk.error().code, "record id '" + truncate_utf8(rec.id, 80) + "': " + rk.error().message, storage::errc::invalid_argument, 0});
    const auto shard = shard_of(rec.id, m.opts.work.shards);
    auto pk = partition_key(queue, shard);
    if (!seen.emplace(pk, *rk).second) continue;
    const bool inline_ok = rec.payload.size() <= m.opts.inline_payload_max_bytes && storage::utf16_length(rec.payload).has_value();
    if (!inline_ok && !m.blobs)
      return workers::fail(errc::limit_exceeded, "record '" + rec.id + "': payload of " + std::to_string(rec.payload.size()) +
                                            " bytes needs a blob but no blob client is configured");
    table_entity e;
    e.partition_key = pk;
    e.row_key = *rk;
    e.set(p_status, std::string("pending"));
    e.set(p_owner, std::string());
    e.set(p_gen, std::int64_t{0});
    e.set(p_attempts, std::int32_t{0});
    e.set(p_lease_until, epoch_tt());
    e.set(p_not_before, rec.delay.count() > 0 ? tt(*now + rec.delay) : epoch_tt());
    e.set(p_payload_bytes, static_cast<std::int64_t>(rec.payload.size()));
    e.set(p_created, tt(*now));
    e.set(p_updated, tt(*now));
    std::size_t bytes = 600 + 2 * rk->size();
    if (inline_ok) {
      e.set(p_payload, rec.payload);
      bytes += json_string_bytes(rec.payload);
    }
    by_partition[pk].push_back({std::move(e), &rec, bytes});
  }

  for (auto& [pk, items] : by_partition) {
    // Oversized payloads: the blob first (create-only: an existing blob, e.g. of a record
    // enqueued before, is left alone), then the entity that references it.
    for (auto& it : items) {
      if (it.e.find(p_payload)) continue;
      auto name = payload_blob_name(queue, shard_from_partition(pk), it.e.row_key);
      storage::put_blob_options po;
      po.create_only = true;
      auto put = m.blobs->upload(m.opts.payload_container, name, it.src->payload, storage::upload_options{po});
      if (!put && put.error().code != storage::errc::conflict)
        return std::unexpected(storage_error(put.error(), "storing the payload of record '" + it.src->id + "'"));
      it.e.set(p_payload_blob, m.opts.payload_container + "/" + name);
    }
    // Chunks of ≤ 100 inserts and ≤ max_tx_body_bytes.
    std::size_t pos = 0;
    while (pos < items.size()) {
      std::vector<prepared*> chunk;
      std::size_t bytes = 0;
      while (pos < items.size() && chunk.size() < storage::table_limits::max_batch_operations &&
             (chunk.empty() || bytes + items[pos].bytes <= max_tx_body_bytes)) {
        bytes += items[pos].bytes;
        chunk.push_back(&items[pos++]);
      }
      for (int round = 0; !chunk.empty(); ++round) {
        storage::table_transaction tx;
        for (auto* p : chunk) tx.insert(p->e);
        auto sent = m.steady_now();
        auto r = chunk.size() == 1 ? [&]() -> storage::table_transaction_outcome {
          auto one = m.table.insert(chunk.front()->e);
          if (!one) return std::unexpected(storage::table_transaction_error{one.error(), std::size_t{0}});
          m.observe(one->server_time, one->etag, sent, m.steady_now());
          return storage::table_transaction_result{{one->etag}, one->server_time};
        }() : m.submit(tx, sent);
        if (r) {
          out.inserted += chunk.size();
          claim_counters::add(m.counters.enqueued, chunk.size());
          break;
        }
        if (r.error().code != storage::errc::conflict || round >= 5)
          return std::unexpected(storage_error(r.error(), "enqueueing " + std::to_string(chunk.size()) + " records into " + pk));
        // 409: some ids exist (enqueued before, or by an earlier attempt of this very
        // request). Check which, drop them, insert the rest.
        std::string lo = chunk.front()->e.row_key, hi = lo;
        for (auto* p : chunk) {
          lo = std::min(lo, p->e.row_key);
          hi = std::max(hi, p->e.row_key);
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
          if (have.count(p->e.row_key)) {
            ++out.already_present;
            claim_counters::add(m.counters.enqueue_existing);
          } else {
            rest.push_back(p);
          }
        }
        chunk = std::move(rest);
      }
    }
  }
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
    auto now = m.clock.now();
    if (!now) return workers::fail(errc::storage, "server time unknown");
    storage::table_query q;
    q.filter = table_filter::partition(pk) &&
               ((table_filter::eq(p_status, std::string("pending")) && table_filter::le(p_not_before, tt(*now))) ||
                (table_filter::eq(p_status, std::string("claimed")) && table_filter::lt(p_lease_until, tt(*now))));
    q.page_size = static_cast<int>(std::min<std::size_t>(storage::table_limits::max_page_size, need * 4 + 16));
    auto sent = m.steady_now();
    auto page = m.table.query_page(q);
    if (!page) {
      last_error = storage_error(page.error(), "querying claimable records in " + pk);
      continue;
    }
    any_ok = true;
    m.observe(page->server_time, {}, sent, m.steady_now());
    auto candidates = std::move(page->entities);
    if (candidates.empty()) continue;
    m.shuffle(candidates);
    if (candidates.size() > need) candidates.resize(need);

    for (std::size_t start = 0; start < candidates.size(); start += batch) {
      const std::size_t end = std::min(candidates.size(), start + batch);
      auto csent = m.steady_now();
      auto cnow = m.clock.lower_bound_at(csent);
      if (!cnow) break;
      const auto lease_until = *cnow + m.lease;
      std::vector<cond_op> ops;
      for (std::size_t i = start; i < end; ++i) {
        const auto& c = candidates[i];
        table_entity p;
        p.partition_key = c.partition_key;
        p.row_key = c.row_key;
        p.set(p_status, std::string("claimed"));
        p.set(p_owner, std::string(owner));
        p.set(p_gen, static_cast<std::int64_t>(int_prop(c, p_gen) + 1));
        p.set(p_attempts, static_cast<std::int32_t>(int_prop(c, p_attempts) + 1));
        p.set(p_lease_until, tt(lease_until));
        p.set(p_updated, tt(*cnow));
        ops.push_back({false, std::move(p), c.etag});
      }
      std::vector<bool> maybe_landed;
      auto res = m.apply(ops, batch, true, &maybe_landed, &m.counters.claim_requests);
      const auto deadline = m.deadline_for(csent, lease_until);
      std::vector<std::size_t> unresolved;
      for (std::size_t k = 0; k < ops.size(); ++k) {
        if (res[k]) continue;
        if (maybe_landed[k]) unresolved.push_back(k);
        else if (res[k].error().code == storage::errc::precondition_failed) claim_counters::add(m.counters.contention);
        else last_error = storage_error(res[k].error(), "claiming in " + pk);
      }
      if (!unresolved.empty()) {
        // A retried request may have landed: our claims are those now showing our owner and
        // the gen we wrote.
        storage::table_query mine;
        mine.filter = table_filter::partition(pk) && table_filter::eq(p_owner, std::string(owner)) &&
                      table_filter::eq(p_status, std::string("claimed"));
        auto held = m.table.query_all(mine);
        std::unordered_map<std::string, table_entity> by_rk;
        if (held)
          for (auto& e : *held) by_rk.emplace(e.row_key, std::move(e));
        for (auto k : unresolved) {
          auto it = by_rk.find(ops[k].patch.row_key);
          if (it != by_rk.end() && int_prop(it->second, p_gen) == int_prop(ops[k].patch, p_gen)) res[k] = it->second.etag;
          else claim_counters::add(m.counters.contention);
        }
      }
      for (std::size_t k = 0; k < ops.size(); ++k) {
        if (!res[k]) continue;
        const auto& c = candidates[start + k];
        claimed_record r;
        r.queue = std::string(queue);
        r.partition_key = c.partition_key;
        r.row_key = c.row_key;
        r.id = id_from_key(c.row_key);
        r.shard = shard;
        r.etag = *res[k];
        r.owner = std::string(owner);
        r.gen = int_prop(ops[k].patch, p_gen);
        r.attempts = static_cast<std::int32_t>(int_prop(ops[k].patch, p_attempts));
        r.last_error = str_prop(c, p_last_error);
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
  storage::table_query q;
  q.filter = queue_filter(queue) && table_filter::eq(p_owner, std::string(owner)) && table_filter::eq(p_status, std::string("claimed"));
  auto held = m.table.query_all(q);
  if (!held) return std::unexpected(storage_error(held.error(), "listing records held by " + std::string(owner)));
  std::size_t n = 0;
  for (const auto& e : *held) {
    claimed_record r;
    r.queue = std::string(queue);
    r.partition_key = e.partition_key;
    r.row_key = e.row_key;
    r.id = id_from_key(e.row_key);
    r.shard = shard_from_partition(e.partition_key);
    r.etag = e.etag;
    r.owner = std::string(owner);
    r.gen = int_prop(e, p_gen);
    r.attempts = static_cast<std::int32_t>(int_prop(e, p_attempts));
    if (release(r, true)) ++n;
  }
  return n;
}

// -- views and operations -------------------------------------------------------------------------

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
  auto v = m.view(*e);
  if (resolve_payload && !v.payload_blob.empty()) {
    auto p = m.read_payload(*e);
    if (!p) return std::unexpected(p.error());
    v.payload = std::move(*p);
  }
  return v;
}

result<std::vector<record_view>> work_table::list(std::string_view queue, std::optional<record_status> status,
                                                  std::size_t max) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  std::vector<record_view> out;
  if (max == 0) return out;
  storage::table_query q;
  q.filter = queue_filter(queue);
  if (status) q.filter = q.filter && table_filter::eq(p_status, std::string(to_string(*status)));
  q.max_entities = max;
  auto all = m.table.query_all(q);
  if (!all) return std::unexpected(storage_error(all.error(), "listing queue " + std::string(queue)));
  for (const auto& e : *all) out.push_back(m.view(e));
  return out;
}

result<record_counts> work_table::counts(std::string_view queue) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  storage::table_query q;
  q.filter = queue_filter(queue);
  q.select = {"PartitionKey", "RowKey", p_status}; // keys are returned only when selected
  record_counts out;
  auto n = m.table.for_each(q, [&](const table_entity& e) {
    auto st = status_prop(e).value_or(record_status::pending);
    ++out.by_status[st];
    ++out.by_shard[shard_from_partition(e.partition_key)][st];
    ++out.total;
    return true;
  });
  if (!n) return std::unexpected(storage_error(n.error(), "counting queue " + std::string(queue)));
  return out;
}

result<bool> work_table::has_open(std::string_view queue) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  storage::table_query q;
  q.filter = queue_filter(queue) && (table_filter::eq(p_status, std::string("pending")) ||
                                     table_filter::eq(p_status, std::string("claimed")));
  q.select = {p_status};
  q.page_size = 1;
  q.max_entities = 1;
  auto all = m.table.query_all(q);
  if (!all) return std::unexpected(storage_error(all.error(), "checking queue " + std::string(queue)));
  return !all->empty();
}

namespace {

// The entities `which` selects, by (PK, RK).
result<std::vector<table_entity>> select_records(const work_table& t, const storage::table_client& table,
                                                 std::string_view queue, const record_selector& which) {
  std::map<std::pair<std::string, std::string>, table_entity> found;
  for (const auto& id : which.ids) {
    auto rk = escape_key(id);
    if (!rk) return std::unexpected(rk.error());
    auto pk = partition_key(queue, shard_of(id, t.options().work.shards));
    auto e = table.get(pk, *rk);
    if (!e) {
      if (e.error().code == storage::errc::not_found) continue;
      return std::unexpected(storage_error(e.error(), "reading record '" + id + "'"));
    }
    found.emplace(std::pair{pk, *rk}, *e);
  }
  table_filter f;
  for (auto s : which.statuses) f = f || table_filter::eq(p_status, std::string(to_string(s)));
  if (which.stuck) {
    auto now = t.clock().now();
    if (!now) {
      if (auto ok = t.sync_clock(); !ok) return std::unexpected(ok.error());
      now = t.clock().now();
    }
    f = f || (table_filter::eq(p_status, std::string("claimed")) && table_filter::lt(p_lease_until, tt(*now)));
  }
  if (!f.empty()) {
    storage::table_query q;
    q.filter = queue_filter(queue) && f;
    auto all = table.query_all(q);
    if (!all) return std::unexpected(storage_error(all.error(), "selecting records of " + std::string(queue)));
    for (auto& e : *all) found.emplace(std::pair{e.partition_key, e.row_key}, std::move(e));
  }
  std::vector<table_entity> out;
  for (auto& [k, e] : found) out.push_back(std::move(e));
  return out;
}

} // namespace

result<std::size_t> work_table::requeue(std::string_view queue, const record_selector& which) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  auto targets = select_records(*this, m.table, queue, which);
  if (!targets) return std::unexpected(targets.error());
  auto now = m.server_now();
  if (!now) return std::unexpected(now.error());
  std::map<std::string, std::vector<cond_op>> groups;
  for (const auto& e : *targets) {
    table_entity p;
    p.partition_key = e.partition_key;
    p.row_key = e.row_key;
    p.set(p_status, std::string("pending"));
    p.set(p_attempts, std::int32_t{0});
    p.set(p_not_before, epoch_tt());
    p.set(p_lease_until, epoch_tt());
    p.set(p_updated, tt(*now));
    groups[e.partition_key].push_back({false, std::move(p), e.etag});
  }
  std::size_t n = 0;
  for (auto& [pk, ops] : groups) {
    auto res = m.apply(ops, storage::table_limits::max_batch_operations, false, nullptr, nullptr);
    for (auto& r : res) n += r ? 1 : 0;
  }
  return n;
}

result<std::size_t> work_table::purge(std::string_view queue, const record_selector& which) const {
  const impl& m = *impl_;
  if (auto ok = validate_queue_name(queue); !ok) return std::unexpected(ok.error());
  auto targets = select_records(*this, m.table, queue, which);
  if (!targets) return std::unexpected(targets.error());
  std::map<std::string, std::vector<std::pair<cond_op, std::string>>> groups;
  for (const auto& e : *targets) {
    table_entity k;
    k.partition_key = e.partition_key;
    k.row_key = e.row_key;
    groups[e.partition_key].push_back({{true, std::move(k), e.etag}, str_prop(e, p_payload_blob)});
  }
  std::size_t n = 0;
  for (auto& [pk, items] : groups) {
    std::vector<cond_op> ops;
    for (auto& it : items) ops.push_back(it.first);
    auto res = m.apply(ops, storage::table_limits::max_batch_operations, false, nullptr, nullptr);
    for (std::size_t i = 0; i < res.size(); ++i) {
      if (!res[i]) continue;
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

} // namespace shoal::workers
