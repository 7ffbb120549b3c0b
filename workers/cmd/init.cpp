// `shoal init`: the seed's generator. Writes a ready configuration file, the environment file
// its unit requires and a systemd unit for a role and mode into a folder.
//
//   shoal init --role persistor --mode push|pull-queue --dir /etc/shoal [--name p1]
//              [--endpoint tcp://0.0.0.0:5590] [--queue shoalin] [--bin /usr/local/bin/shoal]
//              [--force]
//
// Files (deploy/SECURITY.md): shoal-{role}-{name}.toml (0644, no secret in it),
// shoal-{role}-{name}.env (0600: AZURE_STORAGE_CONNECTION_STRING, to fill in) and
// shoal-{role}-{name}.service (0644, deploy/systemd/shoal-persistor.service with the paths filled
// in). A push persistor whose endpoint is tcp on anything but loopback is a CURVE server: init
// also writes its key pair (keys/persistor-{name}.key 0600 and .pub) unless present, and the
// folder of admitted producer keys (producers/), and names them in the configuration.
//
// Every file is created under a fresh name with O_CREAT | O_EXCL | O_NOFOLLOW and its mode set
// explicitly, then linked into place (never overwriting) or, with --force, renamed over the old
// one; an existing file is kept and reported as kept. Strings written into the TOML file are
// escaped; a path that a unit file cannot carry verbatim is refused.
// Exit status: 0 (written or kept), 2 for bad arguments or a write failure.

#include "workers/cmd/cli.hpp"

#include "storage/encoding.hpp"
#include "transport/curve.hpp"
#include "transport/endpoint.hpp"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

namespace shoal::cmd {
namespace {

namespace fs = std::filesystem;

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

// The same text as deploy/systemd/shoal-persistor.service (a test compares them).
constexpr const char* unit_template = R"(# shoal persistor: messages → date-partitioned JSON blobs. `shoal init` writes this unit with
# @BIN@, @CONFIG@, @ENV@, @NAME@ and @MODE@ filled in; copy it to /etc/systemd/system/ and
# `systemctl enable --now`. SIGTERM makes the persistor flush its open batches before it exits,
# so a stop loses nothing.
# Runs as the system user `shoal` (useradd --system --home-dir /var/lib/shoal --shell
# /usr/sbin/nologin shoal) inside systemd's sandbox; `systemd-analyze security` rates it 1.3
# (see deploy/SECURITY.md).
[Unit]
Description=shoal persistor @NAME@ (@MODE@)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=shoal
Group=shoal
# AZURE_STORAGE_CONNECTION_STRING=… (mode 0600, owned by root: systemd reads it before it drops
# to `shoal`). Required: without it the unit does not start, it never falls back to anything.
EnvironmentFile=@ENV@
ExecStart=@BIN@ --config @CONFIG@ persistor
Restart=on-failure
RestartSec=2s
KillSignal=SIGTERM
TimeoutStopSec=90s
# The state folder, the only place the service may write.
StateDirectory=shoal
WorkingDirectory=/var/lib/shoal
ReadWritePaths=/var/lib/shoal
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
PrivateMounts=yes
KeyringMode=private
DevicePolicy=closed
CapabilityBoundingSet=
AmbientCapabilities=
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK

[Install]
WantedBy=multi-user.target
)";

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
    s.replace(p, from.size(), to);
  return s;
}

// `s` as a TOML basic string (TOML 1.0 §String): quote, backslash and control characters
// escaped, so no value can end the string, the line or the table it is written into. TOML's
// escapes are JSON's (\" \\ \b \t \n \f \r \uXXXX), so the JSON writer does it; TOML also
// forbids a raw DEL, which JSON allows.
std::string toml_string(std::string_view s) {
  std::string json;
  storage::append_json_string(json, s);
  std::string out;
  out.reserve(json.size());
  for (const char c : json)
    if (c == '\x7f')
      out += "\\u007F";
    else
      out += c;
  return out;
}

// A path a unit file can carry verbatim in ExecStart= / EnvironmentFile=: systemd would split
// it on white space and expand '%' specifiers and '$' variables, so only plain characters pass.
bool unit_safe(const std::string& path) {
  if (path.empty() || path.front() != '/')
    return false;
  for (const char c : path)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '.' || c == '_' ||
          c == '-' || c == '+' || c == ':' || c == '@' || c == ','))
      return false;
  return true;
}

// Whether the persistor of `a` needs CURVE: push on a tcp endpoint that is not loopback.
bool needs_curve(const init_args& a) {
  if (a.mode != "push")
    return false;
  auto ep = transport::endpoint::parse(a.endpoint, transport::endpoint_use::bind);
  return ep && !ep->host_local();
}

struct key_paths {
  fs::path secret, pub, allow_dir;
};

std::string config_text(const init_args& a, const workers::config& d, const key_paths* keys) {
  const auto& p = d.persistor;
  const bool pull = a.mode == "pull-queue";
  const std::string pull_only = pull ? "" : "# ";
  const std::string push_only = pull ? "# " : "";
  std::string s;
  s += "# shoal " + a.role + " '" + a.name + "' (" + a.mode + "), written by `shoal init`.\n";
  s += "# Every key with its default is listed; SHOAL_<SECTION>_<KEY> environment variables override.\n";
  s += "# No secret belongs in this file: the storage account comes from the environment file.\n\n";
  s += "[storage]\n";
  s += "# connection_string_file = \"\"   # or a file holding it (mode 0600, or root:shoal 0440)\n";
  s += "request_timeout_ms = " + std::to_string(d.storage.request_timeout_ms) + "\n";
  s += "max_attempts = " + std::to_string(d.storage.max_attempts) + "\n\n";
  s += "[persistor]\n";
  s += "mode = " + toml_string(pull ? "pull" : "push") + "\n";
  s += "name = " + toml_string(a.name) + "\n";
  s += push_only + "endpoint = " + toml_string(a.endpoint) + "\n";
  if (keys) {
    s += "# CURVE: producers must present a key whose .pub is in curve_allow_dir (re-read every second).\n";
    s += "curve_secret_key = " + toml_string(keys->secret.string()) + "\n";
    s += "curve_public_key = " + toml_string(keys->pub.string()) + "\n";
    s += "curve_allow_dir = " + toml_string(keys->allow_dir.string()) + "\n";
  }
  s += pull_only + "queue = " + toml_string(a.queue) + "\n";
  s += pull_only + "pullers = " + std::to_string(p.pullers) + "\n";
  s += pull_only + "max_dequeue = " + std::to_string(p.max_dequeue) + "\n";
  s += pull_only + "poison_queue = " + toml_string(p.poison_queue) + "\n";
  s += pull_only + "visibility_timeout_ms = " + std::to_string(p.visibility_timeout_ms) + "\n";
  s += "container = " + toml_string(p.container) + "\n";
  s += "format = " + toml_string(p.format) + "            # persistor-v1 | ndjson\n";
  s += "blob_type = " + toml_string(p.blob_type) + "            # block | append\n";
  s += "batch_max_records = " + std::to_string(p.batch_max_records) + "\n";
  s += "batch_max_bytes = " + std::to_string(p.batch_max_bytes) + "\n";
  s += "batch_max_delay_ms = " + std::to_string(p.batch_max_delay_ms) + "\n";
  s += "batch_left_behind_records = " + std::to_string(p.batch_left_behind_records) + "\n";
  s += "event_time_field = \"\"           # empty: partition by ingest time\n";
  s += "writers = " + std::to_string(p.writers) + "\n";
  s += "max_inflight_bytes = " + std::to_string(p.max_inflight_bytes) + "\n";
  s += "register_etl = 1\nregister_catalog = 1\n\n";
  s += "[etl]\nqueue = " + toml_string(d.etl.queue) + "\n\n";
  s += "[log]\nlevel = \"info\"\n";
  return s;
}

std::string env_text(const init_args& a) {
  return "# Environment of shoal " + a.role + " '" + a.name + "' (systemd EnvironmentFile=, required).\n"
         "# Mode 0600, owned by root: systemd reads it before it drops to the `shoal` user.\n"
         "# The persistor refuses to start until a connection string is set here or in the config.\n"
         "#AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…;"
         "EndpointSuffix=core.windows.net\n";
}

// Writes `text` to `path` with `mode` unless it exists (and !force). False on a write error.
bool write_file(const fs::path& path, const std::string& text, mode_t mode, bool force) {
  auto r = transport::write_file_atomically(path, text, mode, force);
  if (!r && r.error().sys_errno == EEXIST) {
    std::printf("kept     %s (exists; --force to overwrite)\n", path.c_str());
    return true;
  }
  if (!r) {
    std::fprintf(stderr, "shoal init: %s\n", r.error().describe().c_str());
    return false;
  }
  std::printf("wrote    %s\n", path.c_str());
  return true;
}

// The persistor's key pair (never replaced: producers hold its public key) and the producers'
// folder. Run as root with a `shoal` group present, the secret goes to root:shoal 0440 so the
// unit's user can read it and nobody else (transport::read_secret_file's rule).
bool write_keys(const key_paths& k) {
  std::error_code ec;
  fs::create_directories(k.secret.parent_path(), ec);
  if (!ec)
    fs::create_directories(k.allow_dir, ec);
  if (ec) {
    std::fprintf(stderr, "shoal init: cannot create the key folders: %s\n", ec.message().c_str());
    return false;
  }
  if (fs::exists(k.secret, ec) || fs::exists(k.pub, ec)) {
    std::printf("kept     %s and %s (a key pair is never replaced by init)\n", k.secret.c_str(),
                k.pub.c_str());
    return true;
  }
  auto keys = transport::generate_curve_key_pair();
  if (!keys) {
    std::fprintf(stderr, "shoal init: %s\n", keys.error().describe().c_str());
    return false;
  }
  if (auto r = transport::save_curve_key_pair(*keys, k.pub, k.secret); !r) {
    std::fprintf(stderr, "shoal init: %s\n", r.error().describe().c_str());
    return false;
  }
  if (::geteuid() == 0)
    if (const struct group* g = ::getgrnam("shoal"); g != nullptr)
      if (::chown(k.secret.c_str(), 0, g->gr_gid) != 0 || ::chmod(k.secret.c_str(), 0440) != 0)
        std::fprintf(stderr, "shoal init: cannot give %s to group shoal: %s\n", k.secret.c_str(),
                     std::strerror(errno));
  std::printf("wrote    %s (secret) and %s (public key %s: give it to the producers)\n",
              k.secret.c_str(), k.pub.c_str(), keys->public_key.c_str());
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
  if (a.mode == "push") {
    if (auto ep = transport::endpoint::parse(a.endpoint, transport::endpoint_use::bind); !ep) {
      std::fprintf(stderr, "shoal init: --endpoint: %s\n", ep.error().describe().c_str());
      return 2;
    }
  }
  workers::config defaults;
  defaults.persistor.name = a.name;
  defaults.persistor.mode = a.mode == "push" ? "push" : "pull";
  if (auto v = workers::validate(defaults); !v) {
    std::fprintf(stderr, "shoal init: %s\n", v.error().describe().c_str());
    return 2;
  }
  std::error_code ec;
  fs::create_directories(a.dir, ec);
  if (ec) {
    std::fprintf(stderr, "shoal init: cannot create %s: %s\n", a.dir.c_str(), ec.message().c_str());
    return 2;
  }
  const auto dir = fs::absolute(a.dir, ec);
  const std::string stem = "shoal-" + a.role + "-" + a.name;
  const auto config_path = dir / (stem + ".toml");
  const auto env_path = dir / (stem + ".env");
  const auto unit_path = dir / (stem + ".service");
  std::string bin = a.bin;
  if (bin.empty()) {
    bin = fs::read_symlink("/proc/self/exe", ec).string();
    if (ec || bin.empty())
      bin = "/usr/local/bin/shoal";
  }
  for (const auto& p : {bin, config_path.string(), env_path.string()})
    if (!unit_safe(p)) {
      std::fprintf(stderr,
                   "shoal init: %s cannot be written into a systemd unit as it is (absolute path "
                   "of letters, digits and / . _ - + : @ , only)\n",
                   terminal_safe(p).c_str());
      return 2;
    }
  std::optional<key_paths> keys;
  if (needs_curve(a))
    keys = key_paths{dir / "keys" / ("persistor-" + a.name + ".key"),
                     dir / "keys" / ("persistor-" + a.name + ".pub"), dir / "producers"};
  std::string unit = unit_template;
  unit = replace_all(unit, "@BIN@", bin);
  unit = replace_all(unit, "@CONFIG@", config_path.string());
  unit = replace_all(unit, "@ENV@", env_path.string());
  unit = replace_all(unit, "@NAME@", a.name);
  unit = replace_all(unit, "@MODE@", a.mode);
  if ((keys && !write_keys(*keys)) ||
      !write_file(config_path, config_text(a, defaults, keys ? &*keys : nullptr), 0644, a.force) ||
      !write_file(env_path, env_text(a), 0600, a.force) || !write_file(unit_path, unit, 0644, a.force))
    return 2;
  // The written configuration must load: a generator that writes a broken file is a bug.
  auto check = workers::load_config(config_path);
  if (!check) {
    std::fprintf(stderr, "shoal init: %s does not load: %s\n", config_path.c_str(),
                 check.error().describe().c_str());
    return 2;
  }
  if (keys)
    std::printf("\nProducers connect with CURVE: put each producer's .pub into %s and give them %s\n"
                "(shoal send --curve-server-key %s --curve-secret-key THEIR.key).\n",
                keys->allow_dir.c_str(), keys->pub.c_str(), keys->pub.c_str());
  std::printf("Set AZURE_STORAGE_CONNECTION_STRING in %s, then install %s.\n", env_path.c_str(),
              unit_path.filename().c_str());
  return 0;
}

} // namespace

void add_init_command(CLI::App& app, global_options&, command_fn& run) {
  auto a = std::make_shared<init_args>();
  auto* cmd = app.add_subcommand("init", "Write a configuration file, environment file and systemd unit for a role");
  cmd->add_option("--role", a->role, "persistor")->capture_default_str();
  cmd->add_option("--mode", a->mode, "push | pull-queue")->capture_default_str();
  cmd->add_option("--dir", a->dir, "folder to write into")->capture_default_str();
  cmd->add_option("--name", a->name, "instance name")->capture_default_str();
  cmd->add_option("--endpoint", a->endpoint,
                  "push: endpoint to bind (tcp on anything but loopback: CURVE, keys written)")
      ->capture_default_str();
  cmd->add_option("--queue", a->queue, "pull-queue: queue to read")->capture_default_str();
  cmd->add_option("--bin", a->bin, "path of the shoal executable (default: this one)");
  cmd->add_flag("--force", a->force, "overwrite existing files (never the key pair)");
  cmd->callback([&run, a] { run = [a] { return run_init(*a); }; });
}

} // namespace shoal::cmd
