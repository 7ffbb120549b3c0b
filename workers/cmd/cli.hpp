#pragma once
// Shared plumbing of the `shoal` subcommands: global options, configuration loading and
// logging set-up. Each subcommand lives in its own file and registers itself in shoal.cpp.

#include "storage/pipeline.hpp"
#include "workers/config.hpp"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>

namespace shoal::workers {
class work_table;
} // namespace shoal::workers

namespace shoal::cmd {

/// Global options, parsed before any subcommand runs.
struct global_options {
  std::string config_path;       ///< --config / $SHOAL_CONFIG
  std::string connection_string; ///< --connection-string (overrides config and environment)
  std::string log_level;         ///< --log-level (overrides config)
  bool json = false;             ///< --json: machine-readable output where a command has one
  bool dev_storage = false;      ///< --dev-storage: the local emulator, said out loud
};

/// What a command does when no connection string was given (flag, config, file, environment).
enum class storage_need {
  dev_default,  ///< tools and `shoal run`: use development storage (Azurite)
  explicit_only ///< daemons (supervisor, worker, persistor, etl run): refuse to start
};

/// Loads the configuration named by `g` and applies the flag overrides. With no connection
/// string anywhere, `need` decides: development storage, or (daemons) a refusal naming every
/// way to give one, unless --dev-storage. On failure prints a clear message to stderr, prefixed
/// "shoal <command>", and returns nullopt (the caller exits with status 2).
std::optional<workers::config> load(const global_options& g,
                                    storage_need need = storage_need::dev_default,
                                    std::string_view command = {});

/// The storage pipeline settings of `c` ([storage] timeouts, CA file, attempts).
storage::pipeline_options pipeline_options_for(const workers::config& c);

/// A storage pipeline for `c`'s connection string. On failure prints
/// "shoal <command>: storage: <error>" to stderr and returns nullopt.
std::optional<storage::pipeline> make_pipeline(const workers::config& c, std::string_view command,
                                               const storage::pipeline_options& opts);
inline std::optional<storage::pipeline> make_pipeline(const workers::config& c,
                                                      std::string_view command) {
  return make_pipeline(c, command, pipeline_options_for(c));
}

/// The work table `c.work.table` (payload blobs through `p`), as `shoal worker` and `shoal
/// run` open it. On failure prints "shoal <command>: work table: <error>" to stderr and returns
/// nullopt. Thread-safe.
std::optional<workers::work_table> open_work_table(const workers::config& c, const storage::pipeline& p,
                                                   std::string_view command);

/// Which storage `c` uses and where the connection string came from, without any secret:
/// "account devstoreaccount1 (SharedKey) blob=http://127.0.0.1:10000/devstoreaccount1 …, from
/// AZURE_STORAGE_CONNECTION_STRING". Thread-safe (pure).
std::string storage_summary(const workers::config& c);

/// `text` with every control character (C0, DEL, C1) and every byte that is not UTF-8 written
/// as an escape (\n, \t, \x1b, \u0085, …), so job output, payloads and error texts cannot
/// move the cursor, recolour or retitle a terminal. Thread-safe (pure).
std::string terminal_safe(std::string_view text);

/// A time as the CLI prints it: ISO 8601 UTC to the second ("2026-12-03T08:16:22Z"), or "-"
/// for none (the epoch or earlier). Thread-safe (pure).
std::string cli_time(std::chrono::system_clock::time_point t);

/// Prints "shoal <command> <what>: <e.describe()>" to stderr and returns 1: the exit status of a
/// command whose arguments were accepted but whose work failed. `E` is any error type with
/// `describe()` (storage::error, workers::error). Thread-safe.
template <class E> int report_failure(std::string_view command, std::string_view what, const E& e) {
  std::fprintf(stderr, "shoal %.*s %.*s: %s\n", static_cast<int>(command.size()), command.data(),
               static_cast<int>(what.size()), what.data(), e.describe().c_str());
  return 1;
}

/// Sets up spdlog from `c.log` (level, optional rotating file) plus SPDLOG_LEVEL env overrides.
void init_logging(const workers::config& c);

/// A subcommand's body: returns the process exit status.
using command_fn = std::function<int()>;

// Registration functions, one per subcommand file (workers/cmd/<name>.cpp): each adds its
// subcommand to `app` and, from the subcommand's callback, sets `run` to the body to execute.
// Declare them here, e.g.: void add_records_command(CLI::App&, global_options&, command_fn&);
void add_catalog_command(CLI::App&, global_options&, command_fn&);
void add_records_command(CLI::App&, global_options&, command_fn&);
void add_send_command(CLI::App&, global_options&, command_fn&);
void add_persistor_command(CLI::App&, global_options&, command_fn&);
void add_init_command(CLI::App&, global_options&, command_fn&);
void add_etl_command(CLI::App&, global_options&, command_fn&);
void add_run_command(CLI::App&, global_options&, command_fn&);
void add_worker_command(CLI::App&, global_options&, command_fn&);
void add_keys_command(CLI::App&, global_options&, command_fn&);
void add_supervisor_command(CLI::App&, global_options&, command_fn&);
void add_status_command(CLI::App&, global_options&, command_fn&);

} // namespace shoal::cmd
