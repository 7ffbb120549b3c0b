#include "workers/fleet/fleet_table.hpp"

namespace shoal::workers::fleet {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

constexpr const char* coordinator_pk = "coordinator";
constexpr const char* coordinator_rk = "lease";
constexpr const char* host_pk = "host";

// Properties are read with table_entity's typed getters; an absent one reads as empty/epoch.
coordinator_row to_coordinator(const storage::table_entity& e) {
  coordinator_row r;
  r.host = e.get_string("host").value_or("");
  r.instance = e.get_string("instance").value_or("");
  r.endpoint = e.get_string("endpoint").value_or("");
  r.public_key = e.get_string("public_key").value_or("");
  if (auto v = e.get_int64("epoch")) r.epoch = static_cast<decltype(r.epoch)>(*v);
  r.lease_until = e.get_time("lease_until").value_or(system_clock::time_point{});
  r.etag = e.etag;
  return r;
}

storage::table_entity coordinator_entity(const coordinator_row& r) {
  storage::table_entity e;
  e.partition_key = coordinator_pk;
  e.row_key = coordinator_rk;
  e.set("host", r.host).set("instance", r.instance).set("endpoint", r.endpoint);
  e.set("public_key", r.public_key).set("epoch", static_cast<std::int64_t>(r.epoch));
  e.set("lease_until", storage::to_table_time(r.lease_until));
  return e;
}

bool is(const storage::error& e, storage::errc c) { return e.code == c; }

} // namespace

void fleet_table::observe(system_clock::time_point date, const std::string& etag, steady_clock::time_point sent) const {
  auto received = clock_->steady_now();
  if (date.time_since_epoch().count() > 0) clock_->observe(date, sent, received, std::chrono::seconds(1));
  if (!etag.empty())
    if (auto t = storage::etag_time(etag)) clock_->observe(*t, sent, received, milliseconds(1));
}

result<fleet_table> fleet_table::open(storage::table_client client) {
  if (auto r = client.create_table_if_not_exists(); !r)
    return std::unexpected(error::from_storage(r.error(), "create the fleet table " + client.name()));
  fleet_table t(std::move(client), std::make_shared<storage::server_clock>());
  storage::table_query q;
  q.page_size = 1;
  auto sent = t.clock_->steady_now();
  auto page = t.client_.query_page(q);
  if (!page) return std::unexpected(error::from_storage(page.error(), "read the fleet table " + t.client_.name()));
  t.observe(page->server_time, {}, sent);
  return t;
}

system_clock::time_point fleet_table::server_now() const {
  if (auto t = clock_->now()) return *t;
  return system_clock::now();
}

// Leases are written from the upper bound of the server clock and judged from the lower bound,
// so the clock's uncertainty (≈ 1 s with Date-only samples) lengthens a lease, never shortens it.
system_clock::time_point fleet_table::lease_end(milliseconds lease) const {
  auto up = clock_->upper_bound_at(clock_->steady_now());
  return (up ? *up : system_clock::now()) + lease;
}

bool fleet_table::expired(const coordinator_row& row) const { return server_now() > row.lease_until; }

result<std::optional<coordinator_row>> fleet_table::coordinator() const {
  auto sent = clock_->steady_now();
  auto r = client_.get_with_server_time(coordinator_pk, coordinator_rk);
  if (!r) {
    if (is(r.error(), storage::errc::not_found)) return std::optional<coordinator_row>();
    return std::unexpected(error::from_storage(r.error(), "read the coordinator row"));
  }
  observe(r->second, {}, sent);
  return std::optional<coordinator_row>(to_coordinator(r->first));
}

result<lease_outcome> fleet_table::acquire(const lease_candidate& me, milliseconds lease) const {
  auto current = coordinator();
  if (!current) return std::unexpected(current.error());
  if (*current && (*current)->instance == me.instance && (*current)->host == me.host && !expired(**current)) {
    auto renewed = renew(**current, lease);
    if (renewed || renewed.error().code != errc::lease_lost) return renewed;
    auto now = coordinator(); // lost between read and merge: report the new holder
    if (!now) return std::unexpected(now.error());
    return lease_outcome{false, *now, {}};
  }
  if (*current && !expired(**current)) return lease_outcome{false, *current, {}};

  coordinator_row mine;
  mine.host = me.host;
  mine.instance = me.instance;
  mine.endpoint = me.endpoint;
  mine.public_key = me.public_key;
  mine.epoch = *current ? (*current)->epoch + 1 : 1;
  auto sent = clock_->steady_now();
  mine.lease_until = lease_end(lease);
  auto e = coordinator_entity(mine);
  auto w = *current ? client_.update(e, (*current)->etag) : client_.insert(e);
  if (!w) {
    if (is(w.error(), storage::errc::conflict) || is(w.error(), storage::errc::precondition_failed) ||
        is(w.error(), storage::errc::not_found)) {
      auto now = coordinator(); // somebody else won the race
      if (!now) return std::unexpected(now.error());
      return lease_outcome{false, *now, {}};
    }
    return std::unexpected(error::from_storage(w.error(), "take the coordinator lease"));
  }
  observe(w->server_time, w->etag, sent);
  mine.etag = w->etag;
  return lease_outcome{true, mine, sent + lease};
}

result<lease_outcome> fleet_table::renew(const coordinator_row& held, milliseconds lease) const {
  coordinator_row next = held;
  auto sent = clock_->steady_now();
  next.lease_until = lease_end(lease);
  storage::table_entity e;
  e.partition_key = coordinator_pk;
  e.row_key = coordinator_rk;
  e.set("lease_until", storage::to_table_time(next.lease_until));
  auto w = client_.merge(e, held.etag);
  if (!w) {
    if (is(w.error(), storage::errc::precondition_failed) || is(w.error(), storage::errc::not_found))
      return std::unexpected(error{errc::lease_lost, "the coordinator lease was taken over",
                                   w.error().code, w.error().http_status});
    return std::unexpected(error::from_storage(w.error(), "renew the coordinator lease"));
  }
  observe(w->server_time, w->etag, sent);
  next.etag = w->etag;
  return lease_outcome{true, next, sent + lease};
}

result<void> fleet_table::release(const coordinator_row& held) const {
  storage::table_entity e;
  e.partition_key = coordinator_pk;
  e.row_key = coordinator_rk;
  e.set("lease_until", storage::to_table_time(system_clock::time_point{}));
  auto w = client_.merge(e, held.etag);
  if (!w) {
    if (is(w.error(), storage::errc::precondition_failed) || is(w.error(), storage::errc::not_found))
      return std::unexpected(error{errc::lease_lost, "the coordinator lease was no longer ours",
                                   w.error().code, w.error().http_status});
    return std::unexpected(error::from_storage(w.error(), "release the coordinator lease"));
  }
  return {};
}

result<void> fleet_table::put_host(const host_row& row) const {
  storage::table_entity e;
  e.partition_key = host_pk;
  e.row_key = row.host;
  e.set("instance", row.instance).set("endpoint", row.endpoint).set("public_key", row.public_key);
  e.set("workers", static_cast<std::int64_t>(row.workers));
  e.set("heartbeat", storage::to_table_time(server_now()));
  auto sent = clock_->steady_now();
  auto w = client_.insert_or_replace(e);
  if (!w) return std::unexpected(error::from_storage(w.error(), "write host row " + row.host));
  observe(w->server_time, w->etag, sent);
  return {};
}

result<std::vector<host_row>> fleet_table::hosts() const {
  storage::table_query q;
  q.filter = storage::table_filter::eq("PartitionKey", std::string(host_pk));
  auto all = client_.query_all(q);
  if (!all) return std::unexpected(error::from_storage(all.error(), "list host rows"));
  std::vector<host_row> out;
  for (const auto& e : *all) {
    host_row h;
    h.host = e.row_key;
    h.instance = e.get_string("instance").value_or("");
    h.endpoint = e.get_string("endpoint").value_or("");
    h.public_key = e.get_string("public_key").value_or("");
    if (auto v = e.get_int64("workers")) h.workers = static_cast<std::uint32_t>(*v);
    h.heartbeat = e.get_time("heartbeat").value_or(system_clock::time_point{});
    out.push_back(std::move(h));
  }
  return out;
}

result<void> fleet_table::remove_host(const std::string& host) const {
  auto w = client_.delete_entity(host_pk, host, "*");
  if (!w && !is(w.error(), storage::errc::not_found))
    return std::unexpected(error::from_storage(w.error(), "delete host row " + host));
  return {};
}

} // namespace shoal::workers::fleet
