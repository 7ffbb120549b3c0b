#include "actors/address.hpp"

namespace shoal::actors {

std::optional<address> address::parse(std::string_view text) {
  auto first = text.find('@');
  if (first == std::string_view::npos)
    return std::nullopt;
  auto second = text.find('@', first + 1);
  if (second == std::string_view::npos || text.find('@', second + 1) != std::string_view::npos)
    return std::nullopt;
  address a{std::string(text.substr(0, first)), std::string(text.substr(first + 1, second - first - 1)),
            std::string(text.substr(second + 1))};
  if (a.name.empty() || a.process.empty() || a.host.empty())
    return std::nullopt;
  return a;
}

} // namespace shoal::actors
