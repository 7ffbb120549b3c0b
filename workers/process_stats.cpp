#include "workers/process_stats.hpp"

#include <nlohmann/json.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace shoal::workers {
namespace {

double seconds(const timeval& tv) { return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6; }

std::optional<storage::service> service_of(std::string_view s) {
  if (s == "blob")
    return storage::service::blob;
  if (s == "queue")
    return storage::service::queue;
  if (s == "table")
    return storage::service::table;
  return std::nullopt;
}

} // namespace

process_stats current_process_stats(std::string_view command) {
  process_stats s;
  s.command = std::string(command);
  s.pid = static_cast<long>(::getpid());
  rusage ru{};
  if (::getrusage(RUSAGE_SELF, &ru) == 0)
    s.cpu_s = seconds(ru.ru_utime) + seconds(ru.ru_stime);
  s.requests = storage::process_request_counts();
  return s;
}

void write_process_stats(std::string_view command) {
  const char* dir = std::getenv(stats_dir_env);
  if (!dir || !*dir)
    return;
  rusage ru{};
  (void)::getrusage(RUSAGE_SELF, &ru);
  nlohmann::json req = nlohmann::json::array();
  for (const auto& c : storage::process_request_counts())
    req.push_back({{"service", std::string(storage::to_string(c.svc))},
                   {"op", c.op},
                   {"resource", c.resource},
                   {"count", c.count}});
  const nlohmann::json j{{"command", std::string(command)},
                         {"pid", static_cast<long>(::getpid())},
                         {"cpu_user_s", seconds(ru.ru_utime)},
                         {"cpu_system_s", seconds(ru.ru_stime)},
                         {"requests", std::move(req)}};
  const std::filesystem::path base =
      std::filesystem::path(dir) / (std::string(command) + "-" + std::to_string(::getpid()));
  const auto tmp = base.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump() << '\n';
    if (!out) {
      std::fprintf(stderr, "shoal %.*s: cannot write %s\n", static_cast<int>(command.size()), command.data(),
                   tmp.c_str());
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, base.string() + ".json", ec);
  if (ec)
    std::fprintf(stderr, "shoal %.*s: cannot write %s.json: %s\n", static_cast<int>(command.size()),
                 command.data(), base.c_str(), ec.message().c_str());
}

std::vector<process_stats> read_process_stats(const std::filesystem::path& dir) {
  std::vector<process_stats> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() != ".json")
      continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    const auto j = nlohmann::json::parse(text.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object())
      continue;
    process_stats s;
    s.command = j.value("command", std::string());
    s.pid = j.value("pid", 0L);
    s.cpu_s = j.value("cpu_user_s", 0.0) + j.value("cpu_system_s", 0.0);
    if (const auto it = j.find("requests"); it != j.end() && it->is_array())
      for (const auto& r : *it) {
        if (!r.is_object())
          continue;
        auto svc = service_of(r.value("service", std::string()));
        if (!svc)
          continue;
        s.requests.push_back({*svc, r.value("op", std::string()), r.value("resource", std::string()),
                              r.value("count", std::uint64_t{0})});
      }
    out.push_back(std::move(s));
  }
  return out;
}

std::optional<double> process_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text))
    return std::nullopt;
  // Fields after the command name in parentheses (which may hold spaces): state is field 3,
  // utime and stime are fields 14 and 15 (clock ticks).
  const auto close = text.rfind(')');
  if (close == std::string::npos)
    return std::nullopt;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14)
      utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15)
      stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  const long ticks = ::sysconf(_SC_CLK_TCK);
  if (ticks <= 0)
    return std::nullopt;
  return static_cast<double>(utime + stime) / static_cast<double>(ticks);
}

} // namespace shoal::workers
