// shoal_chaos: the chaos scenarios and the soak outside CTest, for bench/run.sh chaos|soak.
//
//   shoal_chaos run [--size short|full] [--table FILE] [SCENARIO...]   (default: all, full)
//   shoal_chaos soak [--minutes 30] [--rate 150] [--every-s 10] [--table FILE]
//
// Storage comes from $SHOAL_TEST_AZURITE (Azurite's state folder) and $SHOAL_TEST_FAULT_PROXY
// (the fault proxy's), as bench/run.sh starts them; the shoal executable from $SHOAL_BINARY
// or the build tree. Prints progress, then the table (also written to --table FILE); exits 1
// when a scenario found a problem.

#include "tests/support/azurite.hpp"
#include "tests/system/chaos/chaos.hpp"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace shoal::tests;

int main(int argc, char** argv) {
  if (argc < 2 || (std::string(argv[1]) != "run" && std::string(argv[1]) != "soak")) {
    std::cerr << "usage: shoal_chaos run [--size short|full] [--table FILE] [SCENARIO...]\n"
                 "       shoal_chaos soak [--minutes N] [--rate R] [--every-s S] [--table FILE]\n";
    return 2;
  }
  const std::string cmd = argv[1];
  std::string size = "full", table_file;
  double minutes = 30, rate = 150, every = 10;
  std::vector<std::string> names;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--size" && i + 1 < argc) size = argv[++i];
    else if (a == "--table" && i + 1 < argc) table_file = argv[++i];
    else if (a == "--minutes" && i + 1 < argc) minutes = std::atof(argv[++i]);
    else if (a == "--rate" && i + 1 < argc) rate = std::atof(argv[++i]);
    else if (a == "--every-s" && i + 1 < argc) every = std::atof(argv[++i]);
    else names.push_back(a);
  }
  chaos::environment env = chaos::fixture_environment();
  env.keep = true;
  if (const char* az = std::getenv("SHOAL_TEST_AZURITE")) std::ifstream(fs::path(az) / "pid") >> env.azurite_pid;
  env.log = [](const std::string& line) { std::cout << line << std::endl; };
  fs::create_directories(env.work_dir);
  std::cout << "shoal_chaos: folders under " << env.work_dir << std::endl;
  std::string out;
  bool ok = true;
  if (cmd == "run") {
    if (names.empty()) names = chaos::scenario_names();
    const auto sz = size == "short" ? chaos::run_size::short_run() : chaos::run_size::full_run();
    std::vector<chaos::result> results;
    for (const auto& n : names) {
      results.push_back(chaos::run_scenario(n, env, sz));
      const auto& r = results.back();
      std::cout << chaos::format_table({r});
      for (const auto& p : r.problems) std::cout << "  problem: " << p << "\n";
      for (const auto& note : r.notes) std::cout << "  note: " << note.substr(0, 4000) << "\n";
      ok = ok && r.problems.empty();
    }
    out = chaos::format_table(results);
  } else {
    auto r = chaos::run_soak(env, std::chrono::seconds(static_cast<long>(minutes * 60)), rate,
                             std::chrono::seconds(static_cast<long>(every)));
    out = chaos::format_soak(r);
    for (const auto& p : r.problems) out += "problem: " + p + "\n";
    out += "every sample: " + r.csv.string() + "\n";
    ok = r.problems.empty();
  }
  std::cout << "\n" << out;
  if (!table_file.empty()) std::ofstream(table_file) << out;
  return ok ? 0 : 1;
}
