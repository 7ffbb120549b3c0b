// persistor_bench: records/s and MB/s persisted through a real push persistor (ZeroMQ DEALER
// producer → ROUTER → batcher → 8 blob writers, create-only block blobs, no registration), for
// 200-byte and 2 KiB records, beside the raw rate of putting the same number of blobs of the same
// size with a minimal libcurl loop (one reused easy handle per thread, 8 threads, SharedKey-signed
// PUT, no validation, no MD5). Ack latency (send → persist.ack) p50/p99 per record.
//
//   bench/run.sh persistor [records_200B] [records_2KiB]     (Azurite started by run.sh)
//
// Output: one line per size, then the ratio persistor_bytes_per_s / raw_bytes_per_s.

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
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

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

struct persist_figures {
  double seconds = 0;
  std::size_t records = 0;
  std::uint64_t payload_bytes = 0;
  std::uint64_t blob_bytes = 0; // formatted bytes written
  double p50_ms = 0, p99_ms = 0;
  std::size_t blobs = 0;
};

persist_figures run_persistor(const st::storage_account& acct, const std::string& container,
                              std::size_t n, std::size_t record_bytes) {
  auto pipe = st::pipeline::make(acct);
  ps::engine_options eo;
  eo.container = container;
  eo.format = ps::record_format::ndjson;
  eo.host = "bench";
  eo.name = "p" + std::to_string(record_bytes);
  eo.writers = 8;
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
  std::unordered_map<std::uint64_t, clk::time_point> sent;
  std::vector<double> lat;
  lat.reserve(n);
  const std::size_t window = 20'000;
  std::size_t next = 0, acked = 0;
  shoal::transport::envelope in;
  const auto t0 = clk::now();
  while (acked < n) {
    while (next < n && sent.size() < window) {
      std::uint64_t k = next + 1;
      std::memset(env.id.data(), 0, 16);
      std::memcpy(env.id.data(), &k, 8);
      env.ts_ns = 1;
      if (!sock->send(env, std::chrono::milliseconds(10)))
        break;
      sent.emplace(k, clk::now());
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
        auto it = sent.find(k);
        if (it == sent.end())
          continue;
        lat.push_back(std::chrono::duration<double, std::milli>(now - it->second).count());
        sent.erase(it);
        ++acked;
      }
    }
  }
  const double secs = std::chrono::duration<double>(clk::now() - t0).count();
  stop.store(true);
  server.join();
  std::sort(lat.begin(), lat.end());
  ps::record r;
  r.message_id = std::string(32, '0');
  r.producer = env.from;
  r.dest = "bench";
  r.payload = payload;
  std::string one;
  ps::append_record(one, ps::record_format::ndjson, r);
  persist_figures f;
  f.seconds = secs;
  f.records = n;
  f.payload_bytes = static_cast<std::uint64_t>(payload.size()) * n;
  f.blob_bytes = static_cast<std::uint64_t>(one.size()) * n;
  f.p50_ms = lat.empty() ? 0 : lat[lat.size() / 2];
  f.p99_ms = lat.empty() ? 0 : lat[std::min(lat.size() - 1, lat.size() * 99 / 100)];
  return f;
}

std::size_t ignore_body(char*, std::size_t size, std::size_t n, void*) { return size * n; }

// Minimal PUT Blob loop: `blobs` blobs of `bytes` each, over `threads` reused easy handles.
double raw_put_seconds(const st::storage_account& acct, const std::string& container,
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
  const auto t0 = clk::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back(worker);
  for (auto& t : ts)
    t.join();
  const double secs = std::chrono::duration<double>(clk::now() - t0).count();
  if (failures.load())
    std::fprintf(stderr, "raw: %zu puts failed\n", failures.load());
  return secs;
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
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const std::size_t n200 = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 100'000;
  const std::size_t n2k = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 20'000;
  auto pipe = st::pipeline::make(*acct);
  st::blob_client bc(*pipe);
  const std::string container = "persistorbench" + std::to_string(::getpid());
  (void)bc.create_container_if_not_exists(container);
  std::printf("%-8s %9s %10s %9s %10s %9s %9s %12s %10s %7s\n", "record", "records", "rec/s",
              "MB/s", "blob_KiB", "p50_ms", "p99_ms", "raw_MB/s", "raw_blob/s", "ratio");
  for (auto [size, n] : {std::pair<std::size_t, std::size_t>{200, n200}, {2048, n2k}}) {
    auto f = run_persistor(*acct, container, n, size);
    // Same bytes as blobs of the same size: batches of 1000 records (batch_max_records).
    const std::size_t per_blob = std::min<std::size_t>(1000, n);
    const std::size_t blob_size = f.blob_bytes / n * per_blob;
    const std::size_t blobs = (n + per_blob - 1) / per_blob;
    const double raw = raw_put_seconds(*acct, container, blobs, blob_size, 8);
    const double mbps = static_cast<double>(f.blob_bytes) / 1e6 / f.seconds;
    const double raw_mbps = static_cast<double>(blob_size) * static_cast<double>(blobs) / 1e6 / raw;
    std::printf("%-8zu %9zu %10.0f %9.1f %10.1f %9.1f %9.1f %12.1f %10.1f %7.2f\n", size, n,
                static_cast<double>(n) / f.seconds, mbps, static_cast<double>(blob_size) / 1024.0,
                f.p50_ms, f.p99_ms, raw_mbps, static_cast<double>(blobs) / raw, mbps / raw_mbps);
    std::fflush(stdout);
  }
  (void)bc.delete_container_if_exists(container);
  curl_global_cleanup();
  return 0;
}
