#include "workers/dev_storage.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace shoal::workers {

std::filesystem::path source_dir() {
  if (const char* env = std::getenv("SHOAL_SOURCE_DIR"); env && *env)
    return env;
  return SHOAL_SOURCE_DIR;
}

std::filesystem::path default_azurite_executable() {
  if (const char* env = std::getenv("SHOAL_AZURITE"); env && *env)
    return env;
  return source_dir() / "deploy/local/node_modules/.bin/azurite";
}

bool is_development_storage(const std::string& connection_string) {
  std::string s;
  for (char c : connection_string)
    if (!std::isspace(static_cast<unsigned char>(c)))
      s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  while (!s.empty() && s.back() == ';')
    s.pop_back();
  return s == "usedevelopmentstorage=true";
}

result<dev_storage> ensure_storage(const std::string& connection_string,
                                   const std::filesystem::path& workspace, bool in_memory) {
  dev_storage out;
  if (!is_development_storage(connection_string)) {
    out.connection_string = connection_string;
    return out;
  }
  const std::array<int, 3> ports{10000, 10001, 10002};
  int listening = 0;
  for (int p : ports)
    listening += port_listening("127.0.0.1", p) ? 1 : 0;
  if (listening == 3) {
    spdlog::info("development storage: using the emulator already listening on 127.0.0.1:10000-10002");
    out.connection_string = connection_string;
    return out;
  }
  if (listening != 0)
    return fail(errc::conflict,
                "development storage: only some of the emulator ports 10000-10002 accept "
                "connections; stop whatever holds them or set AZURE_STORAGE_CONNECTION_STRING");
  azurite_options opts;
  opts.executable = default_azurite_executable();
  opts.workspace = workspace;
  opts.ports = ports;
  opts.in_memory = in_memory;
  spdlog::info("development storage: starting Azurite ({}) with workspace {}{}", opts.executable.string(),
               workspace.string(), in_memory ? ", data in memory only" : "");
  auto p = azurite_process::start(opts);
  if (!p)
    return std::unexpected(p.error());
  out.connection_string = connection_string;
  out.started.emplace(std::move(*p));
  return out;
}

} // namespace shoal::workers
