// `shoal keys generate --out DIR [--name NAME] [--force]`: a CURVE key pair for the tcp links
// between supervisors (issue 5 item 5). NAME.key holds the secret (mode 0600), NAME.pub the
// public key; other hosts admit this one by copying NAME.pub into their fleet.curve_allow_dir.

#include "transport/curve.hpp"
#include "workers/cmd/cli.hpp"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

namespace shoal::cmd {
namespace {

namespace fs = std::filesystem;

struct keys_args {
  std::string out;
  std::string name;
  bool force = false;
};

std::string default_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "shoal";
  return buf;
}

bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 200 || n == "." || n == "..") return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

int run_generate(const keys_args& a, bool json) {
  std::string name = a.name.empty() ? default_name() : a.name;
  if (!valid_name(name)) {
    std::fprintf(stderr, "shoal keys generate: --name '%s' must be letters, digits, '-', '_' or '.'\n", name.c_str());
    return 2;
  }
  std::error_code ec;
  fs::create_directories(a.out, ec);
  if (ec) {
    std::fprintf(stderr, "shoal keys generate: cannot create %s: %s\n", a.out.c_str(), ec.message().c_str());
    return 1;
  }
  fs::path secret = fs::path(a.out) / (name + ".key");
  fs::path pub = fs::path(a.out) / (name + ".pub");
  if (!a.force)
    for (const auto& p : {secret, pub})
      if (fs::exists(p, ec)) {
        std::fprintf(stderr, "shoal keys generate: %s exists; not overwriting it (use --force to replace the key pair)\n",
                     p.c_str());
        return 1;
      }
  auto keys = transport::generate_curve_key_pair();
  if (!keys) {
    std::fprintf(stderr, "shoal keys generate: %s\n", keys.error().describe().c_str());
    return 1;
  }
  if (auto r = transport::save_curve_key_pair(*keys, pub, secret); !r) {
    std::fprintf(stderr, "shoal keys generate: %s\n", r.error().describe().c_str());
    return 1;
  }
  if (json) {
    nlohmann::json j{{"name", name}, {"secret_key_file", secret.string()}, {"public_key_file", pub.string()},
                     {"public_key", keys->public_key}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("wrote %s (secret, mode 0600) and %s (public key %s)\n\n", secret.c_str(), pub.c_str(),
              keys->public_key.c_str());
  std::printf("On this host, in the [fleet] section of shoal.toml:\n"
              "  curve_secret_key = \"%s\"\n  curve_public_key = \"%s\"\n"
              "  curve_allow_dir  = \"/etc/shoal/allow\"   # the .pub files of every host admitted\n\n",
              fs::absolute(secret).c_str(), fs::absolute(pub).c_str());
  std::printf("To admit this host on the others, copy %s into their curve_allow_dir\n"
              "(and theirs into this host's). Keep %s secret; never copy it.\n",
              pub.filename().c_str(), secret.filename().c_str());
  return 0;
}

} // namespace

void add_keys_command(CLI::App& app, global_options& g, command_fn& run) {
  auto* keys = app.add_subcommand("keys", "CURVE key pairs for the tcp links between hosts");
  keys->require_subcommand(1);
  auto a = std::make_shared<keys_args>();
  auto* gen = keys->add_subcommand("generate", "Write NAME.key (secret, 0600) and NAME.pub into --out");
  gen->add_option("--out", a->out, "folder to write into")->required();
  gen->add_option("--name", a->name, "file name stem (default: this host's name)");
  gen->add_flag("--force", a->force, "replace an existing key pair");
  gen->callback([&run, &g, a] { run = [a, &g] { return run_generate(*a, g.json); }; });
}

} // namespace shoal::cmd
