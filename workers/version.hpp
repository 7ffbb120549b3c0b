#pragma once

#include <string_view>

namespace shoal::workers {

/// The shoal release, e.g. "0.1.0" (from the CMake project version).
std::string_view version() noexcept;

} // namespace shoal::workers
