// A claimer process for the multi-process claim tests (tests/workers/claim/work_table_it.cpp):
//   shoal_claim_process <connection string> <table> <queue> <owner> <out file> [shards] [batch]
// Drains the queue with workers::drain and writes one completed record id per line to <out
// file>, then "# completed=N lease_lost=N contention=N" as the last line. Exit 0 on success.

#include "storage/table_client.hpp"
#include "workers/claimer.hpp"
#include "workers/work_table.hpp"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

using namespace shoal;

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s <connection string> <table> <queue> <owner> <out file> [shards] [batch]\n", argv[0]);
    return 2;
  }
  const std::string cs = argv[1], table = argv[2], queue = argv[3], out_path = argv[5];
  const std::string owner = std::string(argv[4]) + "@" + std::to_string(::getpid());
  workers::work_table_options o;
  o.work.shards = argc > 6 ? static_cast<std::uint32_t>(std::stoul(argv[6])) : 16;
  const std::size_t batch = argc > 7 ? std::stoul(argv[7]) : 25;
  auto svc = storage::table_service_client::from_connection_string(cs);
  if (!svc) { std::fprintf(stderr, "%s\n", svc.error().describe().c_str()); return 1; }
  auto tc = svc->table(table);
  if (!tc) { std::fprintf(stderr, "%s\n", tc.error().describe().c_str()); return 1; }
  auto wt = workers::work_table::make(*tc, std::nullopt, o);
  if (!wt) { std::fprintf(stderr, "%s\n", wt.error().describe().c_str()); return 1; }
  std::vector<std::uint32_t> shards(o.work.shards);
  std::iota(shards.begin(), shards.end(), 0u);
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
