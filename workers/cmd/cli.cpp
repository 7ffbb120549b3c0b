#include "workers/cmd/cli.hpp"

#include "storage/connection_string.hpp"
#include "storage/encoding.hpp"
#include "storage/table_detail.hpp"
#include "workers/claim/work_table.hpp"

#include <spdlog/cfg/env.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

namespace shoal::cmd {

std::optional<workers::config> load(const global_options& g, storage_need need,
                                    std::string_view command) {
  const std::string who = command.empty() ? std::string("shoal") : "shoal " + std::string(command);
  std::string path = g.config_path;
  if (path.empty())
    if (const char* env = std::getenv("SHOAL_CONFIG"); env && *env)
      path = env;
  auto c = workers::load_config(path);
  if (!c) {
    std::fprintf(stderr, "%s: configuration: %s\n", who.c_str(), c.error().describe().c_str());
    return std::nullopt;
  }
  if (g.dev_storage && !g.connection_string.empty()) {
    std::fprintf(stderr, "%s: --dev-storage and --connection-string name two storages; give one\n",
                 who.c_str());
    return std::nullopt;
  }
  if (!g.connection_string.empty()) {
    c->storage.connection_string = g.connection_string;
    c->storage.connection_string_origin = "--connection-string";
  } else if (g.dev_storage) {
    c->storage.connection_string = "UseDevelopmentStorage=true";
    c->storage.connection_string_origin = "--dev-storage";
  } else if (c->storage.connection_string.empty()) {
    if (need == storage_need::explicit_only) {
      std::fprintf(stderr,
                   "%s: no storage connection string: set AZURE_STORAGE_CONNECTION_STRING, "
                   "[storage] connection_string or connection_string_file in the configuration%s, "
                   "or pass --dev-storage to use the local emulator (UseDevelopmentStorage=true); "
                   "not starting\n",
                   who.c_str(), path.empty() ? " (--config)" : (" " + path).c_str());
      return std::nullopt;
    }
    c->storage.connection_string = "UseDevelopmentStorage=true";
    c->storage.connection_string_origin = "development storage (no connection string given)";
  }
  if (!g.log_level.empty())
    c->log.level = g.log_level;
  if (auto ok = workers::validate(*c); !ok) {
    std::fprintf(stderr, "%s: configuration: %s\n", who.c_str(), ok.error().describe().c_str());
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

std::optional<workers::work_table> open_work_table(const workers::config& c, const storage::pipeline& p,
                                                   std::string_view command) {
  const auto complain = [&](const auto& e) {
    std::fprintf(stderr, "shoal %.*s: work table: %s\n", static_cast<int>(command.size()), command.data(),
                 e.describe().c_str());
    return std::nullopt;
  };
  auto client = storage::table_client::make(p, c.work.table);
  if (!client)
    return complain(client.error());
  workers::work_table_options wo;
  wo.work = c.work;
  auto table = workers::work_table::make(*client, storage::blob_client(p), wo);
  if (!table)
    return complain(table.error());
  return std::move(*table);
}

std::string storage_summary(const workers::config& c) {
  auto account = storage::parse_connection_string(c.storage.connection_string);
  std::string out = account ? account->describe() : "an unparsable connection string";
  if (!c.storage.connection_string_origin.empty())
    out += ", from " + c.storage.connection_string_origin;
  return out;
}

std::string cli_time(std::chrono::system_clock::time_point t) {
  return t.time_since_epoch().count() <= 0 ? "-" : storage::format_iso8601(t, 0);
}

std::string terminal_safe(std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  auto escape_byte = [&](unsigned char b) {
    switch (b) {
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    default:
      out += "\\x";
      out += hex[b >> 4];
      out += hex[b & 15];
    }
  };
  // Well-formed UTF-8 is decoded and only its control characters escaped; anything else is
  // escaped byte by byte (a stray 0x9b is a C1 CSI to some terminals).
  const bool utf8 = storage::valid_utf8(text);
  if (!utf8) {
    for (const char ch : text) {
      const auto b = static_cast<unsigned char>(ch);
      if (b < 0x20 || b >= 0x7f) escape_byte(b);
      else out += ch;
    }
    return out;
  }
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b < 0x20 || b == 0x7f) {
      escape_byte(b);
    } else if (b == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) < 0xa0) {
      // U+0080..U+009F, the C1 controls, encoded C2 80..C2 9F.
      out += "\\u00";
      out += hex[(static_cast<unsigned char>(text[i + 1]) >> 4) & 15];
      out += hex[static_cast<unsigned char>(text[i + 1]) & 15];
      ++i;
    } else {
      out += text[i];
    }
  }
  return out;
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
