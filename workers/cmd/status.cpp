// `shoal status`: the fleet at a glance (issue 5 item 6). Asks the local supervisor (or
// --supervisor EP) with ctl.status and prints its view as a table, or the JSON document
// (workers/fleet/STATUS.md) with --json. Without a supervisor answering it says so and still
// shows the queue counts read from the work table. --watch refreshes every --interval-ms.

#include "actors/message.hpp"
#include "storage/blob_client.hpp"
#include "storage/table_client.hpp"
#include "transport/socket.hpp"
#include "workers/cmd/cli.hpp"
#include "workers/fleet/ctl_protocol.hpp"
#include "workers/fleet/status.hpp"
#include "workers/fleet/supervisor.hpp"
#include "workers/claim/work_table.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace shoal::cmd {
namespace {

std::atomic<bool> g_status_stop{false};
extern "C" void on_status_signal(int) { g_status_stop.store(true); }

struct status_args {
  std::string supervisor;
  bool json = false;
  bool watch = false;
  std::uint32_t interval_ms = 2000;
  std::uint32_t timeout_ms = 2000;
  std::vector<std::string> queues;
};

// Asks `endpoint` for its status document. Errors: timeout (nobody answered), io.
workers::result<std::string> ask(zmq::context_t& ctx, const std::string& endpoint, std::uint32_t timeout_ms) {
  transport::socket_options so;
  so.linger = std::chrono::milliseconds(0);
  auto s = transport::envelope_socket::make(ctx, zmq::socket_type::dealer, so);
  if (!s)
    return workers::fail(workers::errc::io, s.error().message);
  if (auto c = s->connect(endpoint); !c)
    return workers::fail(workers::errc::invalid_argument, "cannot connect to " + endpoint + ": " + c.error().message);
  transport::envelope req;
  req.id = transport::new_message_id();
  req.kind = std::string(workers::fleet::status_request::kind);
  req.from = "status@" + std::to_string(::getpid()) + "@local";
  req.ts_ns = transport::unix_now_ns();
  actors::encode_body(workers::fleet::status_request{}, req.body);
  if (auto r = s->send(req, std::chrono::milliseconds(timeout_ms)); !r)
    return workers::fail(workers::errc::io, "cannot send to " + endpoint + ": " + r.error().message);
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  msgpack::zone zone;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      break;
    auto in = s->receive(left);
    if (!in) {
      if (in.error().code == transport::errc::timeout)
        break;
      continue; // an undecodable frame: wait for the next
    }
    if (in->env.kind != workers::fleet::status_reply::kind || in->env.corr != req.id)
      continue;
    auto body = actors::decode_body<workers::fleet::status_reply>(in->env.body, zone);
    if (!body)
      return workers::fail(workers::errc::parse, body.error().message);
    return body->json;
  }
  return workers::fail(workers::errc::timeout,
                       "no supervisor answered at " + endpoint + " within " + std::to_string(timeout_ms) + " ms");
}

// The queue counts straight from the work table (no supervisor to ask).
void table_counts(const workers::config& cfg, const std::vector<std::string>& queues, workers::fleet::fleet_status& st) {
  auto pipe = make_pipeline(cfg, "status");
  std::optional<workers::work_table> table;
  std::string why;
  if (pipe) {
    if (auto t = storage::table_client::make(*pipe, cfg.work.table); t) {
      workers::work_table_options wo;
      wo.work = cfg.work;
      if (auto w = workers::work_table::make(*t, storage::blob_client(*pipe), wo); w)
        table.emplace(*std::move(w));
      else
        why = w.error().describe();
    } else {
      why = t.error().describe();
    }
  } else {
    why = "bad connection string";
  }
  for (const auto& q : queues) {
    auto& v = st.queues[q];
    if (!table) {
      v.error = why;
      continue;
    }
    auto c = table->counts(q);
    if (!c) {
      v.error = c.error().describe();
      continue;
    }
    for (const char* k : {"pending", "claimed", "done", "dead"})
      v.by_status[k] = 0;
    for (const auto& [status, n] : c->by_status)
      v.by_status[std::string(workers::to_string(status))] = n;
    v.total = c->total;
    v.age_ms = 0;
  }
}

int run_status(const global_options& g, const status_args& a) {
  auto cfg = load(g);
  if (!cfg)
    return 2;
  const std::string host = workers::fleet::resolve_host(*cfg);
  std::string endpoint = a.supervisor;
  if (endpoint.empty())
    endpoint = cfg->fleet.endpoint.empty() ? workers::fleet::default_endpoint(host) : cfg->fleet.endpoint;
  std::vector<std::string> queues = a.queues;
  if (queues.empty())
    queues.push_back(workers::fleet::resolve_worker_queue(*cfg));
  const bool json = a.json || g.json;

  if (a.watch) {
    struct sigaction sa{};
    sa.sa_handler = on_status_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
  }
  zmq::context_t ctx{1};
  int rc = 0;
  do {
    workers::fleet::fleet_status st;
    std::string raw;
    auto reply = ask(ctx, endpoint, a.timeout_ms);
    if (reply) {
      auto parsed = workers::fleet::parse_status(*reply);
      if (parsed) {
        st = *std::move(parsed);
        raw = *reply;
      } else {
        st.reachable = false;
        st.error = "bad reply from " + endpoint + ": " + parsed.error().describe();
      }
    } else {
      st.reachable = false;
      st.error = reply.error().message;
    }
    if (!st.reachable) {
      st.endpoint = endpoint;
      table_counts(*cfg, queues, st);
      rc = 1;
      if (!json)
        std::fprintf(stderr, "shoal status: %s; showing the work table only\n", st.error.c_str());
    } else {
      rc = 0;
    }
    if (json) {
      std::printf("%s\n", raw.empty() ? workers::fleet::to_json(st).c_str() : raw.c_str());
    } else {
      if (a.watch)
        std::printf("\033[H\033[2J"); // home + clear: redraw in place
      std::printf("%s", workers::fleet::to_table(st).c_str());
    }
    std::fflush(stdout);
    if (!a.watch)
      break;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(a.interval_ms);
    while (!g_status_stop.load() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (!g_status_stop.load());
  return a.watch ? 0 : rc;
}

} // namespace

void add_status_command(CLI::App& app, global_options& g, command_fn& run) {
  auto a = std::make_shared<status_args>();
  auto* cmd = app.add_subcommand("status", "The fleet at a glance: hosts, workers, shards, queue depth");
  cmd->add_option("--supervisor", a->supervisor, "supervisor endpoint (default: fleet.endpoint or this host's)");
  cmd->add_flag("--json", a->json, "print the JSON document (workers/fleet/STATUS.md)");
  cmd->add_flag("--watch", a->watch, "refresh until interrupted");
  cmd->add_option("--interval-ms", a->interval_ms, "--watch refresh period")->check(CLI::Range(100u, 3'600'000u));
  cmd->add_option("--timeout-ms", a->timeout_ms, "how long to wait for the supervisor")->check(CLI::Range(10u, 600'000u));
  cmd->add_option("--queue", a->queues, "queue(s) to count when no supervisor answers (default: the worker queue)");
  cmd->callback([&g, &run, a] { run = [&g, a] { return run_status(g, *a); }; });
}

} // namespace shoal::cmd
