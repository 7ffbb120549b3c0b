#pragma once
// What a test's own storage calls cost: this process's storage requests
// (storage::process_request_counts) to one table, container or queue since a snapshot.

#include "storage/pipeline.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace shoal::tests {

/// Requests to `resource` (a table, container or queue name) sent by every pipeline of this
/// process since `before` (a storage::process_request_counts() snapshot), by operation kind
/// (storage::request_kind: "batch", "merge", "get", ...); kinds with none are left out.
/// Thread-safe (the counters are process-wide; other threads' requests count too).
std::map<std::string, std::uint64_t> requests_to(const std::string& resource,
                                                 const std::vector<storage::request_count>& before);

} // namespace shoal::tests
