#include "actors/supervisor.hpp"

#include "actors/cell.hpp"
#include "actors/system.hpp"

#include <spdlog/spdlog.h>

namespace shoal::actors {

supervisor::supervisor(actor_config& cfg, supervisor_options opts, std::vector<child_spec> children)
    : actor(cfg), opts_(std::move(opts)), specs_(std::move(children)) {}

result<void> supervisor::init() {
  children_.clear();
  for (auto& spec : specs_) {
    auto r = sys().spawn_cell(spec.opts, spec.make, self_cell());
    if (!r) {
      stop_children();
      return std::unexpected(r.error());
    }
    children_.push_back(*r);
  }
  return {};
}

behavior supervisor::make_behavior() {
  return {
      [this](const which_children&) {
        std::vector<std::string> names;
        for (auto& c : children_)
          names.push_back(c.addr().name);
        return names;
      },
  };
}

void supervisor::stop_children() {
  for (auto it = children_.rbegin(); it != children_.rend(); ++it)
    sys().stop(*it);
}

void supervisor::on_stop() { stop_children(); }

void supervisor::on_child_failed(const actor_ref& child, const error&) {
  auto t = now();
  while (!restarts_.empty() && t - restarts_.front() >= opts_.period)
    restarts_.pop_front();
  if (restarts_.size() >= opts_.max_restarts) {
    // Intensity exceeded: take the children down and fail, so our parent decides (OTP).
    stop_children();
    error e{errc::escalated, self_address().to_string() + ": more than " + std::to_string(opts_.max_restarts) +
                                 " restarts in " +
                                 std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(opts_.period).count()) +
                                 " ms"};
    if (!self_cell()->parent() && opts_.on_escalate)
      opts_.on_escalate(e);
    fail(std::move(e));
    return;
  }
  restarts_.push_back(t);
  auto restart = [](detail::cell& c) { c.restart(); };
  if (opts_.strategy == restart_strategy::one_for_one) {
    spdlog::info("supervisor {}: restarting {} ({} of {} allowed)", self_address().to_string(),
                 child.addr().to_string(), restarts_.size(), opts_.max_restarts);
    child.cell_->post_control(restart);
  } else {
    spdlog::info("supervisor {}: {} failed, restarting all {} children ({} of {} allowed)",
                 self_address().to_string(), child.addr().to_string(), children_.size(), restarts_.size(),
                 opts_.max_restarts);
    for (auto& c : children_)
      c.cell_->post_control(restart);
  }
}

} // namespace shoal::actors
