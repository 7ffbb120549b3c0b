#pragma once
// Starts and stops the pinned Azurite (deploy/local) as a child process: for `shoal run` with
// UseDevelopmentStorage=true, for the CTest fixtures and for the benchmarks.

#include "workers/error.hpp"

#include <sys/types.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <string>

namespace shoal::workers {

/// How to start Azurite. Every field but `executable` and `workspace` has a default.
struct azurite_options {
  std::filesystem::path executable; ///< deploy/local/node_modules/.bin/azurite
  std::filesystem::path workspace;  ///< --location; created if missing
  std::filesystem::path log_file;   ///< Azurite's stdout/stderr; default workspace/azurite.log
  std::string host = "127.0.0.1";   ///< listen address of all three services
  /// blob, queue, table ports; 0 = pick a free loopback port each.
  std::array<int, 3> ports{0, 0, 0};
  /// Serve HTTPS with a self-signed certificate made for 127.0.0.1 (workspace/cert.pem is then
  /// the CA file clients must trust). Needs the `openssl` command.
  bool tls = false;
  /// Keep blobs, queues and tables in memory only (`--inMemoryPersistence`): nothing is written
  /// under `workspace` but the log, and everything is gone when the process stops. Cheaper per
  /// request (no extent files, no fsync, no periodic re-serialisation of the table database);
  /// for storage that lives as long as one run. Azurite caps the extents it holds at half the
  /// machine's memory and refuses writes above it.
  bool in_memory = false;
  /// Put Azurite in its own session so a terminal's Ctrl-C or a test runner's kill of our
  /// process group does not reach it; stop() or the owner's destructor still stops it.
  bool detach = false;
  std::chrono::milliseconds start_timeout{60'000}; ///< until all three ports accept connections
  std::chrono::milliseconds stop_timeout{15'000};  ///< after SIGINT, before SIGKILL
};

/// A running Azurite child. Move-only; the destructor stops it unless release()d.
/// Owner only (not thread-safe).
class azurite_process {
public:
  /// Starts Azurite with `--silent --disableTelemetry --skipApiVersionCheck` and waits until it
  /// listens. Errors: not_found (executable missing: run deploy/setup.sh), io (fork/exec or
  /// openssl failed; Azurite exited during start-up — the message quotes its log), timeout.
  [[nodiscard]] static result<azurite_process> start(const azurite_options& opts);

  azurite_process(azurite_process&& other) noexcept;
  azurite_process& operator=(azurite_process&& other) noexcept;
  azurite_process(const azurite_process&) = delete;
  azurite_process& operator=(const azurite_process&) = delete;
  ~azurite_process();

  /// SIGINT (Azurite saves its data and exits), SIGKILL after stop_timeout. Idempotent.
  void stop();
  /// Forget the child without stopping it (it keeps running); returns its pid.
  pid_t release() noexcept;

  pid_t pid() const noexcept { return pid_; }
  const std::array<int, 3>& ports() const noexcept { return ports_; }
  /// Full connection string for the devstoreaccount1 account on our ports (http or https).
  const std::string& connection_string() const noexcept { return connection_string_; }

private:
  azurite_process() = default;
  pid_t pid_ = -1;
  std::array<int, 3> ports_{};
  std::string connection_string_;
  std::chrono::milliseconds stop_timeout_{15'000};
};

/// Sends SIGINT to `pid` and waits up to `timeout` for it to exit, then SIGKILL.
/// Works for a process that is not our child (by polling kill(pid, 0)). Thread-safe.
void stop_process(pid_t pid, std::chrono::milliseconds timeout);

/// True when something accepts TCP connections on host:port (a 1 s bounded connect).
bool port_listening(const std::string& host, int port);

/// The well-known key of the emulator account devstoreaccount1 (public, documented by Azure).
inline constexpr const char* devstore_account_key =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

} // namespace shoal::workers
