// scale_bench (issue 19): scaling by adding hosts. For N = 1, 2, 4, 8 hosts, each a network
// namespace with its own `shoal supervisor` and workers (tests/support/netns_fleet.hpp), CURVE
// between hosts, one Azurite for all reached through a counting proxy (no faults):
//
//   sleep, assignment on   the `sleep:50` job (I/O-bound: 50 ms per record, no CPU), the
//                          coordinator assigning shards to hosts: records/s, claim contention
//                          (412s per claim), storage requests per record; then with work left:
//                          a host joins (time from its start to its supervisor's first status
//                          answer, "up"; from up to its workers' first claim, by the service's
//                          write time of the rows they hold; time until the assignment is stable;
//                          shards moved against its share), the same host leaves by SIGTERM
//                          (time until stable), the coordinator's host is killed (time until
//                          another holds the lease and until the assignment is stable again;
//                          shards of surviving hosts that moved);
//                          finally every record done exactly once.
//   sleep, assignment off  each host alone (no host_endpoint, a fleet table of its own): every
//                          worker claims from every shard.
//   noop, on / off         the `noop` job: the claim path alone, storage-bound.
//
// records/s is measured between 10 % and 90 % of a run's records done (start-up and tail left
// out), from the supervisors' status (each worker's done count); contention from the same
// statuses at the end; requests per record over the whole run through the proxy. A stable
// assignment: the coordinator's view lists exactly the live hosts with disjoint shards covering
// every shard, and each host applies the shards the view gives it.
//
//   bench/run.sh scale [--hosts 1,2,4,8] [--per-host 400] [--svg bench/scale.svg] [--events-only]
//   (SIGTERM/SIGINT: the running fleet is torn down, namespaces removed, exit 130; after a
//   kill -9 what it left, namespaces with their processes, bridge and Azurite, is removed at
//   the next start: remove_leftovers)

#include "tests/support/netns.hpp"
#include "tests/support/netns_fleet.hpp"
#include "tests/support/processes.hpp"
#include "storage/table_filter.hpp"
#include "workers/fleet/assignment.hpp"

#include <signal.h>
#include <stdio.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace shoal;
using namespace std::chrono;
namespace fs = std::filesystem;
using tests::netns_fleet;
using tests::netns_host_settings;

namespace {

struct options {
  std::vector<std::size_t> hosts{1, 2, 4, 8};
  std::size_t per_host = 400;  // sleep records per host in a throughput run
  std::size_t noop_records = 6000; // noop records per run (status counts move every heartbeat: keep the window long)
  fs::path svg;
  std::uint32_t heartbeat_ms = 500;
  std::uint32_t lease_ms = 5000;
  std::uint32_t shards = 16;
  bool events_only = false; // the sleep:50/on run and its events only (join, leave, failover)
};

using clock_type = steady_clock;
double ms_since(clock_type::time_point t) { return duration<double, std::milli>(clock_type::now() - t).count(); }

struct run_figures {
  double rate = 0;            // records/s between 10 % and 90 %
  std::uint64_t claims = 0;   // claims by the workers
  std::uint64_t contention = 0;
  double requests_per_record = 0;
  bool finished = false;
  std::string problem;
};

struct event_figures {
  std::optional<double> join_first_claim_ms; // from the joining supervisor's first status answer
  std::optional<double> join_up_ms;          // spawn → its first status answer
  std::optional<double> join_stable_ms;      // spawn → stable with it
  std::uint32_t join_moved = 0;              // shards that changed owner for the join …
  std::uint32_t join_quota = 0;              // … and the joiner's share (the least that must move)
  std::uint32_t failover_moved_live = 0;     // shards of surviving hosts that changed owner at failover
  std::optional<double> leave_stable_ms;     // SIGTERM → stable without it
  std::optional<int> leave_exit;
  std::optional<double> failover_lease_ms;   // kill -9 → another host holds the lease
  std::optional<double> failover_stable_ms;  // kill -9 → stable without it
  std::size_t lost = 0, dead = 0, reclaimed = 0;
  std::uint64_t lease_lost = 0;
  bool exactly_once = false;
  std::string problem;
};

struct row {
  std::size_t n = 0;
  run_figures sleep_on, sleep_off, noop_on, noop_off;
  event_figures ev;
};

netns_host_settings host_settings(const options& o, const std::string& job, const std::string& queue, bool fleet) {
  netns_host_settings s;
  s.workers = 1;
  s.worker_toml = "job = \"" + job + "\"\nqueue = \"" + queue +
                  "\"\nconcurrency = 2\npoll_min_ms = 50\npoll_max_ms = 500\ndrain_timeout_ms = 5000\n";
  s.heartbeat_interval_ms = o.heartbeat_ms;
  s.heartbeat_liveness = 3;
  s.coordinator_lease_ms = o.lease_ms;
  s.coordinator_renew_ms = o.lease_ms / 3;
  s.fleet = fleet;
  return s;
}

// SIGTERM, SIGINT or SIGHUP (bench/run.sh forwards them): every wait below stops by throwing
// `interrupted`, so the fleet's destructor kills the hosts' processes, stops Azurite and removes
// the namespaces on the way out.
std::atomic<bool> g_interrupted{false};
extern "C" void on_stop_signal(int) { g_interrupted.store(true); }
struct interrupted {};
void check_interrupted() {
  if (g_interrupted.load()) throw interrupted{};
}

bool wait_for(const std::function<bool()>& pred, milliseconds limit, milliseconds every = milliseconds(50)) {
  const auto until = clock_type::now() + limit;
  while (!pred()) {
    check_interrupted();
    if (clock_type::now() >= until) return false;
    std::this_thread::sleep_for(every);
  }
  return true;
}

struct totals {
  std::uint64_t done = 0, claimed = 0, contention = 0, lease_lost = 0;
};
totals sum_status(const netns_fleet& f, const std::vector<std::size_t>& hosts) {
  totals t;
  for (auto h : hosts)
    if (auto s = f.status(h))
      for (const auto& w : s->workers) {
        t.done += w.done;
        t.claimed += w.claimed;
        t.contention += w.contention;
        t.lease_lost += w.lease_lost;
      }
  return t;
}

// Stable: the coordinator `coord`'s view lists exactly `hosts`, their shards are disjoint and
// cover every shard, and each host's own assignment equals what the view gives it.
bool stable(const netns_fleet& f, std::size_t coord, const std::vector<std::size_t>& hosts, std::uint32_t shards) {
  auto c = f.status(coord);
  if (!c || !c->coordinator) return false;
  std::set<std::string> want;
  for (auto h : hosts) want.insert(f.host(h));
  std::set<std::string> seen;
  std::vector<int> owners(shards, 0);
  std::map<std::string, std::vector<std::uint32_t>> view;
  for (const auto& h : c->hosts) {
    seen.insert(h.host);
    view[h.host] = h.shards;
    for (auto s : h.shards)
      if (s < shards) ++owners[s];
  }
  if (seen != want || !std::all_of(owners.begin(), owners.end(), [](int k) { return k == 1; })) return false;
  for (auto h : hosts) {
    if (h == coord) continue;
    auto s = f.status(h);
    if (!s || s->assignment.shards != view[f.host(h)]) return false;
  }
  return true;
}

// When host n's workers first claimed a record of `queue`, by the storage service's clock: the
// earliest Timestamp among the rows of `queue` that name one of its workers as owner
// ("h{n}/{slot}/{pid}"): tickets it holds (written by the claim itself, or later by a lease
// renewal) and record rows it completed (written after their claim). Each is at or after the
// claim, so the answer never comes early. Azurite runs on this machine: its clock is ours. One
// filtered query, so polling it does not load the emulator the way reading the queue would.
std::optional<system_clock::time_point> first_claim_at(netns_fleet& f, const std::string& queue, std::size_t n) {
  storage::table_query q;
  q.filter = storage::table_filter::starts_with("PartitionKey", queue + "-") &&
             storage::table_filter::starts_with("owner", f.host(n) + "/");
  q.select = {"PartitionKey", "RowKey", "owner", "Timestamp"};
  auto rows = f.work().table().query_all(q);
  if (!rows) return std::nullopt;
  std::optional<system_clock::time_point> first;
  for (const auto& r : *rows)
    if (r.timestamp) {
      const auto t = time_point_cast<system_clock::duration>(*r.timestamp);
      if (!first || t < *first) first = t;
    }
  return first;
}

// The coordinator's view: host → shards (empty when it does not answer as the coordinator).
workers::fleet::shard_map view_of(const netns_fleet& f, std::size_t coord) {
  workers::fleet::shard_map m;
  auto c = f.status(coord);
  if (c && c->coordinator)
    for (const auto& h : c->hosts) m[h.host] = h.shards;
  return m;
}

// shard → owner of a view.
std::map<std::uint32_t, std::string> owners(const workers::fleet::shard_map& m) {
  std::map<std::uint32_t, std::string> o;
  for (const auto& [h, l] : m)
    for (auto x : l) o[x] = h;
  return o;
}

std::vector<std::size_t> range(std::size_t from, std::size_t to) {
  std::vector<std::size_t> v;
  for (auto i = from; i < to; ++i) v.push_back(i);
  return v;
}

// Starts hosts 0..n-1 (h0 first, as the coordinator, when the fleet is on).
bool start_hosts(netns_fleet& f, std::size_t n, const netns_host_settings& s, std::string& problem) {
  if (!f.start(0, s)) return problem = f.error(), false;
  if (s.fleet && !wait_for([&] { return f.coordinator() == f.host(0); }, seconds(30)))
    return problem = "h0 did not take the coordinator lease", false;
  for (std::size_t i = 1; i < n; ++i)
    if (!f.start(i, s)) return problem = f.error(), false;
  return true;
}

void stop_hosts(netns_fleet& f, const std::vector<std::size_t>& hosts) {
  for (auto h : hosts) {
    check_interrupted();
    if (f.running(h)) (void)f.terminate(h, seconds(30));
  }
}

// One throughput run: `records` records of `queue`, hosts 0..n-1 started, measured until done.
// The hosts are left running (the caller stops them, or goes on with events).
run_figures throughput(netns_fleet& f, std::size_t n, const netns_host_settings& s, const std::string& queue,
                       std::size_t records) {
  run_figures r;
  if (!f.enqueue(queue, records, queue + "-")) return r.problem = f.error(), r;
  const auto req0 = f.storage_requests();
  if (!start_hosts(f, n, s, r.problem)) return r;
  const auto hosts = range(0, n);
  std::optional<clock_type::time_point> t10, t90;
  std::uint64_t d10 = 0, d90 = 0;
  const auto limit = clock_type::now() + seconds(600);
  auto last_table = clock_type::now();
  while (clock_type::now() < limit) {
    auto t = sum_status(f, hosts);
    if (!t10 && t.done >= records / 10) t10 = clock_type::now(), d10 = t.done;
    if (!t90 && t.done >= records * 9 / 10) t90 = clock_type::now(), d90 = t.done;
    if (t90 && clock_type::now() - last_table > milliseconds(500)) {
      last_table = clock_type::now();
      auto c = f.counts(queue);
      if (!c.empty() && c["done"] == records) {
        r.finished = true;
        break;
      }
    }
    check_interrupted();
    std::this_thread::sleep_for(milliseconds(100));
  }
  if (!r.finished) r.problem = "not finished in 600 s";
  if (t10 && t90 && *t90 > *t10) r.rate = static_cast<double>(d90 - d10) / duration<double>(*t90 - *t10).count();
  std::this_thread::sleep_for(milliseconds(2 * s.heartbeat_interval_ms)); // last heartbeats in
  auto t = sum_status(f, hosts);
  r.claims = t.claimed;
  r.contention = t.contention;
  r.requests_per_record = static_cast<double>(f.storage_requests() - req0) / static_cast<double>(records);
  return r;
}

// With hosts 0..n-1 running the sleep job on `queue`: join, leave, failover, then exactly once.
event_figures events(netns_fleet& f, const options& o, std::size_t n, const netns_host_settings& s,
                     const std::string& queue, std::size_t first_batch) {
  event_figures e;
  // Work for the events: about 25 s of the fleet's rate, so every event lands mid-run.
  const std::size_t batch = std::max<std::size_t>(1000, (n + 1) * 40 * 25);
  if (!f.enqueue(queue, batch, queue + "-e")) return e.problem = f.error(), e;
  const std::size_t total = first_batch + batch;
  std::vector<std::size_t> hosts = range(0, n);
  if (!wait_for([&] { return stable(f, 0, hosts, o.shards); }, seconds(30)))
    return e.problem = "not stable before the join", e;

  const auto before_join = view_of(f, 0);
  // Join: host n.
  const auto t_spawn = clock_type::now();
  if (!f.start(n, s)) return e.problem = f.error(), e;
  hosts.push_back(n);
  std::optional<clock_type::time_point> t_up;
  std::optional<system_clock::time_point> up_at; // t_up by the wall clock (the service's clock)
  auto next_look = clock_type::now();
  wait_for(
      [&] {
        system_clock::time_point answered{};
        auto st = f.status(n, &answered);
        if (st && !t_up) {
          // "Up": when the supervisor sent its first status answer, by its own clock (a request
          // waits in its socket while it starts, and is answered as its loop begins; when we
          // receive the answer may be later, by up to one status timeout).
          t_up = clock_type::now();
          up_at = answered;
          e.join_up_ms = ms_since(t_spawn) - duration<double, std::milli>(system_clock::now() - answered).count();
        }
        if (t_up && !e.join_first_claim_ms && clock_type::now() >= next_look) {
          // From the table, not the status (a worker reports its claims only with its next
          // heartbeat), by the service's write time, so how often we look does not count.
          next_look = clock_type::now() + milliseconds(100);
          if (auto at = first_claim_at(f, queue, n))
            e.join_first_claim_ms = duration<double, std::milli>(*at - *up_at).count();
        }
        if (!e.join_stable_ms && stable(f, 0, hosts, o.shards)) e.join_stable_ms = ms_since(t_spawn);
        return e.join_first_claim_ms && e.join_stable_ms;
      },
      seconds(60), milliseconds(20));
  if (e.join_stable_ms) {
    // Shards whose owner changed: ideally exactly the joiner's share.
    auto after = view_of(f, 0);
    e.join_quota = static_cast<std::uint32_t>(after[f.host(n)].size());
    auto owner_after = owners(after);
    for (const auto& [x, h] : owners(before_join))
      if (owner_after[x] != h) ++e.join_moved;
  }

  // Leave: host n by SIGTERM (it drains).
  const auto t_term = clock_type::now();
  auto leaving = std::async(std::launch::async, [&] { return f.terminate(n, seconds(60)); });
  hosts.pop_back();
  wait_for([&] { return stable(f, 0, hosts, o.shards); }, seconds(60), milliseconds(20));
  if (stable(f, 0, hosts, o.shards)) e.leave_stable_ms = ms_since(t_term);
  e.leave_exit = leaving.get();

  // Failover: kill -9 of the coordinator's host (h0), when another host is left to take over.
  if (n >= 2) {
    if (f.coordinator() != f.host(0)) e.problem = "h0 is not the coordinator before the kill";
    const auto before_kill = view_of(f, 0);
    f.kill(0);
    const auto t_kill = clock_type::now();
    hosts.erase(hosts.begin());
    std::optional<std::size_t> next;
    wait_for(
        [&] {
          if (!next) {
            auto c = f.coordinator();
            for (auto h : hosts)
              if (c == f.host(h)) next = h, e.failover_lease_ms = ms_since(t_kill);
          }
          if (next && stable(f, *next, hosts, o.shards)) e.failover_stable_ms = ms_since(t_kill);
          return e.failover_stable_ms.has_value();
        },
        seconds(60), milliseconds(20));
    if (next && e.failover_stable_ms) {
      // Shards of the survivors that changed owner: ideally none (only h0's move).
      auto owner_after = owners(view_of(f, *next));
      for (const auto& [x, h] : owners(before_kill))
        if (h != f.host(0) && owner_after[x] != h) ++e.failover_moved_live;
    }
  }

  // The rest, then exactly once.
  wait_for(
      [&] {
        auto c = f.counts(queue);
        return !c.empty() && c["done"] == total;
      },
      seconds(600), milliseconds(500));
  e.lease_lost = sum_status(f, hosts).lease_lost;
  auto c = f.counts(queue);
  e.lost = total - std::min<std::size_t>(total, c["done"]);
  e.dead = c["dead"];
  auto done = f.work().list(queue, workers::record_status::done, total + 10);
  if (done) {
    for (const auto& v : *done)
      if (v.attempts >= 2) ++e.reclaimed;
    e.exactly_once = done->size() == total && e.lost == 0 && e.dead == 0 && c["pending"] == 0 && c["claimed"] == 0;
  }
  return e;
}

std::string fmt(double v, int prec = 0) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}
std::string fmt(const std::optional<double>& v) { return v ? fmt(*v) : "–"; }
std::string pct(std::uint64_t part, std::uint64_t whole) {
  return whole ? fmt(100.0 * static_cast<double>(part) / static_cast<double>(whole), 2) + " %" : "–";
}

void print_table(const std::vector<row>& rows, const options& o) {
  std::ostringstream t;
  t << "| hosts | sleep:50 rec/s (on) | (off) | contention on | off | req/record on | off | noop rec/s on | off "
       "| noop contention on | off | noop req/record on | join: up ms | join: first claim ms | join stable ms "
       "| join moved / share | leave stable ms | failover lease ms | failover stable ms | live shards moved at failover "
       "| lost | dead | re-claimed | exactly once |\n"
    << "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n";
  for (const auto& r : rows) {
    t << "| " << r.n << " | " << fmt(r.sleep_on.rate) << " | " << fmt(r.sleep_off.rate) << " | "
      << pct(r.sleep_on.contention, r.sleep_on.claims) << " | " << pct(r.sleep_off.contention, r.sleep_off.claims) << " | "
      << fmt(r.sleep_on.requests_per_record, 2) << " | " << fmt(r.sleep_off.requests_per_record, 2) << " | "
      << fmt(r.noop_on.rate) << " | " << fmt(r.noop_off.rate) << " | " << pct(r.noop_on.contention, r.noop_on.claims)
      << " | " << pct(r.noop_off.contention, r.noop_off.claims) << " | " << fmt(r.noop_on.requests_per_record, 2) << " | "
      << fmt(r.ev.join_up_ms) << " | " << fmt(r.ev.join_first_claim_ms) << " | " << fmt(r.ev.join_stable_ms) << " | "
      << r.ev.join_moved << " / " << r.ev.join_quota << " | " << fmt(r.ev.leave_stable_ms) << " | "
      << fmt(r.ev.failover_lease_ms) << " | " << fmt(r.ev.failover_stable_ms) << " | "
      << (r.n >= 2 ? std::to_string(r.ev.failover_moved_live) : std::string("–")) << " | " << r.ev.lost << " | " << r.ev.dead << " | " << r.ev.reclaimed << " | "
      << (r.ev.exactly_once ? "yes" : "NO") << " |\n";
  }
  std::cout << "\n" << t.str();
  if (!rows.empty() && rows.front().sleep_on.rate > 0)
    for (const auto& r : rows)
      std::cout << "sleep:50 at " << r.n << " hosts: " << fmt(r.sleep_on.rate / rows.front().sleep_on.rate, 2)
                << "x one host (assignment on), " << fmt(r.sleep_off.rate / rows.front().sleep_on.rate, 2) << "x (off)\n";
  std::cout << "settings: 1 worker per host, concurrency 2, " << o.shards << " shards, heartbeat " << o.heartbeat_ms
            << " ms, coordinator lease " << o.lease_ms << " ms (renew " << o.lease_ms / 3 << " ms)\n";
  for (const auto& r : rows)
    for (const auto* p : {&r.sleep_on.problem, &r.sleep_off.problem, &r.noop_on.problem, &r.noop_off.problem, &r.ev.problem})
      if (!p->empty()) std::cout << "problem at " << r.n << " hosts: " << *p << "\n";
}

void plot(const std::vector<row>& rows, const fs::path& svg) {
  if (svg.empty()) return;
  const fs::path dat = fs::temp_directory_path() / "shoal-scale.dat";
  {
    std::ofstream d(dat);
    d << "# hosts sleep_on sleep_off noop_on noop_off cont_sleep_on cont_sleep_off cont_noop_on cont_noop_off\n";
    auto c = [](const run_figures& f) {
      return f.claims ? 100.0 * static_cast<double>(f.contention) / static_cast<double>(f.claims) : 0.0;
    };
    for (const auto& r : rows)
      d << r.n << ' ' << r.sleep_on.rate << ' ' << r.sleep_off.rate << ' ' << r.noop_on.rate << ' ' << r.noop_off.rate
        << ' ' << c(r.sleep_on) << ' ' << c(r.sleep_off) << ' ' << c(r.noop_on) << ' ' << c(r.noop_off) << '\n';
  }
  const fs::path gp = fs::temp_directory_path() / "shoal-scale.gp";
  {
    std::ofstream g(gp);
    g << "set terminal svg size 960,420 dynamic font 'sans,11'\nset output '" << svg.string() << "'\n"
      << "set multiplot layout 1,2 title 'shoal: hosts in network namespaces, one Azurite (2-core machine)'\n"
      << "set xlabel 'hosts'\nset logscale x 2\nset xrange [0.8:10]\nset xtics (1,2,4,8)\nset key below\nset grid\n"
      << "set ylabel 'records/s'\nset title 'throughput'\nset logscale y\n"
      << "plot '" << dat.string() << "' u 1:2 w lp t 'sleep:50, assignment on', '' u 1:3 w lp t 'sleep:50, off', "
      << "'' u 1:4 w lp t 'noop, on', '' u 1:5 w lp t 'noop, off'\n"
      << "set ylabel '412 per claim (%)'\nset title 'claim contention'\nunset logscale y\nset yrange [0:1<*]\n"
      << "plot '" << dat.string() << "' u 1:6 w lp t 'sleep:50, on', '' u 1:7 w lp t 'sleep:50, off', "
      << "'' u 1:8 w lp t 'noop, on', '' u 1:9 w lp t 'noop, off'\nunset multiplot\n";
  }
  const std::string cmd = "gnuplot '" + gp.string() + "'";
  if (std::system(cmd.c_str()) != 0) std::cout << "gnuplot failed: no plot written\n";
  else std::cout << "plot written to " << svg.string() << "\n";
}

std::vector<std::size_t> parse_list(const std::string& s) {
  std::vector<std::size_t> v;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ','))
    if (!part.empty()) v.push_back(std::stoul(part));
  return v;
}

void run_all(const options& o, std::vector<row>& rows);

} // namespace

namespace {

// The lines `cmd` prints on stdout ("" when it cannot run).
std::vector<std::string> output_lines(const std::string& cmd) {
  std::vector<std::string> out;
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return out;
  std::string cur;
  for (int c; (c = std::fgetc(p)) != EOF;) {
    if (c != '\n') {
      cur += static_cast<char>(c);
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(cur);
  ::pclose(p);
  return out;
}

// A bench killed with -9 runs no destructor: its namespaces (with the supervisors and workers in
// them), its bridge and its Azurite stay. netns_fleet names them by the bench's pid % 100000 as
// id: namespaces "sb{id}h{i}", bridge "brsb{id}" on 10.219.{x}.1, Azurite listening there.
// Whatever carries an id that no running scale_bench has is removed here, before the first N.
void remove_leftovers() {
  std::set<long> live, live_pids; // ids (pid % 100000) and pids of running scale_bench processes
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    std::ifstream comm(e.path() / "comm");
    std::string c;
    if (std::getline(comm, c) && c == "scale_bench") {
      live.insert(std::stol(name) % 100000);
      live_pids.insert(std::stol(name));
    }
  }
  std::set<long> stale; // ids of the runs whose leftovers are removed
  auto stale_id = [&](const std::string& n, const std::string& prefix) -> std::optional<long> {
    if (!n.starts_with(prefix)) return std::nullopt;
    std::size_t i = prefix.size(), j = i;
    while (j < n.size() && n[j] >= '0' && n[j] <= '9') ++j;
    if (j == i) return std::nullopt;
    const long id = std::stol(n.substr(i, j - i));
    if (live.contains(id)) return std::nullopt;
    stale.insert(id);
    return id;
  };
  std::size_t namespaces = 0, bridges = 0, killed = 0;
  for (const auto& line : output_lines("ip netns list")) {
    const std::string ns = line.substr(0, line.find(' ')); // "name (id: 3)"
    auto id = stale_id(ns, "sb");
    if (!id || ns.find('h', 2) == std::string::npos) continue;
    for (const auto& pid : output_lines("ip netns pids " + ns)) {
      ::kill(static_cast<pid_t>(std::stol(pid)), SIGKILL);
      ++killed;
    }
    if (tests::sh("ip netns del " + ns)) ++namespaces;
  }
  for (const auto& line : output_lines("ip -o link show type bridge")) {
    // "12: brsb4242: <BROADCAST,…"
    const auto a = line.find(": "), b = line.find(':', a + 2);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string br = line.substr(a + 2, b - a - 2);
    if (!stale_id(br, "brsb")) continue;
    // Its Azurite listens on the bridge's address.
    for (const auto& addr : output_lines("ip -o -4 addr show dev " + br + " | awk '{print $4}' | cut -d/ -f1")) {
      for (const auto& e : fs::directory_iterator("/proc")) {
        const std::string name = e.path().filename().string();
        if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
        const pid_t pid = static_cast<pid_t>(std::stol(name));
        const std::string cmd = tests::command_line(pid) + " ";
        if (cmd.find("azurite") != std::string::npos && cmd.find(" " + addr + " ") != std::string::npos) {
          ::kill(pid, SIGKILL);
          ++killed;
        }
      }
    }
    if (tests::sh("ip link del " + br)) ++bridges;
  }
  // Its folder (configurations, keys, logs, Azurite's data): {temp}/shoalsbp{pid}n{k}; only of
  // a run that left namespaces or a bridge (a folder kept on purpose, SHOAL_TEST_KEEP, stays).
  std::size_t folders = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::temp_directory_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with("shoalsbp")) continue;
    const auto n = name.find('n', 8);
    if (n == std::string::npos || n == 8) continue;
    const std::string pid = name.substr(8, n - 8);
    if (!std::all_of(pid.begin(), pid.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        live_pids.contains(std::stol(pid)) || !stale.contains(std::stol(pid) % 100000))
      continue;
    std::error_code rm;
    fs::remove_all(e.path(), rm);
    folders += rm ? 0 : 1;
  }
  if (namespaces + bridges + killed + folders > 0)
    std::cerr << "scale_bench: removed what an earlier run left: " << namespaces << " namespace(s), " << bridges
              << " bridge(s), " << killed << " process(es), " << folders << " folder(s)\n";
}

} // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--hosts") o.hosts = parse_list(next());
    else if (a == "--per-host") o.per_host = std::stoul(next());
    else if (a == "--noop-records") o.noop_records = std::stoul(next());
    else if (a == "--svg") o.svg = next();
    else if (a == "--events-only") o.events_only = true;
    else {
      std::cerr << "usage: scale_bench [--hosts 1,2,4,8] [--per-host 400] [--noop-records 6000] [--svg FILE] "
                   "[--events-only]\n";
      return 2;
    }
  }
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaction(sig, &sa, nullptr);
  remove_leftovers();
  std::vector<row> rows;
  try {
    run_all(o, rows);
  } catch (const interrupted&) {
    // The fleet of the N being run is gone already (its destructor ran on the way here).
    std::cerr << "scale_bench: interrupted; hosts, Azurite and namespaces removed\n";
    return 130;
  }
  plot(rows, o.svg);
  bool ok = true;
  for (const auto& r : rows) ok = ok && r.ev.exactly_once;
  return ok ? 0 : 1;
}

namespace {

void run_all(const options& o, std::vector<row>& rows) {
  for (auto n : o.hosts) {
    check_interrupted();
    tests::netns_fleet_options fo;
    fo.prefix = "sb";
    fo.hosts = n + 1; // the last one joins
    fo.count_requests = true;
    fo.work_lease_ms = 5000;
    fo.shards = o.shards;
    netns_fleet f(fo);
    check_interrupted();
    if (!f.skip_reason().empty()) {
      std::cerr << "scale_bench: " << f.skip_reason() << "\n";
      std::exit(1);
    }
    if (!f.error().empty()) {
      std::cerr << "scale_bench: " << f.error() << "\n";
      std::exit(1);
    }
    row r;
    r.n = n;
    const auto all = range(0, n + 1);
    std::cerr << "== " << n << " hosts: sleep:50, assignment on\n";
    const std::string q1 = "s" + std::to_string(n) + "on";
    auto s_on = host_settings(o, "sleep:50", q1, true);
    r.sleep_on = throughput(f, n, s_on, q1, n * o.per_host);
    std::cerr << "   " << fmt(r.sleep_on.rate) << " records/s; events\n";
    r.ev = events(f, o, n, s_on, q1, n * o.per_host);
    stop_hosts(f, all);
    if (o.events_only) {
      rows.push_back(r);
      print_table(rows, o);
      continue;
    }
    std::cerr << "== " << n << " hosts: sleep:50, assignment off\n";
    const std::string q2 = "s" + std::to_string(n) + "off";
    r.sleep_off = throughput(f, n, host_settings(o, "sleep:50", q2, false), q2, n * o.per_host);
    stop_hosts(f, all);
    std::cerr << "== " << n << " hosts: noop, on\n";
    const std::string q3 = "n" + std::to_string(n) + "on";
    r.noop_on = throughput(f, n, host_settings(o, "noop", q3, true), q3, o.noop_records);
    stop_hosts(f, all);
    std::cerr << "== " << n << " hosts: noop, off\n";
    const std::string q4 = "n" + std::to_string(n) + "off";
    r.noop_off = throughput(f, n, host_settings(o, "noop", q4, false), q4, o.noop_records);
    stop_hosts(f, all);
    rows.push_back(r);
    print_table(rows, o); // so far, in case a later N fails
  }
}

} // namespace
