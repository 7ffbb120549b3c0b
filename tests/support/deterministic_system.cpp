#include "tests/support/deterministic_system.hpp"

namespace shoal::tests {

namespace {
actors::system_options manual_options(std::string process, std::string host,
                                      std::shared_ptr<actors::manual_clock> clock) {
  actors::system_options o;
  o.process = std::move(process);
  o.host = std::move(host);
  o.clock_source = std::move(clock);
  o.mode = actors::execution::manual;
  return o;
}
} // namespace

deterministic_system::deterministic_system(std::string process, std::string host)
    : clock_(std::make_shared<actors::manual_clock>()),
      sys_(manual_options(std::move(process), std::move(host), clock_)) {}

void deterministic_system::advance(actors::duration d) {
  auto target = clock_->now() + d;
  sys_.run_until_idle();
  // Step from due time to due time so that what fires first runs (and may schedule more) first.
  for (;;) {
    auto next = sys_.next_due();
    if (!next || *next > target)
      break;
    clock_->set(*next);
    sys_.run_until_idle();
  }
  clock_->set(target);
  sys_.run_until_idle();
}

} // namespace shoal::tests
