#include "actors/actor.hpp"

#include "actors/cell.hpp"
#include "actors/system.hpp"

#include <algorithm>

namespace shoal::actors {

transport::envelope& detail::scratch_envelope() {
  thread_local transport::envelope e;
  return e;
}

// -- actor_ref -----------------------------------------------------------------------------------

const address& actor_ref::addr() const { return cell_->addr(); }
bool actor_ref::alive() const { return cell_ && cell_->alive(); }
actor_stats actor_ref::stats() const { return cell_ ? cell_->stats() : actor_stats{}; }

// -- actor ---------------------------------------------------------------------------------------

const address& actor::self_address() const { return cell_->addr(); }
actor_ref actor::self() const { return actor_ref(cell_->shared_from_this()); }
std::shared_ptr<detail::cell> actor::self_cell() const { return cell_->shared_from_this(); }
actor_system& actor::sys() const { return cell_->sys(); }
time_point actor::now() const { return cell_->sys().clock().now(); }
const std::string& actor::current_sender() const { return cell_->current_sender(); }
msgpack::zone& actor::zone() const { return cell_->zone(); }

void actor::init_envelope(transport::envelope& e, std::string_view kind) const {
  cell_->sys().init_envelope(e, kind, cell_->addr_string());
}

result<void> actor::post(const actor_ref& to, transport::envelope& e) {
  if (!to)
    return make_error(errc::invalid_argument, "empty actor_ref");
  return to.cell_->post(e);
}

result<void> actor::post(const address& to, transport::envelope&& e) {
  return cell_->sys().route(to, std::move(e));
}

result<void> actor::post_request(const actor_ref& to, const address* addr, transport::envelope&& e,
                                 duration timeout, reply_fn done) {
  auto corr = transport::new_message_id();
  e.corr = corr;
  // Receivers drop it unprocessed after this (Unix ns).
  e.deadline_ns = e.ts_ns + static_cast<std::uint64_t>(std::max<std::int64_t>(timeout.count(), 0));
  auto r = addr ? post(*addr, std::move(e)) : post(to, std::move(e));
  if (!r)
    return r;
  // The reply is handled on this actor's strand, so registering after the send cannot race.
  cell_->add_pending(corr, timeout, std::move(done));
  return {};
}

timer_id actor::start_timer(duration delay, std::function<void()> fn) {
  return cell_->start_timer(delay, duration(0), std::move(fn));
}

timer_id actor::start_periodic_timer(duration period, std::function<void()> fn) {
  if (period.count() <= 0)
    period = duration(1);
  return cell_->start_timer(period, period, std::move(fn));
}

bool actor::cancel_timer(timer_id id) { return cell_->cancel_timer(id); }
void actor::quit() { cell_->request_quit(); }
void actor::fail(error reason) { cell_->request_fail(std::move(reason)); }
void actor::on_child_failed(const actor_ref& child, const error&) { sys().stop(child); }

} // namespace shoal::actors
