#include "workers/etl/steps.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <span>
#include <thread>

namespace shoal::workers::etl {
namespace {

using clock = std::chrono::steady_clock;

std::size_t count_step(const std::vector<quarantine_row>& q, std::string_view step) {
  return static_cast<std::size_t>(std::count_if(q.begin(), q.end(), [&](const quarantine_row& r) { return r.step == step; }));
}

// Runs work(k) for k in [0, n) on n threads (the caller's being one of them).
template <class F> void on_threads(std::size_t n, F&& work) {
  if (n <= 1) {
    work(std::size_t{0});
    return;
  }
  std::vector<std::thread> pool;
  for (std::size_t k = 1; k < n; ++k) pool.emplace_back(work, k);
  work(std::size_t{0});
  for (auto& th : pool) th.join();
}

} // namespace

result<step_stats> extract_step(std::string_view body, blob_records& out) {
  auto t0 = clock::now();
  auto ex = extract_records(body);
  if (!ex) return std::unexpected(ex.error());
  out.extracted = std::move(*ex);
  const std::size_t n = out.extracted.records.size();
  std::size_t problems = 0;
  for (const auto& r : out.extracted.records) problems += r.problem.empty() ? 0 : 1;
  return step_stats{"extract", n, n - problems, problems, ms_since(t0), std::string(to_string(out.extracted.format))};
}

step_stats validate_step(const dataset& d, blob_records& r) {
  const auto& recs = r.extracted.records;
  const std::size_t n = recs.size();
  std::size_t problems = 0;
  for (const auto& x : recs) problems += x.problem.empty() ? 0 : 1;
  // Validation is pure per record: large blobs are cut into slices processed side by side.
  const std::size_t threads = n < 8192 ? 1 : std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, 4);
  std::vector<std::vector<quarantine_row>> q(threads);
  std::vector<double> ms(threads, 0.0);
  r.valid.assign(threads, {});
  on_threads(threads, [&](std::size_t k) {
    const std::size_t lo = n * k / threads, hi = n * (k + 1) / threads;
    auto t = clock::now();
    r.valid[k] = validate_records(d, std::span<const extracted_record>(recs).subspan(lo, hi - lo), q[k]);
    ms[k] = ms_since(t);
  });
  std::size_t valid = 0, quarantined = 0;
  for (std::size_t k = 0; k < threads; ++k) {
    valid += r.valid[k].size();
    quarantined += q[k].size();
    std::move(q[k].begin(), q[k].end(), std::back_inserter(r.quarantine));
  }
  const std::size_t extract_q = count_step(r.quarantine, "extract");
  // Wall time: the slices ran side by side.
  return step_stats{"validate", n - problems, valid, quarantined - extract_q, *std::max_element(ms.begin(), ms.end()),
                    threads > 1 ? std::to_string(threads) + " threads" : ""};
}

step_stats transform_step(const dataset& d, std::string_view blob_name, blob_records& r) {
  const std::size_t slices = r.valid.size();
  std::size_t in = 0;
  for (const auto& s : r.valid) in += s.size();
  std::vector<std::vector<load_row>> rows(slices);
  std::vector<std::vector<quarantine_row>> q(slices);
  std::vector<double> ms(slices, 0.0);
  on_threads(slices, [&](std::size_t k) {
    auto t = clock::now();
    rows[k] = transform_records(d, blob_name, r.valid[k], q[k]);
    ms[k] = ms_since(t);
  });
  r.rows.clear();
  std::size_t quarantined = 0;
  for (std::size_t k = 0; k < slices; ++k) {
    if (r.rows.empty()) r.rows = std::move(rows[k]);
    else std::move(rows[k].begin(), rows[k].end(), std::back_inserter(r.rows));
    quarantined += q[k].size();
    std::move(q[k].begin(), q[k].end(), std::back_inserter(r.quarantine));
  }
  r.valid.clear();
  std::sort(r.quarantine.begin(), r.quarantine.end(),
            [](const quarantine_row& a, const quarantine_row& b) { return a.index < b.index; });
  return step_stats{"transform", in, r.rows.size(), quarantined, ms.empty() ? 0.0 : *std::max_element(ms.begin(), ms.end()), {}};
}

load_batch make_load_batch(const dataset& d, std::string_view blob_name, blob_records& r, std::string_view owner) {
  load_batch b;
  b.blob = std::string(blob_name);
  b.dataset = d.name;
  b.insert_sql = d.insert_sql;
  b.rows = std::move(r.rows);
  b.quarantined = std::move(r.quarantine);
  b.owner = std::string(owner);
  b.keyed_by_table = d.message_key == "table";
  return b;
}

step_stats load_step_stats(const load_batch& b, const load_outcome& o, double ms) {
  step_stats s{"load", b.rows.size(), o.inserted, o.quarantined, ms, {}};
  if (o.already_loaded) s.detail = "already loaded (ledger)";
  else if (o.duplicates) s.detail = "duplicates=" + std::to_string(o.duplicates);
  return s;
}

void log_step(std::string_view blob, const step_stats& s) {
  spdlog::info("etl step={} blob={} in={} out={} quarantined={} ms={:.1f}{}{}", s.step, blob, s.records_in,
               s.records_out, s.quarantined, s.ms, s.detail.empty() ? "" : " ", s.detail);
}

} // namespace shoal::workers::etl
