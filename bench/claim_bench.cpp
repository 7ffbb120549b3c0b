// claim_bench: records claimed + completed per second through the work table, with 1, 2 and 4
// claimer processes, beside two baselines measured in the same run against the same Azurite:
//
//   (a) naive — what the azure-table-tracker seed does, per record: query one pending record
//       ($top=1), one conditional MERGE to claim it, one conditional MERGE to complete it; a 412
//       on the claim means another process won, so it queries again.
//   (b) ceiling — Azurite's rate of batched conditional merges (entity group transactions of
//       100 If-Match MERGEs on the same entities, 1 and 4 threads, the better one) ÷ 2, since a
//       record needs at least two writes (claim, complete).
//
// shoal: workers::drain in each process (claim up to 100 per call, one transaction per
// partition; complete the same records with one transaction per partition). "disjoint" gives
// each process its own shards (as a supervisor assigns them); "shared" gives every process all
// 16 shards (random start), the worst case for contention. Every run checks that each record
// was completed exactly once (ids written by the processes) and reports the 412 rate: claims
// lost to contention ÷ claim attempts (records).
//
//   bench/run.sh claim [--records N]          (needs AZURE_STORAGE_CONNECTION_STRING)

#include "storage/table_client.hpp"
#include "workers/child_process.hpp"
#include "workers/claim/claimer.hpp"
#include "workers/claim/key_escape.hpp"
#include "workers/claim/work_table.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

using namespace shoal;
using namespace std::chrono;

namespace {

std::string connection_string() {
  const char* cs = std::getenv("AZURE_STORAGE_CONNECTION_STRING");
  return cs ? cs : "";
}

storage::table_client open_table(const std::string& name) {
  storage::pipeline_options po;
  po.http.max_idle_connections = 32;
  auto svc = storage::table_service_client::from_connection_string(connection_string(), po);
  if (!svc) { std::fprintf(stderr, "claim_bench: %s\n", svc.error().describe().c_str()); std::exit(1); }
  auto t = svc->table(name);
  if (!t) { std::fprintf(stderr, "claim_bench: %s\n", t.error().describe().c_str()); std::exit(1); }
  return *t;
}

workers::work_table open_work(const std::string& name) {
  auto w = workers::work_table::make(open_table(name), std::nullopt, {});
  if (!w) { std::fprintf(stderr, "claim_bench: %s\n", w.error().describe().c_str()); std::exit(1); }
  return *w;
}

// -- children ---------------------------------------------------------------------------------------

// claim_bench --child shoal <table> <owner> <out> <shard list "0,4,8">
int child_shoal(const std::string& table, const std::string& owner, const std::string& out_path, const std::string& shard_list) {
  auto w = open_work(table);
  std::vector<std::uint32_t> shards;
  std::size_t pos = 0;
  while (pos < shard_list.size()) {
    auto comma = shard_list.find(',', pos);
    shards.push_back(static_cast<std::uint32_t>(std::stoul(shard_list.substr(pos, comma - pos))));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  std::ofstream out(out_path);
  workers::drain_options d;
  d.batch = 100;
  d.idle_poll = milliseconds(20);
  auto st = workers::drain(w, "bench", shards, owner + "@" + std::to_string(::getpid()), d,
                           [&](const workers::claimed_record& r) { out << r.id << '\n'; });
  if (!st) { std::fprintf(stderr, "child: %s\n", st.error().describe().c_str()); return 1; }
  auto c = w.counters().snapshot();
  out << "# " << c.contention << ' ' << c.claims << ' ' << c.claim_requests << '\n';
  return 0;
}

// claim_bench --child naive <table> <owner> <out>
int child_naive(const std::string& table, const std::string& owner, const std::string& out_path) {
  auto t = open_table(table);
  std::ofstream out(out_path);
  std::uint64_t contention = 0, claims = 0, requests = 0;
  for (;;) {
    storage::table_query q;
    q.filter = storage::table_filter::eq("status", std::string("pending"));
    q.page_size = 1;
    q.max_entities = 1;
    auto page = t.query_page(q);
    ++requests;
    if (!page) { std::fprintf(stderr, "naive: %s\n", page.error().describe().c_str()); return 1; }
    if (page->entities.empty()) {
      if (page->continuation) continue;
      break;
    }
    auto& e = page->entities.front();
    storage::table_entity claim;
    claim.partition_key = e.partition_key;
    claim.row_key = e.row_key;
    claim.set("status", std::string("claimed"));
    claim.set("owner", owner);
    const auto* gen = e.get<std::int64_t>("gen");
    claim.set("gen", static_cast<std::int64_t>((gen ? *gen : 0) + 1));
    claim.set("lease_until", storage::to_table_time(page->server_time + seconds(30)));
    auto c = t.merge(claim, e.etag);
    ++requests;
    if (!c) {
      if (c.error().code == storage::errc::precondition_failed) { ++contention; continue; }
      std::fprintf(stderr, "naive: %s\n", c.error().describe().c_str());
      return 1;
    }
    ++claims;
    storage::table_entity done;
    done.partition_key = e.partition_key;
    done.row_key = e.row_key;
    done.set("status", std::string("done"));
    auto d = t.merge(done, c->etag);
    ++requests;
    if (!d) { std::fprintf(stderr, "naive: %s\n", d.error().describe().c_str()); return 1; }
    out << e.row_key << '\n';
  }
  out << "# " << contention << ' ' << claims << ' ' << requests << '\n';
  return 0;
}

// -- parent ---------------------------------------------------------------------------------------

struct run_result {
  double seconds = 0;
  std::size_t completed = 0;
  std::size_t duplicates = 0;
  std::uint64_t contention = 0;
  std::uint64_t claims = 0;
  std::uint64_t requests = 0;
  double rate() const { return seconds > 0 ? static_cast<double>(completed) / seconds : 0; }
  double rate_412() const {
    auto attempts = claims + contention;
    return attempts ? static_cast<double>(contention) / static_cast<double>(attempts) : 0;
  }
};

std::string table_name(const char* what) {
  static int n = 0;
  return std::string("bench") + what + std::to_string(::getpid()) + "n" + std::to_string(n++);
}

void enqueue(const std::string& table, std::size_t records) {
  auto w = open_work(table);
  if (auto ok = w.create_if_missing(); !ok) { std::fprintf(stderr, "%s\n", ok.error().describe().c_str()); std::exit(1); }
  std::vector<workers::new_record> recs;
  for (std::size_t i = 0; i < records; ++i)
    recs.push_back({"rec-" + std::to_string(i), "{\"n\":" + std::to_string(i) + ",\"pad\":\"0123456789abcdef\"}", {}});
  auto r = w.enqueue("bench", recs);
  if (!r || r->inserted != records) { std::fprintf(stderr, "enqueue failed\n"); std::exit(1); }
}

// The seed's layout for the naive method and the ceiling: one row per record, its state in
// properties (what work_table wrote before layout 2), 100 inserts per transaction.
void enqueue_plain(const std::string& table, std::size_t records) {
  auto t = open_table(table);
  if (auto ok = t.create_table_if_not_exists(); !ok) { std::fprintf(stderr, "%s\n", ok.error().describe().c_str()); std::exit(1); }
  std::map<std::string, std::vector<storage::table_entity>> parts;
  for (std::size_t i = 0; i < records; ++i) {
    const std::string id = "rec-" + std::to_string(i);
    storage::table_entity e;
    e.partition_key = workers::partition_key("bench", workers::shard_of(id, 16));
    e.row_key = id;
    e.set("status", std::string("pending"));
    e.set("owner", std::string());
    e.set("gen", std::int64_t{0});
    e.set("attempts", std::int32_t{0});
    e.set("payload", "{\"n\":" + std::to_string(i) + ",\"pad\":\"0123456789abcdef\"}");
    parts[e.partition_key].push_back(std::move(e));
  }
  for (auto& [pk, es] : parts)
    for (std::size_t s = 0; s < es.size(); s += 100) {
      storage::table_transaction tx;
      for (std::size_t j = s; j < std::min(es.size(), s + 100); ++j) tx.insert(es[j]);
      if (auto r = t.submit_transaction(tx); !r) { std::fprintf(stderr, "seed: %s\n", r.error().describe().c_str()); std::exit(1); }
    }
}

run_result run_children(const std::vector<std::vector<std::string>>& child_args, std::size_t records) {
  auto dir = std::filesystem::temp_directory_path() / ("claim_bench_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::vector<pid_t> pids;
  std::vector<std::string> outs;
  auto start = steady_clock::now();
  for (std::size_t i = 0; i < child_args.size(); ++i) {
    outs.push_back((dir / ("out" + std::to_string(i))).string());
    std::vector<std::string> args = {"/proc/self/exe", "--child"};
    args.insert(args.end(), child_args[i].begin(), child_args[i].end());
    args.insert(args.begin() + 5, outs.back()); // after: exe --child kind table owner
    workers::child_options co;
    co.argv = std::move(args);
    auto child = workers::child_process::spawn(co);
    if (!child) { std::fprintf(stderr, "claim_bench: %s\n", child.error().message.c_str()); std::exit(1); }
    pids.push_back(child->release()); // reaped below, all of them after all started
  }
  for (auto pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { std::fprintf(stderr, "claim_bench: a child failed\n"); std::exit(1); }
  }
  run_result r;
  r.seconds = duration<double>(steady_clock::now() - start).count();
  std::map<std::string, int> seen;
  for (const auto& o : outs) {
    std::ifstream in(o);
    std::string line;
    while (std::getline(in, line)) {
      if (line.starts_with("# ")) {
        std::uint64_t a = 0, b = 0, c = 0;
        std::sscanf(line.c_str() + 2, "%lu %lu %lu", &a, &b, &c);
        r.contention += a;
        r.claims += b;
        r.requests += c;
      } else {
        ++seen[line];
      }
    }
  }
  std::filesystem::remove_all(dir);
  r.completed = seen.size();
  for (auto& [id, n] : seen) r.duplicates += static_cast<std::size_t>(n - 1);
  if (r.completed != records) std::fprintf(stderr, "claim_bench: only %zu of %zu records completed\n", r.completed, records);
  return r;
}

run_result run_shoal(std::size_t records, int procs, bool disjoint) {
  auto table = table_name("s");
  enqueue(table, records);
  std::vector<std::vector<std::string>> args;
  for (int p = 0; p < procs; ++p) {
    std::string shards;
    for (int s = 0; s < 16; ++s)
      if (!disjoint || s % procs == p) shards += (shards.empty() ? "" : ",") + std::to_string(s);
    args.push_back({"shoal", table, "p" + std::to_string(p), shards});
  }
  auto r = run_children(args, records);
  (void)open_table(table).delete_table();
  return r;
}

run_result run_naive(std::size_t records, int procs) {
  auto table = table_name("n");
  enqueue_plain(table, records);
  std::vector<std::vector<std::string>> args;
  for (int p = 0; p < procs; ++p) args.push_back({"naive", table, "p" + std::to_string(p)});
  auto r = run_children(args, records);
  (void)open_table(table).delete_table();
  return r;
}

// Batched conditional merges/s on `records` entities with `threads` threads (each its own
// partitions), `rounds` passes over every entity.
double ceiling_merges_per_s(std::size_t records, int threads, int rounds) {
  auto table = table_name("c");
  enqueue_plain(table, records);
  auto t = open_table(table);
  storage::table_query q;
  q.select = {"PartitionKey", "RowKey", "status"};
  auto all = t.query_all(q);
  if (!all) { std::fprintf(stderr, "%s\n", all.error().describe().c_str()); std::exit(1); }
  std::map<std::string, std::vector<storage::table_entity>> parts;
  for (auto& e : *all) parts[e.partition_key].push_back(e);
  std::vector<std::vector<std::vector<storage::table_entity>*>> per_thread(static_cast<std::size_t>(threads));
  int i = 0;
  for (auto& [pk, es] : parts) per_thread[static_cast<std::size_t>(i++ % threads)].push_back(&es);
  std::atomic<std::uint64_t> merges{0};
  auto start = steady_clock::now();
  std::vector<std::thread> ts;
  for (int k = 0; k < threads; ++k) {
    ts.emplace_back([&, k] {
      for (int round = 0; round < rounds; ++round) {
        for (auto* es : per_thread[static_cast<std::size_t>(k)]) {
          for (std::size_t s = 0; s < es->size(); s += 100) {
            storage::table_transaction tx;
            std::size_t end = std::min(es->size(), s + 100);
            for (std::size_t j = s; j < end; ++j) {
              storage::table_entity p;
              p.partition_key = (*es)[j].partition_key;
              p.row_key = (*es)[j].row_key;
              p.set("status", std::string(round % 2 ? "done" : "claimed"));
              p.set("owner", std::string("ceiling"));
              tx.merge(p, (*es)[j].etag);
            }
            auto r = t.submit_transaction(tx);
            if (!r) { std::fprintf(stderr, "ceiling: %s\n", r.error().describe().c_str()); std::exit(1); }
            for (std::size_t j = s; j < end; ++j) (*es)[j].etag = r->etags[j - s];
            merges += end - s;
          }
        }
      }
    });
  }
  for (auto& th : ts) th.join();
  double secs = duration<double>(steady_clock::now() - start).count();
  (void)t.delete_table();
  return static_cast<double>(merges.load()) / secs;
}

} // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--child") {
    std::string kind = argv[2];
    if (kind == "shoal" && argc >= 7) return child_shoal(argv[3], argv[4], argv[5], argv[6]);
    if (kind == "naive" && argc >= 6) return child_naive(argv[3], argv[4], argv[5]);
    std::fprintf(stderr, "claim_bench: bad child arguments\n");
    return 2;
  }
  std::size_t records = 2000;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--records" && i + 1 < argc) records = std::stoul(argv[++i]);
  if (connection_string().empty()) {
    std::fprintf(stderr, "claim_bench: set AZURE_STORAGE_CONNECTION_STRING (bench/run.sh claim does)\n");
    return 2;
  }
  std::printf("claim_bench: %zu records per run, 16 shards, claim_batch 100, one Azurite\n\n", records);
  std::fflush(stdout);

  double c1 = ceiling_merges_per_s(records, 1, 4);
  double c4 = ceiling_merges_per_s(records, 4, 4);
  double ceiling = std::max(c1, c4) / 2;
  std::printf("ceiling: batched conditional merges/s 1 thread %.0f, 4 threads %.0f -> ceiling %.0f records/s\n", c1, c4, ceiling);
  std::fflush(stdout);

  auto naive1 = run_naive(records, 1);
  auto naive4 = run_naive(records, 4);
  std::printf("naive: 1 process %.0f records/s, 4 processes %.0f records/s (412 rate %.1f %%)\n", naive1.rate(), naive4.rate(),
              100 * naive4.rate_412());
  std::fflush(stdout);
  const double naive = std::max(naive1.rate(), naive4.rate());

  std::printf("\n| method | processes | records/s | vs naive | vs ceiling | 412 rate | duplicates |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  auto row = [&](const char* method, int procs, const run_result& r) {
    std::printf("| %s | %d | %.0f | %.2fx | %.2f | %.1f %% | %zu |\n", method, procs, r.rate(), r.rate() / naive,
                r.rate() / ceiling, 100 * r.rate_412(), r.duplicates);
    std::fflush(stdout);
  };
  row("naive (query 1, merge, merge)", 1, naive1);
  row("naive (query 1, merge, merge)", 4, naive4);
  for (int procs : {1, 2, 4}) row("shoal, disjoint shards", procs, run_shoal(records, procs, true));
  for (int procs : {2, 4}) row("shoal, all shards shared", procs, run_shoal(records, procs, false));
  std::printf("| ceiling (batched merges/s / 2) | - | %.0f | %.2fx | 1.00 | - | - |\n", ceiling, ceiling / naive);
  return 0;
}
