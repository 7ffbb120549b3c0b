#include "storage/server_clock.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

namespace shoal::storage {

using namespace std::chrono;

server_clock::server_clock(std::function<steady::time_point()> steady_now)
    : steady_now_(std::move(steady_now)) {}

void server_clock::observe(wall::time_point server_time, steady::time_point sent,
                           steady::time_point received, nanoseconds resolution) {
  const auto server_ns = duration_cast<nanoseconds>(server_time.time_since_epoch());
  // The stamp happened in [sent, received]; the true reading was in [t, t + resolution).
  const nanoseconds lower = server_ns - duration_cast<nanoseconds>(received.time_since_epoch());
  const nanoseconds upper =
      server_ns + resolution - duration_cast<nanoseconds>(sent.time_since_epoch());
  std::lock_guard lock(mu_);
  lower_offset_ = lower_offset_ ? std::max(*lower_offset_, lower) : lower;
  upper_offset_ = upper_offset_ ? std::min(*upper_offset_, upper) : upper;
  // Rate drift or a server clock step can make the bounds cross; trust the newest sample then.
  if (*upper_offset_ < *lower_offset_) {
    lower_offset_ = lower;
    upper_offset_ = upper;
  }
}

bool server_clock::known() const {
  std::lock_guard lock(mu_);
  return lower_offset_.has_value();
}

std::optional<server_clock::wall::time_point> server_clock::lower_bound_at(steady::time_point at) const {
  std::lock_guard lock(mu_);
  if (!lower_offset_)
    return std::nullopt;
  const nanoseconds t = duration_cast<nanoseconds>(at.time_since_epoch()) + *lower_offset_;
  return wall::time_point(duration_cast<wall::duration>(t));
}

std::optional<server_clock::wall::time_point> server_clock::upper_bound_at(steady::time_point at) const {
  std::lock_guard lock(mu_);
  if (!upper_offset_)
    return std::nullopt;
  const nanoseconds t = duration_cast<nanoseconds>(at.time_since_epoch()) + *upper_offset_;
  return wall::time_point(duration_cast<wall::duration>(t));
}

nanoseconds server_clock::uncertainty() const {
  std::lock_guard lock(mu_);
  if (!lower_offset_ || !upper_offset_)
    return hours(1);
  return *upper_offset_ - *lower_offset_;
}

std::optional<system_clock::time_point> etag_time(std::string_view etag) {
  auto start = etag.find("datetime'");
  if (start == std::string_view::npos)
    return std::nullopt;
  start += 9;
  auto end = etag.find('\'', start);
  if (end == std::string_view::npos)
    return std::nullopt;
  std::string text;
  std::string_view raw = etag.substr(start, end - start);
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '%' && i + 2 < raw.size() && raw[i + 1] == '3' && (raw[i + 2] == 'A' || raw[i + 2] == 'a')) {
      text += ':';
      i += 2;
    } else {
      text += raw[i];
    }
  }
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0, consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &consumed) != 6)
    return std::nullopt;
  std::int64_t ticks = 0; // 100 ns
  std::size_t i = static_cast<std::size_t>(consumed);
  if (i < text.size() && text[i] == '.') {
    int digits = 0;
    for (++i; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
      if (digits < 7) {
        ticks = ticks * 10 + (text[i] - '0');
        ++digits;
      }
    }
    for (; digits < 7; ++digits)
      ticks *= 10;
  }
  if (i >= text.size() || text[i] != 'Z')
    return std::nullopt;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 60)
    return std::nullopt;
  auto tp = sys_days{ymd} + hours{h} + minutes{mi} + seconds{s};
  return system_clock::time_point(duration_cast<system_clock::duration>(tp.time_since_epoch()) +
                                  duration_cast<system_clock::duration>(nanoseconds(ticks * 100)));
}

} // namespace shoal::storage
