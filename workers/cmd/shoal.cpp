// The single `shoal` executable: one subcommand per role (see README.md).

#include "workers/child_process.hpp"
#include "workers/cmd/cli.hpp"
#include "workers/process_stats.hpp"
#include "workers/version.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  // Any subcommand may hold the storage connection string in its environment: keep it from
  // other processes of the same user (an exec job's command reading /proc/PPID/environ).
  shoal::workers::make_process_non_dumpable();
  CLI::App app{"shoal: actor-model worker fleets on Azure Storage.\n"
               "Storage comes from --connection-string, the [storage] section of the config file "
               "(connection_string or connection_string_file), or AZURE_STORAGE_CONNECTION_STRING. "
               "Without one, supervisor, worker, persistor and etl run refuse to start unless "
               "--dev-storage names the local emulator; run and the tools use it."};
  app.set_version_flag("--version", "shoal " + std::string(shoal::workers::version()));
  shoal::cmd::global_options g;
  app.add_option("--config", g.config_path, "TOML configuration file (or $SHOAL_CONFIG)");
  app.add_option("--connection-string", g.connection_string,
                 "Azure Storage connection string (overrides config and environment; visible to "
                 "every local user in the process list: services use the environment or "
                 "[storage] connection_string_file)");
  app.add_flag("--dev-storage", g.dev_storage,
               "use development storage (UseDevelopmentStorage=true: Azurite on 127.0.0.1)");
  app.add_option("--log-level", g.log_level, "trace|debug|info|warn|error|off");
  app.add_flag("--json", g.json, "machine-readable JSON output");
  app.require_subcommand(1);

  shoal::cmd::command_fn run;
  // One line per subcommand file (workers/cmd/<name>.cpp), declared in cli.hpp.
  shoal::cmd::add_catalog_command(app, g, run);
  shoal::cmd::add_records_command(app, g, run);
  shoal::cmd::add_send_command(app, g, run);
  shoal::cmd::add_persistor_command(app, g, run);
  shoal::cmd::add_init_command(app, g, run);
  shoal::cmd::add_etl_command(app, g, run);
  shoal::cmd::add_run_command(app, g, run);
  shoal::cmd::add_worker_command(app, g, run);
  shoal::cmd::add_keys_command(app, g, run);
  shoal::cmd::add_supervisor_command(app, g, run);
  shoal::cmd::add_status_command(app, g, run);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  const int status = run ? run() : 0;
  // $SHOAL_RUN_STATS_DIR (set by `shoal run`): this process's CPU and storage requests.
  if (!app.get_subcommands().empty())
    shoal::workers::write_process_stats(app.get_subcommands().front()->get_name());
  return status;
}
