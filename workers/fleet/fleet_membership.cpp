// A host's fleet membership: start-up (CURVE, bind), stop, and the lease thread that holds or
// follows the coordinator lease (fleet_protocol.hpp); the messaging thread is in
// fleet_membership_messaging.cpp.
#include "workers/fleet/fleet_membership_internal.hpp"

namespace shoal::workers::fleet {
namespace detail {

// -- setup --------------------------------------------------------------------------------------

result<void> fleet_membership::setup_security_and_bind() {
  const bool tcp = is_tcp(f_.host_endpoint);
  if (!f_.curve_secret_key.empty()) {
    auto k = transport::load_curve_secret_key(f_.curve_secret_key);
    if (!k)
      return fail(errc::invalid_argument, "fleet.curve_secret_key " + f_.curve_secret_key + ": " + k.error().describe());
    if (!f_.curve_public_key.empty()) {
      auto p = transport::load_curve_public_key(f_.curve_public_key);
      if (!p)
        return fail(errc::invalid_argument, "fleet.curve_public_key " + f_.curve_public_key + ": " + p.error().describe());
      if (*p != k->public_key)
        return fail(errc::invalid_argument, "fleet.curve_public_key " + f_.curve_public_key +
                                                " is not the public half of fleet.curve_secret_key " + f_.curve_secret_key);
    }
    keys_ = *k;
  }
  if (f_.host_endpoint.empty()) return {};
  if (!tcp) return fail(errc::invalid_argument, "fleet.host_endpoint must be a tcp:// endpoint");
  if (!keys_)
    return fail(errc::invalid_argument,
                "fleet.host_endpoint " + f_.host_endpoint +
                    " is tcp: every tcp link between hosts uses CURVE, so fleet.curve_secret_key (and "
                    "fleet.curve_allow_dir) must be set; create keys with `shoal keys generate --out DIR`");
  if (f_.curve_allow_dir.empty())
    return fail(errc::invalid_argument, "fleet.host_endpoint " + f_.host_endpoint +
                                            " needs fleet.curve_allow_dir: the folder of *.pub files of the hosts admitted");
  auto text = allow_list_from_dir(f_.curve_allow_dir);
  if (!text) return std::unexpected(text.error());
  allow_text_ = *text;
  // Allow-list files of supervisors that died without cleaning up (kill -9) are removed here.
  std::error_code dec;
  for (const auto& e : fs::directory_iterator(fs::temp_directory_path(), dec)) {
    const auto name = e.path().filename().string();
    if (name.rfind("shoal-allow-", 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + 12, nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove(e.path(), dec);
  }
  allow_file_ = fs::temp_directory_path() /
                ("shoal-allow-" + std::to_string(::getpid()) + "-" + instance_ + ".keys");
  {
    std::ofstream out(allow_file_, std::ios::trunc);
    out << allow_text_;
    if (!out) return fail(errc::io, "cannot write the allow-list file " + allow_file_.string());
  }
  transport::zap_options zo;
  zo.allow_list = allow_file_;
  zo.on_refusal = [host = host_](const transport::zap_refusal& r) {
    spdlog::warn("fleet {}: refused a supervisor from {} with key {} ({}): add its .pub to fleet.curve_allow_dir",
                 host, r.address, r.public_key, r.reason);
  };
  auto zap = transport::zap_authenticator::start(ctx_, zo);
  if (!zap) return fail(errc::io, "cannot start the ZAP handler: " + zap.error().describe());
  zap_ = std::move(*zap);

  transport::socket_options so;
  so.linger = milliseconds(0);
  so.router_mandatory = true;
  auto r = transport::envelope_socket::make(ctx_, zmq::socket_type::router, so);
  if (!r) return fail(errc::io, "fleet ROUTER: " + r.error().describe());
  if (auto c = transport::configure_curve_server(r->raw(), *keys_); !c)
    return fail(errc::io, "fleet ROUTER CURVE: " + c.error().describe());
  if (auto b = r->bind(f_.host_endpoint); !b)
    return fail(errc::invalid_argument, "cannot bind fleet.host_endpoint " + f_.host_endpoint + ": " + b.error().describe());
  advertised_ = r->last_endpoint();
  if (advertised_.find("0.0.0.0") != std::string::npos || advertised_.find("://*") != std::string::npos)
    spdlog::warn("fleet {}: host_endpoint {} is a wildcard address; other hosts cannot connect to {}: "
                 "bind a specific address", host_, f_.host_endpoint, advertised_);
  router_ = std::move(*r);
  return {};
}

result<void> fleet_membership::start_threads(milliseconds first_assign_wait) {
  lease_cycle(); // know our role before anything else
  msg_thread_ = std::thread([this] { run(); });
  lease_thread_ = std::thread([this] { lease_loop(); });
  std::unique_lock lock(start_mu_);
  start_cv_.wait_for(lock, first_assign_wait, [&] { return start_ != start_state::pending; });
  if (start_ == start_state::refused) {
    std::string why = refusal_;
    lock.unlock();
    stop();
    return fail(errc::conflict, why);
  }
  if (start_ == start_state::pending) {
    lock.unlock();
    // No coordinator answered in time: claim from every shard until one does (ETags keep it
    // correct; only contention grows).
    bool first = false;
    {
      std::lock_guard l(mu_);
      first = !assigned_once_;
    }
    if (first) {
      spdlog::warn("fleet {}: no coordinator answered within {} ms; claiming from every shard until one does",
                   host_, first_assign_wait.count());
      host_assignment a;
      a.shards = all_shards(cfg_.work.shards);
      set_assignment(std::move(a));
    }
  }
  return {};
}

// -- stop ----------------------------------------------------------------------------------------

void fleet_membership::stop() {
  if (stopped_.exchange(true)) return;
  // 1. The lease thread releases the lease (if held) and removes our host row.
  stopping_ = true;
  wake_lease();
  if (lease_thread_.joinable()) lease_thread_.join();
  // 2. The messaging thread tells the others (fleet.leave) and closes its sockets.
  lease_done_ = true;
  if (msg_thread_.joinable()) msg_thread_.join();
  if (zap_) zap_->stop();
  std::error_code ec;
  if (!allow_file_.empty()) fs::remove(allow_file_, ec);
}

// -- lease thread --------------------------------------------------------------------------------

void fleet_membership::lease_loop() {
  while (!stopping_) {
    {
      std::unique_lock lock(lease_mu_);
      // Normally every renew interval; a member that saw another holder's lease expire sooner
      // tries again right after that expiry (failover within the lease, not lease + renew).
      auto wait = milliseconds(f_.coordinator_renew_ms);
      if (lease_retry_at_)
        wait = std::clamp(std::chrono::duration_cast<milliseconds>(*lease_retry_at_ - steady::now()), milliseconds(0),
                          wait);
      lease_cv_.wait_for(lock, wait, [&] { return lease_wake_ || stopping_; });
      lease_wake_ = false;
    }
    if (stopping_) break;
    lease_cycle();
  }
  if (held_) {
    if (auto r = table_.release(*held_); !r)
      spdlog::warn("fleet {}: releasing the coordinator lease: {}", host_, r.error().describe());
    else
      spdlog::info("fleet {}: released the coordinator lease (epoch {})", host_, held_->epoch);
    held_.reset();
  }
  if (auto r = table_.remove_host(host_); !r) spdlog::warn("fleet {}: {}", host_, r.error().describe());
}

void fleet_membership::lease_cycle() {
  host_row me{host_, instance_, advertised_, keys_ ? keys_->public_key : std::string(), workers(), {}};
  if (auto r = table_.put_host(me); !r) spdlog::warn("fleet {}: {}", host_, r.error().describe());
  const milliseconds lease(f_.coordinator_lease_ms);
  lease_view next;
  bool took = false;
  if (held_) {
    if (steady::now() > held_until_) {
      spdlog::warn("fleet {}: coordinator lease (epoch {}) not renewed in time; giving up the role", host_, held_->epoch);
      held_.reset();
    } else if (auto r = table_.renew(*held_, lease)) {
      held_ = r->row;
      held_until_ = r->valid_until;
    } else if (r.error().code == errc::lease_lost) {
      spdlog::warn("fleet {}: lost the coordinator lease (epoch {})", host_, held_->epoch);
      held_.reset();
    } else {
      spdlog::warn("fleet {}: renewing the coordinator lease: {}", host_, r.error().describe());
    }
  }
  std::optional<coordinator_row> row = held_;
  if (!held_) {
    lease_candidate me_c{host_, instance_, advertised_, keys_ ? keys_->public_key : std::string()};
    auto r = table_.acquire(me_c, lease);
    if (!r) {
      spdlog::warn("fleet {}: coordinator lease: {}", host_, r.error().describe());
      return; // keep the last view
    }
    if (r->held) {
      held_ = r->row;
      held_until_ = r->valid_until;
      took = true;
      spdlog::info("fleet {}: took the coordinator lease (epoch {}), endpoint '{}'", host_, held_->epoch, advertised_);
    }
    row = r->row;
    lease_retry_at_.reset();
    if (row && !r->held && row->instance != instance_) {
      // When the holder's lease ends by the server clock (a lower bound, so this is never
      // early), plus a little; at least 50 ms apart so an uncertain clock cannot spin.
      auto left = std::chrono::duration_cast<milliseconds>(row->lease_until - table_.server_now());
      lease_retry_at_ = steady::now() + std::max(milliseconds(50), left + milliseconds(50));
    }
    if (row && !r->held && table_.expired(*row)) row.reset();
  }
  if (took) {
    // Rebuild the fleet from the host rows written recently: a live supervisor writes its row
    // every renew interval; a dead coordinator's row is at least a lease old.
    auto rows = table_.hosts();
    if (rows) {
      auto now = table_.server_now();
      auto fresh = milliseconds(f_.coordinator_renew_ms) + (lease - milliseconds(f_.coordinator_renew_ms)) / 2;
      for (auto& h : *rows)
        if (h.host != host_ && now - h.heartbeat < fresh) next.seed.push_back(std::move(h));
    }
  }
  std::lock_guard lock(lease_mu_);
  bool was_held = lease_.held;
  std::string old_holder = lease_.row ? lease_.row->instance : std::string();
  next.held = held_.has_value();
  next.row = row;
  std::string new_holder = row ? row->instance : std::string();
  next.generation = lease_.generation + ((was_held != next.held || old_holder != new_holder || took) ? 1 : 0);
  if (next.generation == lease_.generation && !took) next.seed = lease_.seed;
  lease_ = std::move(next);
}

} // namespace detail

using detail::fleet_membership;
using std::chrono::milliseconds;

result<std::string> allow_list_from_dir(const std::string& dir) {
  auto text = transport::allow_list_from_dir(dir);
  if (!text)
    return fail(text.error().code == transport::errc::io ? errc::io : errc::invalid_argument,
                "fleet.curve_allow_dir " + dir + ": " + text.error().describe());
  return *text;
}

result<std::unique_ptr<membership>> start_fleet_membership(const config& cfg, std::string host,
                                                           std::uint32_t local_workers, membership_hooks hooks,
                                                           fleet_membership_options opts) {
  if (host.empty()) return fail(errc::invalid_argument, "fleet host name is empty");
  std::optional<storage::table_client> client = std::move(opts.table);
  if (!client) {
    auto svc = storage::table_service_client::from_connection_string(cfg.storage.connection_string);
    if (!svc) return std::unexpected(error::from_storage(svc.error(), "fleet table connection"));
    auto t = svc->table(cfg.fleet.table);
    if (!t) return std::unexpected(error::from_storage(t.error(), "fleet.table " + cfg.fleet.table));
    client = std::move(*t);
  }
  auto table = fleet_table::open(std::move(*client));
  if (!table) return std::unexpected(table.error());
  auto m = std::make_unique<fleet_membership>(cfg, std::move(host), local_workers, std::move(hooks), std::move(*table));
  if (auto r = m->setup_security_and_bind(); !r) return std::unexpected(r.error());
  auto wait = opts.first_assign_wait;
  if (wait.count() == 0)
    wait = std::max(milliseconds(2000),
                    milliseconds(2ull * cfg.fleet.heartbeat_liveness * cfg.fleet.heartbeat_interval_ms));
  if (auto r = m->start_threads(wait); !r) return std::unexpected(r.error());
  return std::unique_ptr<membership>(std::move(m));
}

} // namespace shoal::workers::fleet
