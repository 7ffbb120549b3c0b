// The registry of `shoal worker` jobs (workers/cmd/jobs.hpp; the interface is
// workers/fleet/job.hpp): "exec", "etl", and two in-process jobs that measure the fleet's own
// cost per record: "noop" (done at once) and "sleep:MS" (done after MS milliseconds, returning
// early with release when stopped).

#include "workers/cmd/jobs.hpp"

#include "workers/cmd/etl_fleet_job.hpp"
#include "workers/fleet/exec_job.hpp"

#include <charconv>
#include <condition_variable>
#include <mutex>

namespace shoal::cmd {

using namespace shoal::workers;
using namespace shoal::workers::fleet;

namespace {

// Completes every record at once: what remains is the claim path (claim, lease keeping,
// completion) of the worker and the table.
class noop_job final : public job {
public:
  std::string_view name() const noexcept override { return "noop"; }
  result<job_result> run(claimed_record&, const job_context&) override { return job_result{job_verdict::done, {}, "noop"}; }
};

// Completes every record after `ms_` of waiting (a job that takes time but no CPU).
class sleep_job final : public job {
public:
  explicit sleep_job(std::chrono::milliseconds ms) : ms_(ms) {}
  std::string_view name() const noexcept override { return "sleep"; }
  result<job_result> run(claimed_record&, const job_context& ctx) override {
    std::mutex mu;
    std::condition_variable_any cv;
    std::unique_lock lock(mu);
    std::stop_token stop = ctx.stop;
    if (cv.wait_for(lock, stop, ms_, [] { return false; }); stop.stop_requested())
      return job_result{job_verdict::release, {}, "stopped while sleeping"};
    return job_result{job_verdict::done, {}, "slept " + std::to_string(ms_.count()) + " ms"};
  }

private:
  std::chrono::milliseconds ms_;
};

} // namespace

fleet::job_factory find_job_factory(std::string_view name) {
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
  if (name == "noop")
    return [](const config&) -> result<std::unique_ptr<job>> { return std::make_unique<noop_job>(); };
  if (name.starts_with("sleep:") && valid_job_name(name)) {
    std::uint32_t ms = 0;
    const auto digits = name.substr(6);
    std::from_chars(digits.data(), digits.data() + digits.size(), ms);
    return [ms](const config&) -> result<std::unique_ptr<job>> {
      return std::make_unique<sleep_job>(std::chrono::milliseconds(ms));
    };
  }
  return nullptr;
}

} // namespace shoal::cmd
