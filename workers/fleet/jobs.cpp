// The registry of `shoal worker` jobs (workers/fleet/job.hpp): "exec" and "etl".

#include "workers/etl/etl_fleet_job.hpp"
#include "workers/fleet/exec_job.hpp"
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

job_factory find_job_factory(std::string_view name) {
  if (name == "exec")
    return [](const config& cfg) -> result<std::unique_ptr<job>> {
      auto opts = exec_options_from(cfg);
      if (!opts)
        return std::unexpected(opts.error());
      auto j = exec_job::make(*std::move(opts));
      if (!j)
        return std::unexpected(j.error());
      return std::unique_ptr<job>(std::move(*j));
    };
  if (name == "etl")
    return [](const config& cfg) { return etl::make_etl_fleet_job(cfg); };
  return nullptr;
}

} // namespace shoal::workers::fleet
