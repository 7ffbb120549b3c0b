#include "tests/support/request_counts.hpp"

#include <algorithm>

namespace shoal::tests {

std::map<std::string, std::uint64_t> requests_to(const std::string& resource,
                                                 const std::vector<storage::request_count>& before) {
  std::map<std::string, std::uint64_t> out;
  for (const auto& c : storage::process_request_counts())
    if (c.resource == resource) out[c.op] += c.count;
  for (const auto& c : before)
    if (c.resource == resource) out[c.op] -= c.count;
  std::erase_if(out, [](const auto& kv) { return kv.second == 0; });
  return out;
}

} // namespace shoal::tests
