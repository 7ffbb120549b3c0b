// `shoal run`'s live progress: see run_progress.hpp.

#include "workers/cmd/run_progress.hpp"

#include "workers/persistor/format.hpp"

#include <unistd.h>

#include <cstring>
#include <fstream>
#include <vector>

namespace shoal::cmd::run_detail {

std::optional<send_progress> parse_send_progress_line(std::string_view text) {
  // "%zu records, %lf MB, %lf rec/s, acked %zu[, resent %zu]"
  std::string s(text);
  send_progress p;
  double rate = 0;
  int used = 0;
  if (std::sscanf(s.c_str(), "%zu records, %lf MB, %lf rec/s, acked %zu%n", &p.read, &p.megabytes,
                  &rate, &p.acked, &used) != 4)
    return std::nullopt;
  std::size_t resent = 0;
  if (std::sscanf(s.c_str() + used, ", resent %zu", &resent) == 1)
    p.resent = resent;
  return p;
}

std::optional<send_progress> read_send_progress(const std::filesystem::path& log) {
  std::ifstream in(log, std::ios::binary);
  if (!in)
    return std::nullopt;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  const std::streamoff from = size > 4096 ? size - 4096 : 0;
  in.seekg(from);
  std::string tail(static_cast<std::size_t>(size - from), '\0');
  in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
  tail.resize(static_cast<std::size_t>(in.gcount()));
  // Newest complete-looking segment first.
  std::size_t end = tail.size();
  while (end > 0) {
    std::size_t start = tail.find_last_of("\r\n", end - 1);
    const std::size_t b = start == std::string::npos ? 0 : start + 1;
    if (end > b)
      if (auto p = parse_send_progress_line(std::string_view(tail).substr(b, end - b)))
        return p;
    if (start == std::string::npos)
      break;
    end = start;
  }
  return std::nullopt;
}

std::optional<ledger_totals> read_ledger(sqlite3* db, const std::string& persistor) {
  ledger_totals t;
  sqlite3_stmt* st = nullptr;
  const char* sql = "SELECT blob, rows_loaded, duplicates, quarantined FROM shoal_etl_ledger "
                    "WHERE blob LIKE ?";
  if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) != SQLITE_OK) {
    // Before the first ETL process created it there is no ledger: nothing loaded yet.
    const bool missing = std::strstr(sqlite3_errmsg(db), "no such table") != nullptr;
    sqlite3_finalize(st);
    return missing ? std::optional<ledger_totals>(t) : std::nullopt;
  }
  const std::string pattern = "%-" + persistor + "-%";
  sqlite3_bind_text(st, 1, pattern.c_str(), -1, SQLITE_TRANSIENT);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const auto* text = sqlite3_column_text(st, 0);
    std::string blob = text ? reinterpret_cast<const char*>(text) : "";
    ++t.blobs;
    t.loaded += sqlite3_column_int64(st, 1);
    t.duplicates += sqlite3_column_int64(st, 2);
    t.quarantined += sqlite3_column_int64(st, 3);
    // {dest}/{YYYY}/{MM}[/{DD}[/{HH}]]/{file}: any partition depth, old hour names included.
    if (auto day = workers::persistor::partition_date(workers::persistor::partition_of_blob(blob)); !day.empty())
      ++t.blobs_per_day[day];
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE)
    return std::nullopt;
  return t;
}

std::pair<double, double> rate_window::add(double t_s, double acked, double accounted) {
  samples_.push_back({t_s, acked, accounted});
  while (samples_.size() > 2 && samples_.front().t < t_s - 5.0)
    samples_.pop_front();
  const auto& a = samples_.front();
  const double dt = t_s - a.t;
  if (dt <= 0)
    return {0, 0};
  return {(acked - a.acked) / dt, (accounted - a.accounted) / dt};
}

std::string grouped(std::int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

progress_display::progress_display(std::FILE* out, std::size_t records_in)
    : out_(out), records_in_(records_in), tty_(::isatty(::fileno(out)) == 1) {}

void progress_display::draw(const snapshot& s, bool final) {
  const auto n = [](std::size_t v) { return grouped(static_cast<std::int64_t>(v)); };
  const std::size_t read = s.send ? s.send->read : 0;
  const std::size_t acked = s.send ? s.send->acked : 0;
  const std::size_t resent = s.send ? s.send->resent : 0;
  const auto& q = s.queue;
  const auto& l = s.ledger;
  std::string blobs = q.ok ? n(q.registered) + " committed (" + n(q.pending) + " pending, " +
                                 n(q.claimed) + " claimed, " + n(q.done) + " done, " +
                                 n(q.dead) + " dead)"
                           : "? (work table not readable)";
  if (!tty_) {
    std::fprintf(out_,
                 "[%6.1f s] sent %s/%s, persisted %s (%s/s)%s | blobs %s | loaded %s, "
                 "quarantined %s, already loaded %s (%s/s)\n",
                 s.t_s, n(read).c_str(), n(records_in_).c_str(), n(acked).c_str(),
                 grouped(static_cast<std::int64_t>(s.send_rate)).c_str(),
                 resent ? (", resent " + n(resent)).c_str() : "", blobs.c_str(),
                 grouped(l.loaded).c_str(), grouped(l.quarantined).c_str(),
                 grouped(l.duplicates).c_str(),
                 grouped(static_cast<std::int64_t>(s.etl_rate)).c_str());
    std::fflush(out_);
    return;
  }
  if (drawn_lines_ > 0)
    std::fprintf(out_, "\033[%dF", drawn_lines_); // back to the first line of the block
  std::fprintf(out_, "\033[K  %6.1f s\n", s.t_s);
  std::fprintf(out_, "\033[K  send      %s of %s sent, %s persisted (acked after commit)%s  %s rec/s%s\n",
               n(read).c_str(), n(records_in_).c_str(), n(acked).c_str(),
               resent ? (", " + n(resent) + " resent").c_str() : "",
               grouped(static_cast<std::int64_t>(s.send_rate)).c_str(),
               s.send_done ? "  done" : "");
  std::fprintf(out_, "\033[K  blobs     %s\n", blobs.c_str());
  std::fprintf(out_, "\033[K  ETL       %s loaded, %s quarantined, %s already loaded  %s rec/s\n",
               grouped(l.loaded).c_str(), grouped(l.quarantined).c_str(),
               grouped(l.duplicates).c_str(),
               grouped(static_cast<std::int64_t>(s.etl_rate)).c_str());
  drawn_lines_ = 4;
  if (final)
    drawn_lines_ = 0;
  std::fflush(out_);
}

} // namespace shoal::cmd::run_detail
