// transport_bench: envelopes/s through encode → ZeroMQ PUSH/PULL → decode, each figure beside
// raw libzmq PUSH/PULL frames of the same encoded size measured in the same run.
//
//   bench/run.sh transport [--quick] [--pin] [--reps N] [--only tcp:1024]
//
// "raw": the sender calls zmq_send() on a prepared buffer of the envelope's encoded size (libzmq
// copies it into a fresh message, as any plain user would), the receiver zmq_msg_recv()s into a
// reused message and looks at nothing. "envelope": the sender fills an envelope (fresh id and
// timestamp per message) and calls envelope_socket::send (validate + encode straight into the
// zmq message, waiting at the high-water mark instead of dropping), the receiver calls
// envelope_socket::receive (decode_into a reused envelope: strict validation, body copied out).
// Both run sender and receiver on two threads of one process with default HWMs (1000), so the
// ratio isolates what shoal adds per message. Each case is measured `reps` times as back-to-back
// raw/envelope pairs; the best run of each side, the medians, and the median of the per-pair
// ratios are reported (on a shared 2-vCPU VM single runs vary by 3-5x: the best run is the one
// least disturbed by other load), then the CPU µs the process spent per message (sender, receiver
// and libzmq I/O threads; medians) and "cpu" = median over pairs of reference µs / project µs,
// i.e. the throughput ratio when the CPU is the bottleneck; it is the steadiest figure.

#include "actors/system.hpp"
#include "transport/codec.hpp"
#include "transport/curve.hpp"
#include "transport/socket.hpp"

#include <zmq.hpp>

#include <pthread.h>
#include <sys/resource.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace shoal::transport;
using clock_type = std::chrono::steady_clock;

// -- report -------------------------------------------------------------------------------------

/// One printed line: a project figure beside its reference, both in messages per second, over
/// `reps` back-to-back pairs. "best" is the fastest run of each side (least disturbed by other
/// load on a shared machine); "median" the middle run; "pair" the median of per-pair ratios.
struct bench_row {
  std::string section;          // "transport", "curve", "actors"
  std::string name;             // e.g. "tcp 1024 B"
  std::vector<double> reference; // msg/s of each run of the reference (raw libzmq, CURVE off)
  std::vector<double> project;   // msg/s of each run of the project path, same order
  std::vector<double> reference_cpu; // CPU µs per message of each reference run
  std::vector<double> project_cpu;   // CPU µs per message of each project run
  std::string reference_label = "raw";
  std::string project_label = "envelope";
};

void print_header() {
  std::printf("%-9s %-28s %9s %9s %5s | %9s %9s %5s %5s | %6s %6s %5s\n", "section", "case",
              "ref best", "proj best", "ratio", "ref med", "proj med", "ratio", "pair", "ref µs",
              "proj µs", "cpu");
}

double median(std::vector<double> v);
double paired(const std::vector<double>& a, const std::vector<double>& b);

/// Prints `r` (see bench_row for the columns).
void print_row(const bench_row& r) {
  auto best = [](const std::vector<double>& v) {
    return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
  };
  const double rb = best(r.reference), pb = best(r.project);
  const double rm = median(r.reference), pm = median(r.project);
  const double rc = median(r.reference_cpu), pc = median(r.project_cpu);
  std::printf("%-9s %-28s %9.0f %9.0f %5.2f | %9.0f %9.0f %5.2f %5.2f | %6.2f %6.2f %5.2f  (%s vs %s)\n",
              r.section.c_str(), r.name.c_str(), rb, pb, rb > 0 ? pb / rb : 0.0, rm, pm,
              rm > 0 ? pm / rm : 0.0, paired(r.project, r.reference), rc, pc,
              paired(r.reference_cpu, r.project_cpu), r.project_label.c_str(),
              r.reference_label.c_str());
  std::fflush(stdout);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

/// Median of a[i] / b[i]: each pair ran back to back, so slow phases of a shared machine hit
/// both sides of a pair alike.
double paired(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    if (b[i] > 0) r.push_back(a[i] / b[i]);
  return median(r);
}

struct options {
  int reps = 7;
  bool pin = false;
  bool verbose = false; // "--verbose": print every run  // "--pin": sender on CPU 0, receiver on CPU 1 (libzmq I/O threads float)
  bool quick = false;
  std::string only;  // "--only tcp:1024": run just that transport section case (profiling)
};

const options* g_opts = nullptr;

void pin_to(int cpu) {
  if (!g_opts || !g_opts->pin) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % static_cast<int>(std::max(1u, std::thread::hardware_concurrency())), &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/// Runs `send` on a thread pinned to CPU 0 and `receive` on one pinned to CPU 1 (with --pin).
void run_pair(const std::function<void()>& send, const std::function<void()>& receive) {
  std::thread receiver([&] { pin_to(1); receive(); });
  std::thread sender([&] { pin_to(0); send(); });
  sender.join();
  receiver.join();
}

// -- endpoints ----------------------------------------------------------------------------------

int g_seq = 0;

std::string endpoint_for(const std::string& transport) {
  const std::string tag = std::to_string(::getpid()) + "-" + std::to_string(g_seq++);
  if (transport == "inproc") return "inproc://transport-bench-" + tag;
  if (transport == "ipc") return "ipc:///tmp/shoal-transport-bench-" + tag + ".sock";
  return "tcp://127.0.0.1:*";
}

/// libzmq 4.3 leaves an ipc socket file behind after close; remove ours.
void remove_ipc_file(const std::string& endpoint) {
  if (endpoint.starts_with("ipc://")) {
    std::error_code ec;
    std::filesystem::remove(endpoint.substr(6), ec);
  }
}

envelope bench_envelope(std::size_t body_bytes) {
  envelope e;
  e.id = new_message_id();
  e.kind = "bench.message";
  e.from = "bench@transport_bench@localhost";
  e.to = "sink@transport_bench@localhost";
  e.ts_ns = 1;
  e.hdr = {{"ct", "application/octet-stream"}};
  e.body.assign(body_bytes, 0xab);
  return e;
}

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::system_clock::now().time_since_epoch()).count());
}

/// Process CPU time (user + system, all threads) so far, in seconds.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

/// One measured run: wall-clock throughput, and CPU µs the whole process (sender, receiver,
/// libzmq I/O threads) spent per message: the figure a busy shared machine distorts least.
struct run_result {
  double msgs_per_s = 0;
  double cpu_us_per_msg = 0;
};

// -- raw libzmq ---------------------------------------------------------------------------------

run_result run_raw(const std::string& transport, std::size_t frame_bytes, std::size_t count) {
  const double cpu0 = cpu_seconds();
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  zmq::socket_t push(ctx, zmq::socket_type::push);
  pull.set(zmq::sockopt::linger, 0);
  push.set(zmq::sockopt::linger, 0);
  pull.bind(endpoint_for(transport));
  const std::string where = pull.get(zmq::sockopt::last_endpoint);
  push.connect(where);
  std::vector<std::uint8_t> frame(frame_bytes, 0xab);
  clock_type::time_point start;
  run_pair(
      [&] {
        for (std::size_t i = 0; i < count; ++i)
          if (zmq_send(push.handle(), frame.data(), frame.size(), 0) < 0) break;
      },
      [&] {
        zmq::message_t msg;
        for (std::size_t i = 0; i < count; ++i) {
          if (zmq_msg_recv(msg.handle(), pull.handle(), 0) < 0) return;
          if (i == 0) start = clock_type::now(); // first arrival: connection set-up excluded
        }
      });
  const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  push.close();
  pull.close();
  ctx.close();
  remove_ipc_file(where);
  return {static_cast<double>(count - 1) / secs, (cpu_seconds() - cpu0) / static_cast<double>(count) * 1e6};
}

// -- envelopes ----------------------------------------------------------------------------------

/// CURVE keys and a running ZAP handler for the "curve" section.
struct curve_setup {
  curve_key_pair server, client;
  std::filesystem::path allow_list;
};

run_result run_envelopes(const std::string& transport, std::size_t body_bytes, std::size_t count,
                         const curve_setup* curve = nullptr) {
  const double cpu0 = cpu_seconds();
  zmq::context_t ctx;
  std::unique_ptr<zap_authenticator> zap;
  if (curve) {
    zap_options zo;
    zo.allow_list = curve->allow_list;
    auto z = zap_authenticator::start(ctx, zo);
    if (!z) { std::fprintf(stderr, "zap: %s\n", z.error().describe().c_str()); return {}; }
    zap = std::move(*z);
  }
  socket_options opts;
  opts.linger = std::chrono::milliseconds{0};
  auto pull = envelope_socket::make(ctx, zmq::socket_type::pull, opts);
  auto push = envelope_socket::make(ctx, zmq::socket_type::push, opts);
  if (!pull || !push) return {};
  if (curve) {
    if (!configure_curve_server(pull->raw(), curve->server) ||
        !configure_curve_client(push->raw(), curve->client, curve->server.public_key))
      return {};
  }
  if (auto r = pull->bind(endpoint_for(transport)); !r) {
    std::fprintf(stderr, "bind: %s\n", r.error().describe().c_str());
    return {};
  }
  if (auto r = push->connect(pull->last_endpoint()); !r) return {};
  clock_type::time_point start;
  std::size_t received = 0;
  run_pair(
      [&] {
        envelope e = bench_envelope(body_bytes);
        for (std::size_t i = 0; i < count; ++i) {
          e.id = new_message_id();
          e.ts_ns = now_ns();
          if (auto r = push->send(e, std::chrono::seconds(10)); !r) {
            std::fprintf(stderr, "send: %s\n", r.error().describe().c_str());
            break;
          }
        }
      },
      [&] {
        envelope in;
        for (std::size_t i = 0; i < count; ++i) {
          auto r = pull->receive(in, std::chrono::seconds(10));
          if (!r) { std::fprintf(stderr, "receive: %s\n", r.error().describe().c_str()); return; }
          if (i == 0) start = clock_type::now(); // first arrival: connection set-up excluded
          ++received;
        }
        if (in.body.size() != body_bytes) std::fprintf(stderr, "body size mismatch\n");
      });
  const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  if (push->stats().dropped_hwm.load() != 0 || pull->stats().decode_errors.load() != 0)
    std::fprintf(stderr, "unexpected drops/decode errors\n");
  if (received != count) return {};
  const std::string where = pull->last_endpoint();
  push->raw().close();
  pull->raw().close();
  remove_ipc_file(where);
  if (zap) zap->stop();
  ctx.close();
  return {static_cast<double>(count - 1) / secs, (cpu_seconds() - cpu0) / static_cast<double>(count) * 1e6};
}

std::size_t count_for(std::size_t body_bytes, const options& o) {
  const std::size_t n = body_bytes <= 64 ? 200'000 : body_bytes <= 1024 ? 100'000 : 20'000;
  return o.quick ? n / 10 : n;
}

// -- sections -----------------------------------------------------------------------------------

void run_transport_section(const options& o) {
  for (const std::string transport : {"inproc", "ipc", "tcp"}) {
    for (std::size_t body : {std::size_t{64}, std::size_t{1024}, std::size_t{16384}}) {
      if (!o.only.empty() && o.only != transport + ":" + std::to_string(body)) continue;
      const std::size_t frame = encoded_size(bench_envelope(body));
      const std::size_t n = count_for(body, o);
      bench_row row;
      row.section = "transport";
      row.name = transport + " " + std::to_string(body) + " B (" + std::to_string(frame) + " B frame)";
      run_raw(transport, frame, n / 10); // warm-up
      for (int rep = 0; rep < o.reps; ++rep) {
        const run_result raw = run_raw(transport, frame, n);
        const run_result env = run_envelopes(transport, body, n);
        row.reference.push_back(raw.msgs_per_s);
        row.reference_cpu.push_back(raw.cpu_us_per_msg);
        row.project.push_back(env.msgs_per_s);
        row.project_cpu.push_back(env.cpu_us_per_msg);
        if (o.verbose)
          std::fprintf(stderr, "  run %d: raw %.0f/s %.2f µs, envelope %.0f/s %.2f µs\n", rep,
                       raw.msgs_per_s, raw.cpu_us_per_msg, env.msgs_per_s, env.cpu_us_per_msg);
      }
      print_row(row);
    }
  }
}

void run_curve_section(const options& o) {
  if (!curve_available()) {
    std::printf("curve      (libzmq without CURVE: skipped)\n");
    return;
  }
  curve_setup cs;
  cs.server = *generate_curve_key_pair();
  cs.client = *generate_curve_key_pair();
  cs.allow_list = std::filesystem::temp_directory_path() /
                  ("shoal-transport-bench-" + std::to_string(::getpid()) + ".keys");
  { std::ofstream(cs.allow_list) << cs.client.public_key << "\n"; }
  for (std::size_t body : {std::size_t{64}, std::size_t{1024}, std::size_t{16384}}) {
    const std::size_t n = count_for(body, o) / 2;
    bench_row row;
    row.section = "curve";
    row.name = "tcp " + std::to_string(body) + " B";
    row.reference_label = "CURVE off";
    row.project_label = "CURVE on";
    for (int rep = 0; rep < o.reps; ++rep) {
      const run_result off = run_envelopes("tcp", body, n);
      const run_result on = run_envelopes("tcp", body, n, &cs);
      row.reference.push_back(off.msgs_per_s);
      row.reference_cpu.push_back(off.cpu_us_per_msg);
      row.project.push_back(on.msgs_per_s);
      row.project_cpu.push_back(on.cpu_us_per_msg);
    }
    print_row(row);
  }
  std::filesystem::remove(cs.allow_list);
}

// == actors section =============================================================================
// Owned by the actors helper: actor-to-actor `tell` throughput (in-process and through the
// gateways), reported with print_row() in section "actors" beside its reference. Fill in
// run_actors_section(); main() already calls it after the transport and curve sections.
//
// "actor tell": a source actor tells a sink actor `count` messages whose body encodes to 64 B
// (a msgpack bin of 61 bytes), both in one actor_system with a thread each; the sink's mailbox
// holds 8192 with overflow_policy::block, so nothing is dropped. Every tell builds a full
// envelope (fresh id, timestamp, kind, from) and the sink decodes the body into the message
// struct. Timed from the first tell until the sink has handled the last one.
// Reference: raw libzmq inproc PUSH/PULL of 64 B frames (run_raw), same count, same run.
namespace actors_bench {

struct blob64 {
  static constexpr std::string_view kind = "bench.blob64";
  std::vector<std::uint8_t> data; // 61 bytes: encodes to exactly 64 B
  MSGPACK_DEFINE(data);
};
struct go {
  static constexpr std::string_view kind = "bench.go";
  std::uint64_t count = 0;
  MSGPACK_DEFINE(count);
};

class sink final : public shoal::actors::actor {
public:
  sink(shoal::actors::actor_config& cfg, std::uint64_t target, std::promise<void>* done)
      : actor(cfg), target_(target), done_(done) {}

protected:
  shoal::actors::behavior make_behavior() override {
    return {[this](const blob64& b) {
      bytes_ += b.data.size();
      if (++seen_ == target_) done_->set_value();
    }};
  }

private:
  std::uint64_t target_;
  std::uint64_t seen_ = 0;
  std::uint64_t bytes_ = 0;
  std::promise<void>* done_;
};

class source final : public shoal::actors::actor {
public:
  source(shoal::actors::actor_config& cfg, shoal::actors::actor_ref to)
      : actor(cfg), to_(std::move(to)) {}

protected:
  shoal::actors::behavior make_behavior() override {
    return {[this](const go& g) {
      const blob64 b{std::vector<std::uint8_t>(61, 0xab)};
      for (std::uint64_t i = 0; i < g.count; ++i)
        if (!tell(to_, b)) ++errors_;
    }};
  }

private:
  shoal::actors::actor_ref to_;
  std::uint64_t errors_ = 0;
};

run_result run_tells(std::size_t count) {
  using namespace shoal::actors;
  const double cpu0 = cpu_seconds();
  actor_system sys;
  std::promise<void> done;
  auto s = sys.spawn<sink>(
      {.name = "sink", .mailbox = {.capacity = 8192, .policy = overflow_policy::block}}, count, &done);
  if (!s) return {};
  auto src = sys.spawn<source>({.name = "source"}, *s);
  if (!src) return {};
  const auto start = clock_type::now();
  if (!sys.tell(*src, go{count})) return {};
  done.get_future().wait();
  const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  return {static_cast<double>(count) / secs,
          (cpu_seconds() - cpu0) / static_cast<double>(count) * 1e6};
}

} // namespace actors_bench

void run_actors_section(const options& o) {
  const std::size_t n = o.quick ? 200'000 : 2'000'000;
  bench_row row;
  row.section = "actors";
  row.name = "inproc tell 64 B body";
  row.reference_label = "raw zmq inproc 64 B";
  row.project_label = "actor tell";
  actors_bench::run_tells(n / 10); // warm-up
  for (int rep = 0; rep < o.reps; ++rep) {
    const run_result raw = run_raw("inproc", 64, n);
    const run_result tells = actors_bench::run_tells(n);
    row.reference.push_back(raw.msgs_per_s);
    row.reference_cpu.push_back(raw.cpu_us_per_msg);
    row.project.push_back(tells.msgs_per_s);
    row.project_cpu.push_back(tells.cpu_us_per_msg);
  }
  print_row(row);
}
// == end of actors section ======================================================================

} // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") o.quick = true;
    else if (a == "--reps" && i + 1 < argc) o.reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--only" && i + 1 < argc) o.only = argv[++i];
    else if (a == "--pin") o.pin = true;
    else if (a == "--verbose") o.verbose = true;
    else {
      std::fprintf(stderr, "usage: transport_bench [--quick] [--pin] [--verbose] [--reps N] [--only tcp:1024]\n");
      return 2;
    }
  }
  g_opts = &o;
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  std::printf("transport_bench: libzmq %d.%d.%d, %u hardware threads, %d reps%s; msg/s\n",
              major, minor, patch, std::thread::hardware_concurrency(), o.reps,
              o.pin ? ", sender pinned to CPU 0 and receiver to CPU 1" : ", unpinned");
  print_header();
  run_transport_section(o);
  if (!o.only.empty()) return 0;
  run_curve_section(o);
  run_actors_section(o);
  return 0;
}
