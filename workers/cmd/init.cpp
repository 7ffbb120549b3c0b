// `shoal init`: the seed's generator. Writes a ready configuration file and a systemd unit for a
// role and mode into a folder.
//
//   shoal init --role persistor --mode push|pull-queue --dir /etc/shoal [--name p1]
//              [--endpoint tcp://0.0.0.0:5590] [--queue shoalin] [--bin /usr/local/bin/shoal]
//              [--force]
//
// An existing file is never overwritten unless --force (it is reported as kept), so re-running
// init after an upgrade is safe. Files are written to a temporary name and renamed into place.
// Exit status: 0 (written or kept), 2 for bad arguments or a write failure.

#include "workers/cmd/cli.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <unistd.h>

namespace shoal::cmd {
namespace {

struct init_args {
  std::string role = "persistor";
  std::string mode = "push";
  std::string dir = ".";
  std::string name = "p1";
  std::string endpoint = "tcp://0.0.0.0:5590";
  std::string queue = "shoalin";
  std::string bin;
  bool force = false;
};

// The same text as deploy/systemd/shoal-persistor.service.
constexpr const char* unit_template = R"(# shoal persistor: messages → date-partitioned JSON blobs (written by `shoal init`).
# SIGTERM makes the persistor flush its open batches before it exits, so a stop loses nothing.
[Unit]
Description=shoal persistor @NAME@ (@MODE@)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=@BIN@ --config @CONFIG@ persistor
Restart=on-failure
RestartSec=2s
KillSignal=SIGTERM
TimeoutStopSec=90s
# AZURE_STORAGE_CONNECTION_STRING (or [storage] connection_string in the config file).
EnvironmentFile=-/etc/default/shoal
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
)";

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
  return s;
}

std::string config_text(const init_args& a, const workers::config& d) {
  const auto& p = d.persistor;
  const bool pull = a.mode == "pull-queue";
  std::string s;
  s += "# shoal " + a.role + " '" + a.name + "' (" + a.mode + "), written by `shoal init`.\n";
  s += "# Every key with its default is listed; SHOAL_<SECTION>_<KEY> environment variables override.\n\n";
  s += "[storage]\n# connection_string = \"\"   # empty: $AZURE_STORAGE_CONNECTION_STRING\n";
  s += "request_timeout_ms = " + std::to_string(d.storage.request_timeout_ms) + "\n";
  s += "max_attempts = " + std::to_string(d.storage.max_attempts) + "\n\n";
  s += "[persistor]\n";
  s += "mode = \"" + std::string(pull ? "pull" : "push") + "\"\n";
  s += "name = \"" + a.name + "\"\n";
  s += std::string(pull ? "# " : "") + "endpoint = \"" + a.endpoint + "\"\n";
  s += std::string(pull ? "" : "# ") + "queue = \"" + a.queue + "\"\n";
  s += std::string(pull ? "" : "# ") + "pullers = " + std::to_string(p.pullers) + "\n";
  s += std::string(pull ? "" : "# ") + "max_dequeue = " + std::to_string(p.max_dequeue) + "\n";
  s += std::string(pull ? "" : "# ") + "poison_queue = \"" + p.poison_queue + "\"\n";
  s += std::string(pull ? "" : "# ") + "visibility_timeout_ms = " + std::to_string(p.visibility_timeout_ms) + "\n";
  s += "container = \"" + p.container + "\"\n";
  s += "format = \"" + p.format + "\"            # persistor-v1 | ndjson\n";
  s += "blob_type = \"" + p.blob_type + "\"            # block | append\n";
  s += "batch_max_records = " + std::to_string(p.batch_max_records) + "\n";
  s += "batch_max_bytes = " + std::to_string(p.batch_max_bytes) + "\n";
  s += "batch_max_delay_ms = " + std::to_string(p.batch_max_delay_ms) + "\n";
  s += "event_time_field = \"\"           # empty: partition by ingest time\n";
  s += "writers = " + std::to_string(p.writers) + "\n";
  s += "max_inflight_bytes = " + std::to_string(p.max_inflight_bytes) + "\n";
  s += "register_etl = 1\nregister_catalog = 1\n\n";
  s += "[etl]\nqueue = \"" + d.etl.queue + "\"\n\n";
  s += "[log]\nlevel = \"info\"\n";
  return s;
}

// Writes `text` to `path` unless it exists (and !force). Returns false on a write error.
bool write_file(const std::filesystem::path& path, const std::string& text, bool force) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !force) {
    std::printf("kept     %s (exists; --force to overwrite)\n", path.c_str());
    return true;
  }
  const auto tmp = path.string() + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      std::fprintf(stderr, "shoal init: cannot write %s\n", tmp.c_str());
      std::filesystem::remove(tmp, ec);
      return false;
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::fprintf(stderr, "shoal init: cannot rename %s to %s: %s\n", tmp.c_str(), path.c_str(),
                 ec.message().c_str());
    std::filesystem::remove(tmp, ec);
    return false;
  }
  std::printf("wrote    %s\n", path.c_str());
  return true;
}

int run_init(const init_args& a) {
  if (a.role != "persistor") {
    std::fprintf(stderr, "shoal init: --role %s is not supported yet (persistor)\n", a.role.c_str());
    return 2;
  }
  if (a.mode != "push" && a.mode != "pull-queue") {
    std::fprintf(stderr, "shoal init: --mode must be push or pull-queue\n");
    return 2;
  }
  workers::config defaults;
  defaults.persistor.name = a.name;
  defaults.persistor.mode = a.mode == "push" ? "push" : "pull";
  if (auto v = workers::validate(defaults); !v) {
    std::fprintf(stderr, "shoal init: %s\n", v.error().describe().c_str());
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(a.dir, ec);
  if (ec) {
    std::fprintf(stderr, "shoal init: cannot create %s: %s\n", a.dir.c_str(), ec.message().c_str());
    return 2;
  }
  const auto dir = std::filesystem::absolute(a.dir, ec);
  const auto config_path = dir / ("shoal-" + a.role + "-" + a.name + ".toml");
  const auto unit_path = dir / ("shoal-" + a.role + "-" + a.name + ".service");
  std::string bin = a.bin;
  if (bin.empty()) {
    bin = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    if (ec || bin.empty())
      bin = "/usr/local/bin/shoal";
  }
  std::string unit = unit_template;
  unit = replace_all(unit, "@BIN@", bin);
  unit = replace_all(unit, "@CONFIG@", config_path.string());
  unit = replace_all(unit, "@NAME@", a.name);
  unit = replace_all(unit, "@MODE@", a.mode);
  if (!write_file(config_path, config_text(a, defaults), a.force) ||
      !write_file(unit_path, unit, a.force))
    return 2;
  // The written configuration must load: a generator that writes a broken file is a bug.
  auto check = workers::load_config(config_path);
  if (!check) {
    std::fprintf(stderr, "shoal init: %s does not load: %s\n", config_path.c_str(),
                 check.error().describe().c_str());
    return 2;
  }
  return 0;
}

} // namespace

void add_init_command(CLI::App& app, global_options&, command_fn& run) {
  auto a = std::make_shared<init_args>();
  auto* cmd = app.add_subcommand("init", "Write a configuration file and systemd unit for a role");
  cmd->add_option("--role", a->role, "persistor")->capture_default_str();
  cmd->add_option("--mode", a->mode, "push | pull-queue")->capture_default_str();
  cmd->add_option("--dir", a->dir, "folder to write into")->capture_default_str();
  cmd->add_option("--name", a->name, "instance name")->capture_default_str();
  cmd->add_option("--endpoint", a->endpoint, "push: endpoint to bind")->capture_default_str();
  cmd->add_option("--queue", a->queue, "pull-queue: queue to read")->capture_default_str();
  cmd->add_option("--bin", a->bin, "path of the shoal executable (default: this one)");
  cmd->add_flag("--force", a->force, "overwrite existing files");
  cmd->callback([&run, a] { run = [a] { return run_init(*a); }; });
}

} // namespace shoal::cmd
