#include "tests/support/fake_storage.hpp"

#include "storage/connection_string.hpp"

#include <cctype>

namespace shoal::tests {

std::optional<std::string> header_of(const storage::http_request& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k.size() != name.size())
      continue;
    bool same = true;
    for (std::size_t i = 0; i < k.size(); ++i)
      same = same && std::tolower(static_cast<unsigned char>(k[i])) ==
                         std::tolower(static_cast<unsigned char>(name[i]));
    if (same)
      return v;
  }
  return std::nullopt;
}

void fake_storage_test::SetUp() {
  auto acct = storage::parse_connection_string("UseDevelopmentStorage=true");
  ASSERT_TRUE(acct) << acct.error().describe();
  storage::pipeline_options opts;
  opts.hooks.sleep = [](std::chrono::milliseconds) {};
  opts.hooks.random_unit = [] { return 0.5; };
  auto p = storage::pipeline::make(*acct, opts, fake);
  ASSERT_TRUE(p) << p.error().describe();
  blobs.emplace(*p);
  queues.emplace(*p);
}

} // namespace shoal::tests
