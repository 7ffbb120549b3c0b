#include "tests/support/processes.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

namespace shoal::tests {
namespace {

namespace fs = std::filesystem;

struct stat_line {
  char state = '?';
  pid_t ppid = 0;
};

// /proc/PID/stat after the command name (which may hold spaces and parentheses).
std::optional<stat_line> read_stat(const std::string& pid) {
  std::ifstream f("/proc/" + pid + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return std::nullopt;
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 > stat.size()) return std::nullopt;
  std::istringstream rest(stat.substr(close + 2));
  stat_line s;
  rest >> s.state >> s.ppid;
  return s;
}

std::map<pid_t, pid_t> parents() {
  std::map<pid_t, pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const auto name = e.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    if (auto s = read_stat(name); s && s->state != 'Z') out[static_cast<pid_t>(std::stol(name))] = s->ppid;
  }
  return out;
}

} // namespace

std::vector<pid_t> process_tree(pid_t root) {
  const auto parent = parents();
  std::vector<pid_t> out{root};
  for (bool grew = true; grew;) {
    grew = false;
    for (const auto& [pid, pp] : parent)
      if (std::find(out.begin(), out.end(), pp) != out.end() && std::find(out.begin(), out.end(), pid) == out.end()) {
        out.push_back(pid);
        grew = true;
      }
  }
  return out;
}

std::vector<pid_t> children_of(pid_t parent, const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& [pid, pp] : parents())
    if (pp == parent && (needle.empty() || command_line(pid).find(needle) != std::string::npos)) out.push_back(pid);
  return out;
}

bool process_alive(pid_t pid) {
  auto s = read_stat(std::to_string(pid));
  return s && s->state != 'Z' && s->state != 'X';
}

long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  return -1;
}

long open_fds(pid_t pid) {
  std::error_code ec;
  long n = 0;
  for (fs::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end; !ec && it != end; it.increment(ec))
    ++n;
  return ec && n == 0 ? -1 : n;
}

std::string command_line(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  while (!s.empty() && s.back() == '\0') s.pop_back();
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

} // namespace shoal::tests
