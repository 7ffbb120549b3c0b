#include "tests/support/shoal_process.hpp"

#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"

#include <csignal>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <thread>

namespace shoal::tests {

workers::child_process spawn_shoal(const std::vector<std::string>& args,
                                   const std::vector<std::pair<std::string, std::string>>& env,
                                   const std::filesystem::path& log) {
  workers::child_options o;
  o.argv.push_back(shoal_binary());
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  o.env = env;
  o.output = log;
  auto c = workers::child_process::spawn(o);
  if (!c)
    throw std::runtime_error("cannot start shoal: " + c.error().describe());
  return std::move(*c);
}

int wait_exit(workers::child_process& c, std::chrono::milliseconds timeout) {
  if (auto st = c.wait(timeout))
    return *st;
  c.signal(SIGKILL);
  (void)c.wait();
  return -1;
}

std::string slurp(const std::filesystem::path& file) {
  // A /proc file of a process that exits while it is read fails with ESRCH, and libstdc++'s
  // filebuf throws that from underflow whatever the stream's exception mask: the file is gone
  // then, so it reads as "" (as a file that cannot be opened does).
  try {
    std::ifstream in(file, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  } catch (const std::ios_base::failure&) {
    return {};
  }
}

bool wait_for_text(const std::filesystem::path& file, const std::string& text,
                   std::chrono::milliseconds timeout) {
  return eventually([&] { return slurp(file).find(text) != std::string::npos; }, timeout, std::chrono::milliseconds(20));
}

} // namespace shoal::tests
