#pragma once
// Processes seen from /proc, for tests that kill parts of a running fleet (tests/system).

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <vector>

namespace shoal::tests {

/// Every live process whose parent chain leads to `root`, `root` first, from /proc (a snapshot:
/// processes may exit or start meanwhile). Thread-safe.
std::vector<pid_t> process_tree(pid_t root);

/// The direct children of `parent` whose command line contains `needle` ("" = all). Thread-safe.
std::vector<pid_t> children_of(pid_t parent, const std::string& needle = "");

/// True while `pid` exists and is not a zombie. Thread-safe.
bool process_alive(pid_t pid);

/// Resident set size (VmRSS) of `pid` in KiB and its open file descriptors (/proc/pid/fd
/// entries); -1 each when the process is gone or unreadable. Thread-safe.
long rss_kib(pid_t pid);
long open_fds(pid_t pid);

/// argv of `pid` joined by spaces ("" when gone). Thread-safe.
std::string command_line(pid_t pid);

} // namespace shoal::tests
