// shoal_test_azurite: starts and stops the pinned Azurite for CTest fixtures and benchmarks.
//
//   shoal_test_azurite start --state DIR --azurite PATH [--tls] [--in-memory]
//   shoal_test_azurite stop  --state DIR
//
// start: a fresh workspace DIR/workspace, free loopback ports, Azurite detached in its own
// session (output in DIR/workspace/azurite.log, so CTest does not wait on our pipes); once it
// listens, DIR/pid and DIR/connection_string are written (and DIR/cert.pem, the CA file, with
// --tls). --in-memory: Azurite's data in its memory only (azurite_options::in_memory; the
// e2e bench, as `shoal run` starts it). stop: SIGINT to the pid, SIGKILL after 15 s, workspace
// removed.

#include "tests/support/pid_file.hpp"
#include "workers/local_azurite.hpp"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

namespace fs = std::filesystem;

namespace {

int usage() {
  std::cerr << "usage: shoal_test_azurite start --state DIR --azurite PATH [--tls] [--in-memory]\n"
               "       shoal_test_azurite stop --state DIR\n";
  return 2;
}

int stop(const fs::path& state) {
  if (shoal::tests::stop_from_pid_file(state, "azurite", std::chrono::seconds(15)) != 0) {
    std::error_code ec;
    fs::remove_all(state / "workspace", ec);
  }
  return 0;
}

int start(const fs::path& state, const std::string& azurite, bool tls, bool in_memory) {
  if (fs::exists(state / "pid"))
    stop(state); // a leftover from an interrupted run
  std::error_code ec;
  fs::remove_all(state / "workspace", ec);
  fs::remove(state / "connection_string", ec);
  shoal::workers::azurite_options opts;
  opts.executable = azurite;
  opts.workspace = state / "workspace";
  opts.tls = tls;
  opts.in_memory = in_memory;
  opts.detach = true;
  auto p = shoal::workers::azurite_process::start(opts);
  if (!p) {
    std::cerr << "shoal_test_azurite: " << p.error().describe() << '\n';
    return 1;
  }
  if (tls)
    fs::copy_file(opts.workspace / "cert.pem", state / "cert.pem",
                  fs::copy_options::overwrite_existing);
  std::ofstream(state / "connection_string") << p->connection_string() << '\n';
  const auto& ports = p->ports();
  std::cout << "azurite " << p->pid() << " listening on 127.0.0.1:" << ports[0] << ','
            << ports[1] << ',' << ports[2] << (tls ? " (https)" : "") << "; state " << state
            << '\n';
  std::ofstream(state / "pid") << p->release() << '\n';
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2)
    return usage();
  std::string cmd = argv[1], azurite;
  fs::path state;
  bool tls = false, in_memory = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--state" && i + 1 < argc)
      state = argv[++i];
    else if (a == "--azurite" && i + 1 < argc)
      azurite = argv[++i];
    else if (a == "--tls")
      tls = true;
    else if (a == "--in-memory")
      in_memory = true;
    else
      return usage();
  }
  if (state.empty())
    return usage();
  if (cmd == "start")
    return azurite.empty() ? usage() : start(state, azurite, tls, in_memory);
  if (cmd == "stop")
    return stop(state);
  return usage();
}
