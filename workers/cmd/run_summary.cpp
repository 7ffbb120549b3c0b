// What `shoal run` prints at the end: the summary, the stage times, the run's cost.
#include "workers/cmd/run_summary.hpp"

#include "storage/pipeline.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string_view>

namespace shoal::cmd::run_detail {
namespace {

// "a 12 · b 3 · …", largest first.
std::string ranked(const std::map<std::string, std::uint64_t>& m) {
  std::vector<std::pair<std::uint64_t, std::string>> v;
  for (const auto& [k, n] : m)
    v.emplace_back(n, k);
  std::sort(v.begin(), v.end(), std::greater<>());
  std::string out;
  for (const auto& [n, k] : v)
    out += (out.empty() ? "" : " · ") + k + " " + grouped(static_cast<std::int64_t>(n));
  return out;
}

void print_cost(const run_cost& c, std::optional<double> emulator_cpu) {
  std::printf("  storage requests        %s (%.1f per blob, %.1f per 1,000 records; the display's own "
              "reads: %s more)\n",
              grouped(static_cast<std::int64_t>(c.requests)).c_str(), c.per_blob, c.per_1000_records,
              grouped(static_cast<std::int64_t>(c.observer_requests)).c_str());
  std::printf("    by table/container    %s\n", ranked(c.by_resource).c_str());
  std::printf("    by operation          %s\n", ranked(c.by_op).c_str());
  std::string cpu;
  for (const char* cmd : {"send", "persistor", "worker", "supervisor", "etl"}) {
    auto it = c.cpu.find(cmd);
    if (it == c.cpu.end())
      continue;
    char buf[96];
    const char* name = std::string_view(cmd) == "worker" ? "workers" : cmd;
    if (it->second.second > 1)
      std::snprintf(buf, sizeof buf, "%s %.1f (%d processes)", name, it->second.first, it->second.second);
    else
      std::snprintf(buf, sizeof buf, "%s %.1f", name, it->second.first);
    cpu += (cpu.empty() ? "" : " · ") + std::string(buf);
  }
  char tail[96];
  if (emulator_cpu) {
    std::snprintf(tail, sizeof tail, " · storage emulator %.1f", *emulator_cpu);
    cpu += tail;
  }
  std::snprintf(tail, sizeof tail, " · shoal run %.1f", c.observer_cpu_s);
  cpu += tail;
  std::printf("  CPU seconds             %s\n", cpu.c_str());
}

nlohmann::json cost_json(const run_cost& c) {
  return {{"total", c.requests},
          {"per_blob", c.per_blob},
          {"per_1000_records", c.per_1000_records},
          {"by_resource", c.by_resource},
          {"by_op", c.by_op},
          {"observer", c.observer_requests}};
}

nlohmann::json cpu_json(const run_cost& c, std::optional<double> emulator_cpu) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [cmd, v] : c.cpu)
    j[cmd == "worker" ? "workers" : cmd] = v.first;
  j["processes"] = nlohmann::json::object();
  for (const auto& [cmd, v] : c.cpu)
    j["processes"][cmd == "worker" ? "workers" : cmd] = v.second;
  if (emulator_cpu)
    j["storage_emulator"] = *emulator_cpu;
  j["run"] = c.observer_cpu_s;
  return j;
}

} // namespace

run_cost run_cost_of(const std::vector<workers::process_stats>& children, std::int64_t blobs, std::size_t records) {
  run_cost c;
  for (const auto& p : children) {
    auto& [cpu, n] = c.cpu[p.command];
    cpu += p.cpu_s;
    n += 1;
    for (const auto& r : p.requests) {
      c.requests += r.count;
      const std::string svc(storage::to_string(r.svc));
      c.by_resource[r.resource + (r.svc == storage::service::table ? "" : " (" + svc + ")")] += r.count;
      c.by_op[svc + " " + r.op] += r.count;
    }
  }
  if (blobs > 0)
    c.per_blob = static_cast<double>(c.requests) / static_cast<double>(blobs);
  if (records > 0)
    c.per_1000_records = static_cast<double>(c.requests) * 1000.0 / static_cast<double>(records);
  const auto self = workers::current_process_stats("run");
  for (const auto& r : self.requests)
    c.observer_requests += r.count;
  c.observer_cpu_s = self.cpu_s;
  return c;
}


void print_summary(const run_report& r, bool json) {
  const auto rate = [&](double s) { return s > 0 ? static_cast<double>(r.records_in) / s : 0.0; };
  const auto g64 = [](double v) { return grouped(static_cast<std::int64_t>(v + 0.5)); };
  const auto& totals = r.totals;
  if (!r.failure.empty())
    std::fprintf(stderr, "\nshoal run: %s\n", r.failure.c_str());
  std::printf("\nsummary\n");
  std::printf("  records read            %zu\n", r.records_in);
  std::printf("  rows loaded (new)       %lld into %s\n", static_cast<long long>(totals.loaded),
              r.table.c_str());
  std::printf("  already loaded          %lld (re-sent message ids, kept once)\n",
              static_cast<long long>(totals.duplicates));
  std::printf("  quarantined             %lld\n", static_cast<long long>(totals.quarantined));
  std::printf("  rows in %-15s %lld, duplicate message ids: %lld\n", r.table.c_str(),
              static_cast<long long>(r.table_rows.value_or(-1)),
              static_cast<long long>(r.duplicate_ids.value_or(-1)));
  std::printf("  blobs                   %lld", static_cast<long long>(totals.blobs));
  if (totals.blobs_per_day.size() <= 12) {
    std::printf(" (");
    bool first = true;
    for (const auto& [day, n] : totals.blobs_per_day) {
      std::printf("%s%s: %lld", first ? "" : ", ", day.c_str(), static_cast<long long>(n));
      first = false;
    }
    std::printf(")");
  } else {
    // Counted per day (hour folders fold into their day), per month with month folders.
    const char* unit = r.partition_depth == "month" ? "months" : "days";
    std::printf(" over %zu %s (%s … %s)", totals.blobs_per_day.size(), unit,
                totals.blobs_per_day.begin()->first.c_str(),
                totals.blobs_per_day.rbegin()->first.c_str());
  }
  const bool rounds = r.etl_mode == "rounds";
  std::printf("\n  stage                   time      records/s\n");
  std::printf("  persistor start         %6.1f s             (started → listening, beside the "
              "fleet's start; before the first send)\n",
              r.persistor_start_s);
  std::printf("  send + persist          %6.1f s  %9s  (first send → last ack; a record is acked "
              "once its blob is committed)\n",
              r.send_s, g64(rate(r.send_s)).c_str());
  std::printf("  ETL                     %6.1f s  %9s  (%s → last blob loaded, "
              "%u workers%s)\n",
              r.etl_s, g64(rate(r.etl_s)).c_str(),
              rounds ? "first round started" : "first blob committed", r.workers,
              rounds ? " in rounds" : "");
  std::printf("  end to end              %6.1f s  %9s  (first send to the listening persistor → "
              "every record loaded or quarantined)\n",
              r.end_to_end_s, g64(rate(r.end_to_end_s)).c_str());
  std::printf("  wall time               %6.1f s             (with storage, process start and "
              "shutdown)\n",
              r.wall_s);
  if (!r.stop_note.empty())
    std::printf("  fleet                   %s\n", r.stop_note.c_str());
  print_cost(r.cost, r.emulator_cpu_s);
  if (!r.persistor_note.empty()) {
    std::string note = r.persistor_note;
    std::replace(note.begin(), note.end(), '\n', ' ');
    std::printf("  note                    %s\n", note.c_str());
  }
  std::printf("verification: %s (records read %s rows loaded + already loaded + quarantined; "
              "%s duplicate message ids%s)\n",
              r.ok ? "PASSED" : "FAILED", r.counts_ok ? "=" : "≠",
              r.duplicate_ids && *r.duplicate_ids == 0 ? "no" : "some",
              r.failure.empty() ? "" : "; the run did not finish: see above");
  if (json)
    std::printf("%s\n", nlohmann::json{{"dataset", r.dataset},
                                       {"records", r.records_in},
                                       {"loaded", totals.loaded},
                                       {"duplicates", totals.duplicates},
                                       {"quarantined", totals.quarantined},
                                       {"table", r.table},
                                       {"table_rows", r.table_rows.value_or(-1)},
                                       {"duplicate_ids", r.duplicate_ids.value_or(-1)},
                                       {"blobs", totals.blobs},
                                       {"workers", r.workers},
                                       {"etl", r.etl_mode},
                                       {"persistor_start_s", r.persistor_start_s},
                                       {"send_s", r.send_s},
                                       {"etl_s", r.etl_s},
                                       {"end_to_end_s", r.end_to_end_s},
                                       {"wall_s", r.wall_s},
                                       {"end_to_end_records_per_s", rate(r.end_to_end_s)},
                                       {"storage_requests", cost_json(r.cost)},
                                       {"cpu_s", cpu_json(r.cost, r.emulator_cpu_s)},
                                       {"verified", r.ok}}
                                .dump()
                                .c_str());
  std::fflush(stdout);
}

} // namespace shoal::cmd::run_detail
