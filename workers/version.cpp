#include "workers/version.hpp"

namespace shoal::workers {

std::string_view version() noexcept { return "0.1.0"; }

} // namespace shoal::workers
