#pragma once
// Development storage: when the connection string is `UseDevelopmentStorage=true` and nothing
// listens on the emulator ports (10000-10002), start the pinned Azurite from deploy/local so
// `shoal run` works on a fresh machine with no set-up beyond deploy/setup.sh.

#include "workers/error.hpp"
#include "workers/local_azurite.hpp"

#include <filesystem>
#include <optional>
#include <string>

namespace shoal::workers {

/// The repository's top folder as built ($SHOAL_SOURCE_DIR overrides): deploy/ and the
/// vega-datasets under deploy/local are found from here.
std::filesystem::path source_dir();

/// Where the pinned Azurite lives: $SHOAL_AZURITE if set, else the build's source tree
/// (deploy/local/node_modules/.bin/azurite).
std::filesystem::path default_azurite_executable();

/// True for "UseDevelopmentStorage=true" (any case, optional trailing ';', optional
/// DevelopmentStorageProxyUri is NOT accepted: a proxy means someone else runs the emulator).
bool is_development_storage(const std::string& connection_string);

/// Storage that is ready to use: the connection string to hand to storage clients, and the
/// Azurite we started (if any), stopped when this object is destroyed.
struct dev_storage {
  std::string connection_string;
  std::optional<azurite_process> started; ///< engaged only if we launched Azurite
};

/// If `connection_string` is development storage and 127.0.0.1:10000-10002 are all free,
/// starts Azurite on those ports with its workspace in `workspace` (its data there, or in its
/// memory only when `in_memory`: see azurite_options::in_memory); if all three listen,
/// uses them; if only some listen, fails (something else holds an emulator port).
/// Any other connection string is returned unchanged. Errors: from azurite_process::start;
/// conflict when the emulator ports are partly taken. Owner only.
[[nodiscard]] result<dev_storage> ensure_storage(const std::string& connection_string,
                                                 const std::filesystem::path& workspace,
                                                 bool in_memory = false);

} // namespace shoal::workers
