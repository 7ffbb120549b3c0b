#include "workers/cmd/cli.hpp"

#include <spdlog/cfg/env.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

namespace shoal::cmd {

std::optional<workers::config> load(const global_options& g) {
  std::string path = g.config_path;
  if (path.empty())
    if (const char* env = std::getenv("SHOAL_CONFIG"); env && *env)
      path = env;
  auto c = workers::load_config(path);
  if (!c) {
    std::fprintf(stderr, "shoal: configuration: %s\n", c.error().describe().c_str());
    return std::nullopt;
  }
  if (!g.connection_string.empty())
    c->storage.connection_string = g.connection_string;
  if (!g.log_level.empty())
    c->log.level = g.log_level;
  if (auto ok = workers::validate(*c); !ok) {
    std::fprintf(stderr, "shoal: configuration: %s\n", ok.error().describe().c_str());
    return std::nullopt;
  }
  return *std::move(c);
}

storage::pipeline_options pipeline_options_for(const workers::config& c) {
  storage::pipeline_options opts;
  opts.http.request_timeout = std::chrono::milliseconds(c.storage.request_timeout_ms);
  opts.http.connect_timeout = std::chrono::milliseconds(c.storage.connect_timeout_ms);
  opts.http.ca_file = c.storage.ca_file;
  opts.retry.max_attempts = static_cast<int>(c.storage.max_attempts);
  return opts;
}

std::optional<storage::pipeline> make_pipeline(const workers::config& c, std::string_view command,
                                               const storage::pipeline_options& opts) {
  auto account = storage::parse_connection_string(c.storage.connection_string);
  if (!account) {
    std::fprintf(stderr, "shoal %.*s: storage: %s\n", static_cast<int>(command.size()),
                 command.data(), account.error().describe().c_str());
    return std::nullopt;
  }
  auto p = storage::pipeline::make(*account, opts);
  if (!p) {
    std::fprintf(stderr, "shoal %.*s: storage: %s\n", static_cast<int>(command.size()),
                 command.data(), p.error().describe().c_str());
    return std::nullopt;
  }
  return *std::move(p);
}

void init_logging(const workers::config& c) {
  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!c.log.file.empty()) {
    try {
      // 10 MiB per file, 5 files.
      sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          c.log.file, 10 * 1024 * 1024, 5));
    } catch (const spdlog::spdlog_ex& e) {
      std::fprintf(stderr, "shoal: cannot open log file %s: %s (logging to stderr only)\n",
                   c.log.file.c_str(), e.what());
    }
  }
  auto logger = std::make_shared<spdlog::logger>("shoal", sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::from_str(c.log.level));
  spdlog::set_default_logger(logger);
  spdlog::cfg::load_env_levels(); // SPDLOG_LEVEL=debug etc. win over the file
}

} // namespace shoal::cmd
