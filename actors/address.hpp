#pragma once
// Actor addresses: "name@process@host".

#include <optional>
#include <string>
#include <string_view>

namespace shoal::actors {

/// Where an actor lives. Each part is non-empty and contains no '@'.
struct address {
  std::string name;    ///< actor name, unique within its process ("persistor", "claimer-3")
  std::string process; ///< process name, unique on its host ("supervisor", "worker-7")
  std::string host;    ///< host name, unique in the fleet

  /// Parses "name@process@host"; nullopt if a part is missing or empty. Thread-safe (pure).
  static std::optional<address> parse(std::string_view text);
  /// "name@process@host".
  std::string to_string() const { return name + '@' + process + '@' + host; }

  friend bool operator==(const address&, const address&) = default;
};

} // namespace shoal::actors
