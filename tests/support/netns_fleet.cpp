#include "tests/support/netns_fleet.hpp"

#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/netns.hpp"
#include "tests/support/processes.hpp"
#include "tests/support/shoal_process.hpp"
#include "tests/workers/fleet/fleet_harness.hpp"
#include "workers/local_azurite.hpp"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace shoal::tests {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

struct netns_fleet::impl {
  std::optional<test_network> net;
  std::vector<std::string> ns;
  std::optional<workers::azurite_process> azurite;
  std::optional<fault_proxy> proxy;
  std::string daemon_cs;  // what the supervisors use: the proxy's or Azurite's
  std::string fleet_table;
  std::optional<storage::table_client> fleet;
  std::vector<std::optional<workers::child_process>> sups;
  std::vector<int> started; // starts per host, to name logs
};

netns_fleet::netns_fleet(netns_fleet_options o) : o_(std::move(o)), impl_(std::make_unique<impl>()) {
  if (::geteuid() != 0) {
    skip_ = "needs root for ip netns";
    return;
  }
  // Names unique to this process: several suites may make namespaces at once.
  const int id = static_cast<int>(::getpid() % 100000);
  const std::string tag = o_.prefix + std::to_string(id);
  impl_->net.emplace();
  if (!impl_->net->create_bridge("br" + tag, "10.219." + std::to_string(id % 250 + 1))) {
    skip_ = "cannot make and configure a bridge";
    return;
  }
  for (std::size_t i = 0; i < o_.hosts; ++i) {
    const std::string ns = tag + "h" + std::to_string(i);
    if (!impl_->net->add(ns, tag + "v" + std::to_string(i), static_cast<int>(2 + i))) {
      skip_ = "ip netns / veth set-up failed for " + ns;
      return;
    }
    impl_->ns.push_back(ns);
  }
  impl_->sups.resize(o_.hosts);
  impl_->started.resize(o_.hosts, 0);
  dir_ = fs::temp_directory_path() / unique_name("shoal" + o_.prefix);
  std::error_code ec;
  fs::create_directories(dir_ / "allow", ec);
  fs::create_directories(dir_ / "keys", ec);
  if (ec) {
    error_ = "cannot create " + dir_.string() + ": " + ec.message();
    return;
  }
  // Azurite on the bridge address: the namespaces cannot reach the fixture's 127.0.0.1.
  workers::azurite_options ao;
  ao.executable = fs::path(source_dir()) / "deploy/local/node_modules/.bin/azurite";
  ao.workspace = dir_ / "azurite";
  ao.host = impl_->net->subnet + ".1";
  auto az = workers::azurite_process::start(ao);
  if (!az) {
    error_ = "Azurite: " + az.error().describe();
    return;
  }
  impl_->azurite.emplace(std::move(*az));
  impl_->daemon_cs = impl_->azurite->connection_string();
  if (o_.count_requests) {
    fault_proxy_options po;
    po.upstream_connection_string = impl_->azurite->connection_string();
    po.listen_host = impl_->net->subnet + ".1";
    auto p = fault_proxy::listen(po);
    if (!p) {
      error_ = "fault proxy: " + p.error().describe();
      return;
    }
    impl_->proxy.emplace(std::move(*p));
    impl_->proxy->start();
    impl_->daemon_cs = impl_->proxy->connection_string();
  }
  for (std::size_t i = 0; i < o_.hosts; ++i) {
    const std::string cmd = "'" + shoal_binary() + "' keys generate --out '" + (dir_ / "keys").string() + "' --name " +
                            host(i) + " > '" + (dir_ / "keys.log").string() + "' 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      error_ = "shoal keys generate: " + slurp(dir_ / "keys.log");
      return;
    }
    fs::copy_file(dir_ / "keys" / (host(i) + ".pub"), dir_ / "allow" / (host(i) + ".pub"),
                  fs::copy_options::overwrite_existing, ec);
  }
  auto account = storage::parse_connection_string(impl_->azurite->connection_string());
  if (!account) {
    error_ = "Azurite's connection string: " + account.error().message;
    return;
  }
  auto pipe = storage::pipeline::make(*account);
  if (!pipe) {
    error_ = "storage pipeline: " + pipe.error().message;
    return;
  }
  auto t = storage::table_client::make(*pipe, unique_name(o_.prefix + "work"));
  auto f = storage::table_client::make(*pipe, unique_name(o_.prefix + "fleet"));
  if (!t || !f) {
    error_ = "table client";
    return;
  }
  impl_->fleet_table = f->name();
  impl_->fleet.emplace(*f);
  workers::work_table_options wo;
  wo.work.shards = o_.shards;
  wo.work.lease_ms = o_.work_lease_ms;
  wo.work.lease_renew_ms = o_.work_lease_ms / 3;
  auto w = workers::work_table::make(*t, storage::blob_client(*pipe), wo);
  if (!w) {
    error_ = "work table: " + w.error().describe();
    return;
  }
  if (auto c = w->create_if_missing(); !c) {
    error_ = "work table: " + c.error().describe();
    return;
  }
  work_.emplace(std::move(*w));
}

netns_fleet::~netns_fleet() {
  for (std::size_t i = 0; i < impl_->sups.size(); ++i) kill(i);
  if (impl_->proxy) impl_->proxy->stop();
  if (impl_->azurite) impl_->azurite->stop();
  impl_->net.reset(); // kills what is left in the namespaces, removes them
  std::error_code ec;
  if (!dir_.empty() && !std::getenv("SHOAL_TEST_KEEP")) fs::remove_all(dir_, ec);
}

std::string netns_fleet::toml(std::size_t i, const netns_host_settings& s) const {
  std::ostringstream t;
  t << "[storage]\nconnection_string = \"" << impl_->daemon_cs << "\"\n"
    << "[work]\ntable = \"" << work_->table().name() << "\"\nshards = " << o_.shards << "\nlease_ms = " << o_.work_lease_ms
    << "\nlease_renew_ms = " << o_.work_lease_ms / 3 << "\n"
    << "[worker]\n" << s.worker_toml << "\n"
    << "[fleet]\nhost = \"" << host(i) << "\"\nworkers = " << s.workers << "\n"
    << "table = \"" << (s.fleet ? impl_->fleet_table : impl_->fleet_table + "x" + std::to_string(i)) << "\"\n"
    << "endpoint = \"ipc://" << (dir_ / (host(i) + ".sock")).string() << "\"\n"
    << "heartbeat_interval_ms = " << s.heartbeat_interval_ms << "\nheartbeat_liveness = " << s.heartbeat_liveness
    << "\ncoordinator_lease_ms = " << s.coordinator_lease_ms << "\ncoordinator_renew_ms = " << s.coordinator_renew_ms
    << "\ndrain_timeout_ms = 10000\n";
  if (s.fleet)
    t << "host_endpoint = \"tcp://" << impl_->net->subnet << "." << 2 + i << ":7100\"\n"
      << "curve_secret_key = \"" << (dir_ / "keys" / (host(i) + ".key")).string() << "\"\n"
      << "curve_public_key = \"" << (dir_ / "keys" / (host(i) + ".pub")).string() << "\"\n"
      << "curve_allow_dir = \"" << (dir_ / "allow").string() << "\"\n";
  return t.str();
}

bool netns_fleet::start(std::size_t i, const netns_host_settings& s) {
  const fs::path cfg = dir_ / (host(i) + ".toml");
  std::ofstream(cfg) << toml(i, s);
  workers::child_options co;
  co.argv = {fs::exists("/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip", "netns", "exec", impl_->ns.at(i), shoal_binary(),
             "--config", cfg.string(), "supervisor"};
  // The daemons' connection string comes from the file, not from the caller's environment.
  co.env = {{"AZURE_STORAGE_CONNECTION_STRING", impl_->daemon_cs}};
  co.output = dir_ / (host(i) + "-" + std::to_string(++impl_->started[i]) + ".log");
  co.new_process_group = true;
  auto p = workers::child_process::spawn(co);
  if (!p) {
    error_ = "cannot start " + host(i) + ": " + p.error().describe();
    return false;
  }
  impl_->sups[i].emplace(std::move(*p));
  return true;
}

void netns_fleet::kill(std::size_t i) {
  auto& p = impl_->sups.at(i);
  if (!p || p->pid() <= 0) return;
  for (pid_t pid : process_tree(p->pid())) ::kill(pid, SIGKILL);
  (void)p->wait(milliseconds(5000));
  p.reset();
}

std::optional<int> netns_fleet::terminate(std::size_t i, milliseconds limit) {
  auto& p = impl_->sups.at(i);
  if (!p) return std::nullopt;
  p->signal(SIGTERM);
  auto st = p->wait(limit);
  if (!st) kill(i);
  else p.reset();
  return st;
}

bool netns_fleet::running(std::size_t i) {
  auto& p = impl_->sups.at(i);
  return p && !p->wait(milliseconds(0));
}

std::optional<workers::fleet::fleet_status> netns_fleet::status(std::size_t i,
                                                               std::chrono::system_clock::time_point* answered_at) const {
  std::uint64_t ns = 0;
  auto s = fleet::ask_status("ipc://" + (dir_ / (host(i) + ".sock")).string(), milliseconds(500), &ns);
  if (s && answered_at)
    *answered_at = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(ns)));
  return s;
}

std::string netns_fleet::coordinator() const {
  if (!impl_->fleet) return "";
  auto r = impl_->fleet->get("coordinator", "lease");
  if (!r) return "";
  auto* h = r->get<std::string>("host");
  return h ? *h : "";
}

std::uint64_t netns_fleet::storage_requests() const {
  if (!impl_->proxy) return 0;
  return impl_->proxy->stats()["requests"].value("total", std::uint64_t{0});
}

std::map<std::string, std::uint64_t> netns_fleet::counts(const std::string& queue) const {
  std::map<std::string, std::uint64_t> out;
  if (!work_) return out;
  auto c = work_->counts(queue);
  if (!c) return out;
  for (auto s : {workers::record_status::pending, workers::record_status::claimed, workers::record_status::done,
                 workers::record_status::dead})
    out[std::string(workers::to_string(s))] = 0;
  for (const auto& [s, k] : c->by_status) out[std::string(workers::to_string(s))] = k;
  return out;
}

bool netns_fleet::enqueue(const std::string& queue, std::size_t n, const std::string& prefix) {
  std::vector<workers::new_record> recs;
  recs.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    char id[32];
    std::snprintf(id, sizeof id, "%06zu", i);
    recs.push_back({prefix + id, "x", {}});
  }
  auto r = work_->enqueue(queue, recs);
  if (!r) {
    error_ = "enqueue: " + r.error().describe();
    return false;
  }
  if (r->inserted != n) {
    error_ = "enqueue inserted " + std::to_string(r->inserted) + " of " + std::to_string(n);
    return false;
  }
  return true;
}

std::string netns_fleet::logs(std::size_t bytes) const {
  std::string s;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (e.path().extension() != ".log" || e.path().filename() == "keys.log") continue;
    auto text = slurp(e.path());
    s += "---- " + e.path().filename().string() + " (tail)\n" + (text.size() > bytes ? text.substr(text.size() - bytes) : text);
  }
  return s;
}

} // namespace shoal::tests
