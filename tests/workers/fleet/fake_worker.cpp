// A stand-in for `shoal worker` in the supervisor tests: speaks the ctl.* protocol
// (workers/fleet/ctl_protocol.hpp) and does nothing else, so supervisor behaviour is tested apart
// from the worker's. Usage: fake_worker --slot NAME --supervisor EP [ignored flags…]
// Environment:
//   FAKE_HEARTBEAT_MS   heartbeat period (default 100)
//   FAKE_EXIT_AFTER_MS  exit with status 3 this long after start (a crashing worker)
//   FAKE_EVENTS         append "{event} {slot} {pid}" lines here (hello, assign, wake, drain, bye)
//   FAKE_CLAIM_TABLE, FAKE_CLAIM_QUEUE, FAKE_CLAIM_MAX: claim up to MAX records of QUEUE in
//     TABLE (connection string from AZURE_STORAGE_CONNECTION_STRING) as worker_owner(host,
//     slot, pid) and hold them without renewing: what a dying worker leaves behind.
//   FAKE_CLAIM_ONCE     a marker file: only the process that creates it claims

#include "actors/message.hpp"
#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "storage/table_client.hpp"
#include "transport/socket.hpp"
#include "workers/fleet/ctl_protocol.hpp"
#include "workers/claim/work_table.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using namespace shoal;
using std::chrono::milliseconds;

long env_long(const char* name, long def) {
  const char* v = std::getenv(name);
  return v && *v ? std::atol(v) : def;
}

void event(const std::string& what, const std::string& slot) {
  const char* path = std::getenv("FAKE_EVENTS");
  if (!path || !*path)
    return;
  if (FILE* f = std::fopen(path, "a")) {
    std::fprintf(f, "%s %s %ld\n", what.c_str(), slot.c_str(), static_cast<long>(::getpid()));
    std::fclose(f);
  }
}

template <class M> void send(transport::envelope_socket& s, const M& m) {
  transport::envelope e;
  e.id = transport::new_message_id();
  e.kind = std::string(M::kind);
  e.from = "fake@" + std::to_string(::getpid()) + "@test";
  e.ts_ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
  actors::encode_body(m, e.body);
  (void)s.send(e, milliseconds(100));
}

// Claims records as `owner` so the supervisor has something to release. Returns how many.
std::size_t claim_some(const std::string& owner) {
  const char* table = std::getenv("FAKE_CLAIM_TABLE");
  const char* queue = std::getenv("FAKE_CLAIM_QUEUE");
  const char* cs = std::getenv("AZURE_STORAGE_CONNECTION_STRING");
  if (!table || !queue || !cs)
    return 0;
  if (const char* once = std::getenv("FAKE_CLAIM_ONCE"); once && *once) {
    int fd = ::open(once, O_CREAT | O_EXCL | O_WRONLY, 0644); // only the first process claims
    if (fd < 0)
      return 0;
    ::close(fd);
  }
  auto account = storage::parse_connection_string(cs);
  if (!account)
    return 0;
  auto pipe = storage::pipeline::make(*account);
  if (!pipe)
    return 0;
  auto t = storage::table_client::make(*pipe, table);
  if (!t)
    return 0;
  workers::work_table_options wo;
  wo.work.lease_ms = 120'000; // long: only a release can bring them back soon
  wo.work.lease_renew_ms = 60'000;
  auto w = workers::work_table::make(*t, storage::blob_client(*pipe), wo);
  if (!w)
    return 0;
  std::vector<std::uint32_t> shards;
  for (std::uint32_t s = 0; s < wo.work.shards; ++s)
    shards.push_back(s);
  auto got = w->claim(queue, shards, owner, static_cast<std::size_t>(env_long("FAKE_CLAIM_MAX", 100)));
  return got ? got->size() : 0;
}

} // namespace

int main(int argc, char** argv) {
  std::string slot, endpoint;
  long supervisor_pid = 0;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--slot") == 0)
      slot = argv[++i];
    else if (std::strcmp(argv[i], "--supervisor") == 0)
      endpoint = argv[++i];
    else if (std::strcmp(argv[i], "--supervisor-pid") == 0)
      supervisor_pid = std::atol(argv[++i]);
  }
  if (slot.empty() || endpoint.empty()) {
    std::fprintf(stderr, "fake_worker: --slot and --supervisor are required\n");
    return 2;
  }
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const long pid = static_cast<long>(::getpid());
  const std::string owner = workers::fleet::worker_owner(host, slot, pid);

  zmq::context_t ctx{1};
  transport::socket_options so;
  so.routing_id = slot;
  so.linger = milliseconds(500);
  auto s = transport::envelope_socket::make(ctx, zmq::socket_type::dealer, so);
  if (!s || !s->connect(endpoint))
    return 4;

  // Claim before saying hello: the supervisor gives a worker its startup window (15 s) until
  // the hello and only the liveness window (3 heartbeats) after it, and one claim against a
  // busy storage account can take longer than 3 heartbeats. This loop sends none meanwhile.
  const std::size_t claimed = claim_some(owner);
  if (claimed)
    event("claimed", slot);

  workers::fleet::hello h;
  h.slot = slot;
  h.pid = pid;
  h.host = host;
  h.owner = owner;
  h.job = "fake";
  h.queue = std::getenv("FAKE_CLAIM_QUEUE") ? std::getenv("FAKE_CLAIM_QUEUE") : "exec";
  h.version = "test";
  send(*s, h);
  event("hello", slot);

  workers::fleet::heartbeat hb;
  hb.state = static_cast<std::uint8_t>(workers::fleet::worker_state::idle);
  hb.claimed = claimed;

  const auto start = std::chrono::steady_clock::now();
  const auto period = milliseconds(env_long("FAKE_HEARTBEAT_MS", 100));
  const long exit_after = env_long("FAKE_EXIT_AFTER_MS", -1);
  auto next_hb = start;
  msgpack::zone zone;
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (exit_after >= 0 && now - start >= milliseconds(exit_after)) {
      event("crash", slot);
      return 3;
    }
    if (supervisor_pid > 0 && static_cast<long>(::getppid()) != supervisor_pid) {
      event("orphaned", slot);
      return 0;
    }
    if (now >= next_hb) {
      send(*s, hb);
      next_hb = now + period;
    }
    auto in = s->receive(milliseconds(20));
    if (!in)
      continue;
    if (in->env.kind == workers::fleet::assign::kind) {
      auto a = actors::decode_body<workers::fleet::assign>(in->env.body, zone);
      if (a) {
        hb.assign_epoch = a->epoch;
        std::string shards;
        for (auto x : a->shards)
          shards += (shards.empty() ? "" : ",") + std::to_string(x);
        event("assign " + std::to_string(a->epoch) + " [" + shards + "]", slot);
      }
    } else if (in->env.kind == workers::fleet::work_available::kind) {
      if (auto w = actors::decode_body<workers::fleet::work_available>(in->env.body, zone))
        event("wake " + w->queue + " " + std::to_string(w->shard) + " " + std::to_string(w->count), slot);
    } else if (in->env.kind == workers::fleet::drain::kind) {
      event("drain", slot);
      workers::fleet::bye b;
      b.reason = "drained";
      send(*s, b);
      event("bye", slot);
      return 0;
    }
  }
}
