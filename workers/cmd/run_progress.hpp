#pragma once
// What `shoal run` watches while the pipeline runs, and how it shows it: the producer's
// progress (parsed from `shoal send --progress` output), the ETL queue of the work table
// (work_table::counts) and the SQLite ETL ledger of this run's blobs. Only workers/cmd/run*.cpp
// use this.

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace shoal::cmd::run_detail {

/// The last progress line of `shoal send`:
/// "N records, X MB, R rec/s, acked A[, resent S]" (segments separated by '\r' or '\n').
struct send_progress {
  std::size_t read = 0;   ///< records read from the input and sent at least once
  std::size_t acked = 0;  ///< acknowledged by the persistor = committed in a blob
  std::size_t resent = 0; ///< re-sends after an ack timeout
  double megabytes = 0;   ///< payload bytes read, in MB (10^6)
};

/// Parses one progress segment; nullopt if `text` is not one.
std::optional<send_progress> parse_send_progress_line(std::string_view text);
/// The newest progress segment in the last 4 KiB of `log`; nullopt when there is none yet.
std::optional<send_progress> read_send_progress(const std::filesystem::path& log);

/// The ETL ledger summed over the blobs of one run.
struct ledger_totals {
  std::int64_t blobs = 0, loaded = 0, duplicates = 0, quarantined = 0;
  std::map<std::string, std::int64_t> blobs_per_day; ///< "YYYY-MM-DD" → blobs
  std::int64_t accounted() const { return loaded + duplicates + quarantined; }
};

/// Sums shoal_etl_ledger rows whose blob name contains "-{persistor}-" (blob names are
/// {dest}/{YYYY}/{MM}/{DD}/{host}-{persistor}-{seq}.json, or of another partition depth; the
/// day of a month partition is its first). An empty total when the ledger
/// table does not exist yet; nullopt on another SQL error. Owner of `db` only.
std::optional<ledger_totals> read_ledger(sqlite3* db, const std::string& persistor);

/// The ETL queue's records created since the run started (counts minus the counts at start for
/// the settled states; pending and claimed as they are).
struct queue_view {
  std::size_t registered = 0; ///< blobs registered by this run (total − total at start)
  std::size_t pending = 0, claimed = 0, done = 0, dead = 0;
  bool ok = false; ///< false: the last read failed (display shows "?")
};

/// One observation of every stage.
struct snapshot {
  double t_s = 0;                     ///< seconds since the send started
  std::optional<send_progress> send;  ///< nullopt before the first progress line
  bool send_done = false;
  queue_view queue;
  ledger_totals ledger;
  double send_rate = 0;               ///< acked records/s over the last ~5 s
  double etl_rate = 0;                ///< loaded + duplicates + quarantined per s, last ~5 s
};

/// Windowed rates from successive snapshots (5 s window).
class rate_window {
public:
  /// Adds (t, acked, accounted) and returns {acked/s, accounted/s} over the window.
  std::pair<double, double> add(double t_s, double acked, double accounted);

private:
  struct sample {
    double t, acked, accounted;
  };
  std::deque<sample> samples_;
};

/// Draws snapshots: on a terminal a block of lines redrawn in place, otherwise one plain line
/// per `plain_every` (the caller decides when to call). Owner only.
class progress_display {
public:
  progress_display(std::FILE* out, std::size_t records_in);
  bool tty() const noexcept { return tty_; }
  /// Draws `s`. `final`: the last frame (a terminal block stays on screen).
  void draw(const snapshot& s, bool final = false);

private:
  std::FILE* out_;
  std::size_t records_in_;
  bool tty_ = false;
  int drawn_lines_ = 0;
};

/// "12,345" (thousands separators), for the display and the summary.
std::string grouped(std::int64_t v);

} // namespace shoal::cmd::run_detail
