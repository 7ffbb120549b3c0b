#pragma once
// The registry of `shoal worker` jobs: the one place that knows every job ("exec" and the
// in-process "noop" and "sleep:MS" of workers/fleet, "etl" of workers/etl through
// etl_fleet_job.hpp). The fleet itself knows jobs only through workers/fleet/job.hpp: whoever
// starts a worker hands it a factory from here (worker_options::factory).

#include "workers/fleet/job.hpp"

#include <string_view>

namespace shoal::cmd {

/// The factory for `name` ("exec", "etl", "noop" or "sleep:MS" with MS in 0..600000); nullptr
/// when unknown. Thread-safe (pure).
workers::fleet::job_factory find_job_factory(std::string_view name);

} // namespace shoal::cmd
