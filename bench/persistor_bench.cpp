// persistor_bench: records/s and MB/s persisted through a real push persistor (ZeroMQ DEALER
// producer → ROUTER → batcher → 8 blob writers, create-only block blobs with Content-MD5, no
// registration), for 200-byte and 2 KiB records, beside the raw rate of putting the same number
// of blobs of the same sizes with a minimal libcurl loop (one reused easy handle per thread,
// 8 threads, SharedKey-signed PUT, no validation, no MD5). Ack latency (send → persist.ack)
// p50/p99 per record.
//
//   bench/run.sh persistor [records_200B] [records_2KiB]     (Azurite started by run.sh)
//   defaults: 1,000,000 and 500,000 (≈ 0.4 and 1.1 GB of blobs per row, so the fill and drain
//   of the 20,000-record window are ~2-4 % of a run)
//   PERSISTOR_BENCH_ONLY=persistor|raw runs one side only (for perf record).
//
// Settings are the product's defaults (deploy/shoal.toml.example): format persistor-v1, 8
// writers, batches of 1000 records / 4 MiB / 1000 ms, Content-MD5 on every put. A third row runs
// the 2 KiB records in ndjson (the other format; earlier figures used it).
//
// Output: one line per row: rec/s, MB/s (formatted blob bytes ÷ first send to last ack),
// steady MB/s (between 10 % and 90 % of the acks), blobs and their mean size, ack p50/p99, CPU
// seconds of this process (getrusage: persistor + producer) and of the producer thread alone,
// CPU seconds of Azurite (/proc/<pid>/stat), the raw loop's MB/s and CPU seconds (its own and
// Azurite's), ratio = persistor MB/s ÷ raw MB/s, and md5_s = CPU seconds one core spends on the
// MD5 of the row's blob bytes (measured here), the part of cpu_s that Content-MD5 costs; load1 =
// the 1-minute load average when the row ended.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/encoding.hpp"
#include "storage/shared_key.hpp"
#include "transport/socket.hpp"
#include "workers/persistor/format.hpp"
#include "workers/persistor/sources.hpp"

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <arpa/inet.h>
#include <fstream>
#include <sys/resource.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <optional>
#include <sstream>

namespace {

namespace st = shoal::storage;
namespace ps = shoal::workers::persistor;
using clk = std::chrono::steady_clock;

int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  ::close(s);
  return port;
}

// CPU seconds (user + system) of this process, or of the calling thread.
double cpu_seconds(int who) {
  rusage u{};
  ::getrusage(who, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CPU seconds (user + system, all threads) of Azurite, whose pid bench/run.sh's launcher wrote
// to $SHOAL_TEST_AZURITE/pid; 0 when unknown.
double azurite_cpu_seconds() {
  const char* state = std::getenv("SHOAL_TEST_AZURITE");
  if (!state)
    return 0;
  long pid = 0;
  if (!(std::ifstream(std::string(state) + "/pid") >> pid) || pid <= 0)
    return 0;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line))
    return 0;
  // Fields after ") ": state is field 3; utime and stime are fields 14 and 15.
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i)
    if (i >= 14)
      ticks += std::strtod(field.c_str(), nullptr);
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

struct persist_figures {
  double seconds = 0;
  std::size_t records = 0;
  std::uint64_t blob_bytes = 0; // formatted bytes written (listed)
  std::size_t blobs = 0;        // blobs written (listed)
  double steady_mbps = 0;       // blob MB/s between 10 % and 90 % of the acks
  double p50_ms = 0, p99_ms = 0;
  double cpu_s = 0;             // this process during the run
  double producer_cpu_s = 0;    // the producer (calling) thread
  double azurite_cpu_s = 0;
};

persist_figures run_persistor(const st::storage_account& acct, const std::string& container,
                              std::size_t n, std::size_t record_bytes, ps::record_format format) {
  auto pipe = st::pipeline::make(acct);
  ps::engine_options eo; // product defaults: 8 writers, 1000 records / 4 MiB / 1000 ms batches
  eo.container = container;
  eo.format = format;
  eo.host = "bench";
  eo.name = "p" + std::to_string(record_bytes);
  ps::push_options po;
  po.endpoint = "tcp://127.0.0.1:" + std::to_string(free_port());
  std::atomic<bool> stop{false}, ready{false};
  ps::source_stats stats;
  std::thread server([&] {
    auto r = ps::run_push(eo, st::blob_client(*pipe), std::nullopt, std::nullopt, po, stop, stats,
                          std::chrono::milliseconds(60'000),
                          [&](const std::string&) { ready.store(true); });
    if (!r)
      std::fprintf(stderr, "persistor: %s\n", r.error().describe().c_str());
  });
  while (!ready.load())
    std::this_thread::sleep_for(std::chrono::milliseconds(5));

  zmq::context_t ctx(1);
  shoal::transport::socket_options so;
  so.send_hwm = 20'000;
  so.receive_hwm = 100'000;
  so.linger = std::chrono::milliseconds(0);
  auto sock = shoal::transport::envelope_socket::make(ctx, zmq::socket_type::dealer, so);
  (void)sock->connect(po.endpoint);
  // Payload: a JSON object of exactly record_bytes (`{"k":"xx…"}`: 8 bytes + the x's). It used
  // to be padded with two NULs, which made it "not JSON" and took the quoting path.
  const std::string payload = R"({"k":")" + std::string(record_bytes > 9 ? record_bytes - 8 : 1, 'x') + "\"}";
  shoal::transport::envelope env;
  env.kind = std::string(ps::kind_record);
  env.from = "bench@1@h";
  env.hdr["dest"] = "bench";
  env.body.assign(payload.begin(), payload.end());
  // Send time of record k (ids are 1..n) at sent[k - 1]; epoch = not in flight (acked or not
  // sent). A flat array: the load generator spends no hashing per record.
  std::vector<clk::time_point> sent(n);
  std::size_t inflight = 0;
  std::vector<double> lat;
  lat.reserve(n);
  const std::size_t window = 20'000;
  std::size_t next = 0, acked = 0;
  shoal::transport::envelope in;
  std::optional<clk::time_point> t10, t90; // when 10 % and 90 % of the records were acked
  const double cpu0 = cpu_seconds(RUSAGE_SELF), thread0 = cpu_seconds(RUSAGE_THREAD);
  const double az0 = azurite_cpu_seconds();
  const auto t0 = clk::now();
  while (acked < n) {
    while (next < n && inflight < window) {
      std::uint64_t k = next + 1;
      std::memset(env.id.data(), 0, 16);
      std::memcpy(env.id.data(), &k, 8);
      env.ts_ns = 1;
      if (!sock->send(env, std::chrono::milliseconds(10)))
        break;
      sent[next] = clk::now();
      ++inflight;
      ++next;
    }
    for (int burst = 0; burst < 1000; ++burst) {
      if (!sock->receive(in, std::chrono::milliseconds(burst == 0 ? 2 : 0)))
        break;
      if (in.kind != ps::kind_ack)
        continue;
      const auto now = clk::now();
      for (std::size_t off = 0; off + 16 <= in.body.size(); off += 16) {
        std::uint64_t k = 0;
        std::memcpy(&k, in.body.data() + off, 8);
        if (k == 0 || k > n || sent[k - 1] == clk::time_point{})
          continue; // unknown or acked twice
        lat.push_back(std::chrono::duration<double, std::milli>(now - sent[k - 1]).count());
        sent[k - 1] = clk::time_point{};
        --inflight;
        ++acked;
        if (!t10 && acked * 10 >= n)
          t10 = now;
        if (!t90 && acked * 10 >= n * 9)
          t90 = now;
      }
    }
  }
  const double secs = std::chrono::duration<double>(clk::now() - t0).count();
  persist_figures f;
  f.cpu_s = cpu_seconds(RUSAGE_SELF) - cpu0;
  f.producer_cpu_s = cpu_seconds(RUSAGE_THREAD) - thread0;
  f.azurite_cpu_s = azurite_cpu_seconds() - az0;
  stop.store(true);
  server.join();
  std::sort(lat.begin(), lat.end());
  // What was written, as listed (the blobs under dest "bench", not the sequence counter).
  st::blob_client bc(*pipe);
  st::list_blobs_options lo;
  lo.prefix = "bench/";
  auto pager = bc.list_blobs_pager(container, lo);
  while (!pager.done()) {
    auto page = pager.next();
    if (!page) {
      std::fprintf(stderr, "persistor_bench: listing: %s\n", page.error().describe().c_str());
      break;
    }
    if (!*page)
      break;
    for (const auto& b : (*page)->blobs) {
      f.blob_bytes += b.properties.content_length;
      ++f.blobs;
    }
  }
  f.seconds = secs;
  f.records = n;
  if (t10 && t90 && *t90 > *t10)
    f.steady_mbps = static_cast<double>(f.blob_bytes) * 0.8 / 1e6 /
                    std::chrono::duration<double>(*t90 - *t10).count();
  f.p50_ms = lat.empty() ? 0 : lat[lat.size() / 2];
  f.p99_ms = lat.empty() ? 0 : lat[std::min(lat.size() - 1, lat.size() * 99 / 100)];
  return f;
}

std::size_t ignore_body(char*, std::size_t size, std::size_t n, void*) { return size * n; }

struct raw_figures {
  double seconds = 0;
  double cpu_s = 0;         // this process during the loop
  double azurite_cpu_s = 0;
};

// Minimal PUT Blob loop: `blobs` blobs of `bytes` each, over `threads` reused easy handles.
raw_figures raw_put(const st::storage_account& acct, const std::string& container,
                       std::size_t blobs, std::size_t bytes, int threads) {
  const std::string body(bytes, 'r');
  std::atomic<std::size_t> next{0}, failures{0};
  const auto url_base = acct.blob_endpoint + "/" + container + "/raw-" + std::to_string(bytes) + "-";
  const std::string path_base = url_base.substr(url_base.find('/', url_base.find("//") + 2));
  auto worker = [&] {
    CURL* h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &ignore_body);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT");
    while (true) {
      const std::size_t i = next.fetch_add(1);
      if (i >= blobs)
        break;
      const std::string name = std::to_string(i);
      std::vector<std::pair<std::string, std::string>> hdrs{
          {"Content-Type", "application/x-ndjson"},
          {"x-ms-blob-type", "BlockBlob"},
          {"x-ms-date", st::format_http_date(std::chrono::system_clock::now())},
          {"x-ms-version", "2023-11-03"}};
      st::shared_key::signing_input si;
      si.method = st::http_method::put;
      si.account = acct.name;
      const std::string path = path_base + name;
      si.path = path;
      si.headers = hdrs;
      si.content_length = body.size();
      const std::string sig = st::shared_key::signature(acct.key, st::shared_key::blob_queue_string_to_sign(si));
      curl_slist* list = nullptr;
      for (auto& [k, v] : hdrs)
        list = curl_slist_append(list, (k + ": " + v).c_str());
      list = curl_slist_append(list, ("Authorization: " + st::shared_key::authorization(acct.name, sig)).c_str());
      list = curl_slist_append(list, "Expect:");
      const std::string url = url_base + name;
      curl_easy_setopt(h, CURLOPT_URL, url.c_str());
      curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
      long status = 0;
      if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
      if (status != 201)
        failures.fetch_add(1);
      curl_slist_free_all(list);
    }
    curl_easy_cleanup(h);
  };
  const double cpu0 = cpu_seconds(RUSAGE_SELF), az0 = azurite_cpu_seconds();
  const auto t0 = clk::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back(worker);
  for (auto& t : ts)
    t.join();
  raw_figures f;
  f.seconds = std::chrono::duration<double>(clk::now() - t0).count();
  f.cpu_s = cpu_seconds(RUSAGE_SELF) - cpu0;
  f.azurite_cpu_s = azurite_cpu_seconds() - az0;
  if (failures.load())
    std::fprintf(stderr, "raw: %zu puts failed\n", failures.load());
  return f;
}

// CPU seconds one core spends on the MD5 of `total` bytes, measured on blobs of `blob_bytes`.
double md5_seconds(std::uint64_t total, std::size_t blob_bytes) {
  const std::string blob(std::max<std::size_t>(blob_bytes, 1), 'm');
  const int reps = static_cast<int>(std::max<std::size_t>(2, (64u << 20) / blob.size()));
  std::size_t sink = 0;
  const double t0 = cpu_seconds(RUSAGE_THREAD);
  for (int i = 0; i < reps; ++i)
    sink += static_cast<unsigned char>(st::md5(blob)[static_cast<std::size_t>(i) % 16]);
  const double per_byte = (cpu_seconds(RUSAGE_THREAD) - t0) / (static_cast<double>(reps) * static_cast<double>(blob.size()));
  return sink == 0 ? 0 : per_byte * static_cast<double>(total); // sink keeps the loop
}

} // namespace

int main(int argc, char** argv) {
  spdlog::set_level(spdlog::level::warn);
  const char* cs = std::getenv("AZURE_STORAGE_CONNECTION_STRING");
  if (!cs) {
    std::fprintf(stderr, "persistor_bench: set AZURE_STORAGE_CONNECTION_STRING (bench/run.sh does)\n");
    return 2;
  }
  auto acct = st::parse_connection_string(cs);
  if (!acct) {
    std::fprintf(stderr, "persistor_bench: %s\n", acct.error().describe().c_str());
    return 2;
  }
  const std::string only = std::getenv("PERSISTOR_BENCH_ONLY") ? std::getenv("PERSISTOR_BENCH_ONLY") : "";
  if (!only.empty() && only != "persistor" && only != "raw") {
    std::fprintf(stderr, "persistor_bench: PERSISTOR_BENCH_ONLY is persistor or raw\n");
    return 2;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const std::size_t n200 = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  const std::size_t n2k = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 500'000;
  auto pipe = st::pipeline::make(*acct);
  st::blob_client bc(*pipe);
  {
    double load[3] = {0, 0, 0};
    if (::getloadavg(load, 3) == 3)
      std::printf("load average at start: %.2f %.2f %.2f; %ld CPUs online\n", load[0], load[1],
                  load[2], ::sysconf(_SC_NPROCESSORS_ONLN));
  }
  std::printf("%-6s %-12s %8s %8s %6s %6s %5s %7s %6s %6s %6s %6s %6s %7s %6s %6s %5s %5s %5s\n",
              "record", "format", "records", "rec/s", "MB/s", "steady", "blobs", "blobKiB", "p50ms",
              "p99ms", "cpu_s", "prod_s", "az_s", "raw_MBs", "rcpu_s", "raz_s", "ratio", "md5_s",
              "load1");
  struct row {
    std::size_t size;
    std::size_t n;
    ps::record_format format;
  };
  int index = 0;
  for (const row& w : {row{200, n200, ps::record_format::persistor_v1},
                       row{2048, n2k, ps::record_format::persistor_v1},
                       row{2048, n2k, ps::record_format::ndjson}}) {
    if (w.n == 0)
      continue;
    // A container per row, deleted after it: at most one row's blobs (~2 GB) on disk at a time.
    const std::string container = "persistorbench" + std::to_string(::getpid()) + "r" + std::to_string(index++);
    (void)bc.create_container_if_not_exists(container);
    persist_figures f;
    if (only != "raw") {
      f = run_persistor(*acct, container, w.n, w.size, w.format);
    } else { // the raw side alone: the blobs the persistor would write (1000 records each)
      ps::record r;
      r.message_id = std::string(32, '0');
      r.producer = "bench@1@h";
      r.dest = "bench";
      r.payload = R"({"k":")" + std::string(w.size > 9 ? w.size - 8 : 1, 'x') + "\"}";
      std::string one;
      ps::append_record(one, w.format, r);
      f.records = w.n;
      f.blobs = (w.n + 999) / 1000;
      f.blob_bytes = static_cast<std::uint64_t>(one.size()) * w.n;
    }
    // The same number of blobs, of the persistor's mean blob size.
    const std::size_t blobs = std::max<std::size_t>(f.blobs, 1);
    const std::size_t blob_size = static_cast<std::size_t>(f.blob_bytes / blobs);
    raw_figures raw;
    if (only != "persistor")
      raw = raw_put(*acct, container, blobs, blob_size, 8);
    const double mbps = f.seconds > 0 ? static_cast<double>(f.blob_bytes) / 1e6 / f.seconds : 0;
    const double raw_mbps =
        raw.seconds > 0 ? static_cast<double>(blob_size) * static_cast<double>(blobs) / 1e6 / raw.seconds : 0;
    double load[1] = {0};
    (void)::getloadavg(load, 1);
    std::printf("%-6zu %-12s %8zu %8.0f %6.1f %6.1f %5zu %7.1f %6.0f %6.0f %6.2f %6.2f %6.2f %7.1f "
                "%6.2f %6.2f %5.2f %5.2f %5.1f\n",
                w.size, std::string(ps::to_string(w.format)).c_str(), w.n,
                f.seconds > 0 ? static_cast<double>(w.n) / f.seconds : 0, mbps, f.steady_mbps,
                f.blobs, static_cast<double>(blob_size) / 1024.0, f.p50_ms, f.p99_ms, f.cpu_s,
                f.producer_cpu_s, f.azurite_cpu_s, raw_mbps, raw.cpu_s, raw.azurite_cpu_s,
                raw_mbps > 0 ? mbps / raw_mbps : 0, md5_seconds(f.blob_bytes, blob_size), load[0]);
    std::fflush(stdout);
    (void)bc.delete_container_if_exists(container);
  }
  curl_global_cleanup();
  return 0;
}
