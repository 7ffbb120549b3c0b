#pragma once
// The chaos suite (issue 16): scenarios that run the whole pipeline — `shoal send` → `shoal
// persistor` → work table → `shoal supervisor` fleets of ETL workers → SQL — while faults are
// injected (processes killed, storage failing through the fault proxy, a full disk, PostgreSQL
// restarted, hosts cut off), and check the result from outside: every good record in SQL exactly
// once, the bad ones (and only they) quarantined, nothing pending or claimed in the work table.
//
// One implementation serves both sizes: the CTest version (chaos_it.cpp, label chaos) runs
// run_size::short_run(), `bench/run.sh chaos` runs run_size::full_run() through the shoal_chaos
// executable (chaos_main.cpp) and prints format_table(); `bench/run.sh soak` runs run_soak().

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace shoal::tests::chaos {

/// Where the scenarios find their programs and storage.
struct environment {
  std::string shoal;                     ///< the `shoal` executable
  std::string source_dir;                ///< the repository (deploy/local, tests/support)
  std::string azurite_connection_string; ///< Azurite itself (the harness observes through it)
  std::string proxy_connection_string;   ///< the same account through the fault proxy
  int proxy_control_port = 0;            ///< the fault proxy's control port
  int azurite_pid = 0;                   ///< measured by the soak when known (> 0)
  std::filesystem::path work_dir;        ///< each scenario makes a folder here
  bool keep = false;                     ///< keep a passing scenario's folder (logs)
  std::function<void(const std::string&)> log; ///< progress lines; may be empty
};

/// The environment of the test fixtures (tests/support/azurite.hpp: Azurite and the fault
/// proxy as CTest or bench/run.sh started them), a fresh work folder name under the temporary
/// directory (not created), `keep` from $SHOAL_TEST_KEEP and no log callback.
environment fixture_environment();

/// How much load and how long the faults last: the only difference between the CTest
/// version and the bench.
struct run_size {
  std::chrono::milliseconds load{20'000};  ///< the producer sends for this long …
  double records_per_s = 100;              ///< … at this steady rate
  std::chrono::milliseconds outage{10'000}; ///< the storage outage
  std::chrono::milliseconds cut{20'000};    ///< a host cut off (from the other, or from storage)
  std::chrono::milliseconds disk_full{8'000}; ///< the SQLite disk full
  /// The tmpfs the SQLite database lives on in sqlite-disk-full: room for the run's rows and a
  /// WAL of up to wal_autocheckpoint (10,000) pages once the filler is gone, so the disk is full
  /// only while the scenario says so.
  std::size_t sqlite_fs_mib = 16;
  std::chrono::milliseconds postgres_down{6'000}; ///< PostgreSQL stopped
  std::chrono::milliseconds settle{180'000}; ///< after the producer ends, the pipeline must finish within this
  /// A few minutes for all scenarios together: the `chaos` CTest label.
  static run_size short_run();
  /// About 15 minutes for all scenarios on a 2-core machine: `bench/run.sh chaos`.
  static run_size full_run();
};

/// What one scenario did and found.
struct result {
  std::string name;
  std::size_t records = 0;     ///< sent by the producer (good + bad)
  std::size_t bad = 0;         ///< of those, records that fail the dataset's schema
  std::map<std::string, std::uint64_t> faults; ///< kind → how many were injected
  std::size_t kills = 0;       ///< processes killed with SIGKILL
  std::optional<double> recovery_s; ///< last fault's end → every record sent by then in SQL
  std::size_t lost = 0;        ///< good records not in SQL at the end
  std::size_t duplicates = 0;  ///< rows beyond one per good record
  std::size_t quarantined = 0; ///< distinct records in the quarantine (dead letters)
  std::size_t dead = 0;        ///< ETL records dead in the work table
  std::size_t pending = 0;     ///< ETL records pending at the end
  std::size_t claimed = 0;     ///< ETL records claimed at the end
  std::uint64_t storage_requests = 0; ///< through the fault proxy (0 when not used)
  double seconds = 0;          ///< wall time of the scenario
  std::vector<std::string> notes;    ///< facts worth a line (e.g. how long orphans ran)
  std::vector<std::string> problems; ///< every expectation that failed; empty = passed
  bool skipped = false;        ///< could not run here (not root, no network namespaces)
  std::string skip_reason;
};

/// Every scenario, in table order.
std::vector<std::string> scenario_names();

/// Runs scenario `name` at `size`. Never throws; an unknown name or a set-up failure is a
/// problem in the result. Blocks for the scenario's duration.
result run_scenario(const std::string& name, const environment& env, const run_size& size);

/// The table: scenario, records, faults injected by kind, kills, recovery time, records lost,
/// duplicate rows, dead letters (Markdown).
std::string format_table(const std::vector<result>& results);

/// One sample of the soak: resident memory and open descriptors of each process.
struct soak_sample {
  double t_s = 0;
  std::map<std::string, std::pair<long, long>> processes; ///< role → (RSS KiB, open fds)
  std::size_t rows = 0;                                   ///< records in SQL by then
};

/// The soak: steady load for a long time, every process measured.
struct soak_result {
  std::vector<soak_sample> samples;
  std::size_t records = 0;
  std::vector<std::string> problems; ///< growth without bound, lost or duplicate records
  std::filesystem::path csv;         ///< every sample, one row per process
};

/// Runs the pipeline (directly on Azurite) under steady load at `records_per_s` for
/// `duration`, sampling every `every`. Blocks for the duration.
soak_result run_soak(const environment& env, std::chrono::seconds duration, double records_per_s,
                     std::chrono::seconds every);

/// RSS and descriptors per process at start, middle and end (Markdown).
std::string format_soak(const soak_result& r);

} // namespace shoal::tests::chaos
