// A claimer process for the multi-process claim tests (tests/workers/claim/work_table_it.cpp):
//   shoal_claim_process <connection string> <table> <queue> <owner> <out file> [shards] [batch]
//                       [drain|chaos] [lease_ms]
// drain (default): drains the queue with workers::drain and writes one completed record id per
// line to <out file>, then "# completed=N lease_lost=N contention=N" as the last line.
// chaos: claims batches and does a random change to each record — complete (most, several at
// once with complete_many), renew then complete, fail, release, or nothing at all (the lease
// expires) — until the queue has no open record, logging each change as it lands, one line per
// event, unbuffered (so a kill -9 loses at most the line of a change that had landed):
//   K <id> <gen>   claimed          C <id> <gen>   completed        F <id> <gen>   failed
//   R <id> <gen>   released         A <id> <gen>   abandoned (left to expire)
// Exit 0 on success.

#include "storage/table_client.hpp"
#include "workers/claim/claimer.hpp"
#include "workers/claim/work_table.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace shoal;

namespace {

// One line per event, written with one write(2): nothing buffered in this process.
class event_log {
public:
  explicit event_log(const std::string& path) : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) {}
  ~event_log() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  void line(char what, const workers::claimed_record& r) {
    const std::string s = std::string(1, what) + ' ' + r.id + ' ' + std::to_string(r.gen) + '\n';
    [[maybe_unused]] auto n = ::write(fd_, s.data(), s.size());
  }
  void text(const std::string& s) { [[maybe_unused]] auto n = ::write(fd_, s.data(), s.size()); }

private:
  int fd_ = -1;
};

int chaos(const workers::work_table& wt, const std::string& queue, const std::vector<std::uint32_t>& shards,
          const std::string& owner, std::size_t batch, event_log& log) {
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> unit(0, 1);
  int idle = 0;
  for (;;) {
    auto got = wt.claim(queue, shards, owner, batch);
    if (!got) {
      std::fprintf(stderr, "claim: %s\n", got.error().describe().c_str());
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (got->empty()) {
      auto open = wt.has_open(queue);
      if (open && !*open) return 0;
      if (++idle > 2000) return 3; // 40+ s of nothing claimable while records are open
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    idle = 0;
    for (auto& r : *got) log.line('K', r);
    std::vector<workers::claimed_record*> to_complete;
    for (auto& r : *got) {
      const double x = unit(rng);
      if (x < 0.6) {
        to_complete.push_back(&r);
      } else if (x < 0.7) {
        if (wt.renew(r)) to_complete.push_back(&r);
      } else if (x < 0.8) {
        if (wt.fail(r, "chaos")) log.line('F', r);
      } else if (x < 0.9) {
        if (wt.release(r, unit(rng) < 0.5)) log.line('R', r);
      } else {
        log.line('A', r);
      }
    }
    auto res = wt.complete_many(to_complete);
    for (std::size_t i = 0; i < res.size(); ++i)
      if (res[i]) log.line('C', *to_complete[i]);
  }
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s <connection string> <table> <queue> <owner> <out file> [shards] [batch] [drain|chaos] [lease_ms]\n",
                 argv[0]);
    return 2;
  }
  const std::string cs = argv[1], table = argv[2], queue = argv[3], out_path = argv[5];
  const std::string owner = std::string(argv[4]) + "@" + std::to_string(::getpid());
  workers::work_table_options o;
  o.work.shards = argc > 6 ? static_cast<std::uint32_t>(std::stoul(argv[6])) : 16;
  const std::size_t batch = argc > 7 ? std::stoul(argv[7]) : 25;
  const std::string mode = argc > 8 ? argv[8] : "drain";
  if (argc > 9) {
    o.work.lease_ms = static_cast<std::uint32_t>(std::stoul(argv[9]));
    o.work.lease_renew_ms = o.work.lease_ms / 3;
  }
  o.work.retry_base_ms = 20;
  o.work.retry_max_ms = 100;
  o.work.max_attempts = 4;
  auto svc = storage::table_service_client::from_connection_string(cs);
  if (!svc) { std::fprintf(stderr, "%s\n", svc.error().describe().c_str()); return 1; }
  auto tc = svc->table(table);
  if (!tc) { std::fprintf(stderr, "%s\n", tc.error().describe().c_str()); return 1; }
  auto wt = workers::work_table::make(*tc, std::nullopt, o);
  if (!wt) { std::fprintf(stderr, "%s\n", wt.error().describe().c_str()); return 1; }
  std::vector<std::uint32_t> shards(o.work.shards);
  std::iota(shards.begin(), shards.end(), 0u);
  if (mode == "chaos") {
    event_log log(out_path);
    if (!log.ok()) return 1;
    return chaos(*wt, queue, shards, owner, batch, log);
  }
  std::ofstream out(out_path);
  workers::drain_options d;
  d.batch = batch;
  auto st = workers::drain(*wt, queue, shards, owner, d, [&](const workers::claimed_record& r) { out << r.id << '\n'; });
  if (!st) { std::fprintf(stderr, "%s\n", st.error().describe().c_str()); return 1; }
  auto c = wt->counters().snapshot();
  out << "# completed=" << st->completed << " lease_lost=" << st->lease_lost << " contention=" << c.contention
      << " claim_requests=" << c.claim_requests << '\n';
  out.close();
  return out ? 0 : 1;
}
