// The default job::run_batch (workers/fleet/job.hpp): run() on each record in turn.

#include "workers/fleet/job.hpp"

namespace shoal::workers::fleet {

result<std::vector<job_result>> job::run_batch(std::span<claimed_record* const> records,
                                               const job_context& ctx) {
  std::vector<job_result> out;
  out.reserve(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (ctx.stop.stop_requested() || (ctx.record_lost && ctx.record_lost(i))) {
      out.push_back({job_verdict::release, {}, "stopped before it ran"});
      continue;
    }
    auto r = run(*records[i], ctx);
    if (!r)
      return std::unexpected(r.error());
    out.push_back(*std::move(r));
  }
  return out;
}

} // namespace shoal::workers::fleet
