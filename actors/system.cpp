#include "actors/system.hpp"

#include "actors/cell.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace shoal::actors {

namespace {
constexpr std::string_view client_name = "$client";
} // namespace

actor_system::actor_system(system_options opts)
    : opts_(std::move(opts)), clock_(opts_.clock_source ? opts_.clock_source : std::make_shared<steady_clock_source>()),
      client_address_(std::string(client_name) + '@' + opts_.process + '@' + opts_.host) {}

actor_system::~actor_system() { shutdown(); }

void actor_system::init_envelope(transport::envelope& e, std::string_view kind, const std::string& from) const {
  // Every field is (re)set: `e` may be a recycled envelope still holding an old message.
  e.v = 1;
  e.id = transport::new_message_id();
  e.kind.assign(kind);
  e.from.assign(from);
  e.to.reset();
  e.corr.reset();
  e.ts_ns = transport::unix_now_ns();
  e.deadline_ns.reset();
  e.attempt.reset();
  e.gen.reset();
  if (!e.hdr.empty())
    e.hdr.clear();
}

// -- lifecycle -----------------------------------------------------------------------------------

result<actor_ref> actor_system::spawn_cell(spawn_options opts, actor_factory make, std::shared_ptr<detail::cell> parent) {
  if (!make)
    return make_error(errc::invalid_argument, "no factory");
  if (opts.name.find('@') != std::string::npos || (!opts.name.empty() && opts.name.front() == '$'))
    return make_error(errc::invalid_argument, "actor name must not contain '@' or start with '$': " + opts.name);
  std::shared_ptr<detail::cell> c;
  {
    std::lock_guard lk(m_);
    if (shutting_down_)
      return make_error(errc::actor_down, "system is shutting down");
    if (opts.name.empty())
      opts.name = "actor-" + std::to_string(next_id_++);
    if (registry_.contains(opts.name))
      return make_error(errc::duplicate_name, "an actor named '" + opts.name + "' is already running");
    c = std::make_shared<detail::cell>(*this, local_address(opts.name), opts.mailbox, std::move(make), parent);
    registry_.emplace(opts.name, c); // reserve the name while init runs
    cells_.push_back(c);
  }
  auto r = opts_.mode == execution::manual ? c->start_inline() : c->start_threaded();
  if (!r) {
    std::lock_guard lk(m_);
    if (auto it = registry_.find(opts.name); it != registry_.end() && it->second == c)
      registry_.erase(it);
    std::erase(cells_, c);
    return std::unexpected(r.error());
  }
  if (parent)
    parent->add_child(c);
  return actor_ref(c);
}

void actor_system::stop(const actor_ref& ref) {
  if (!ref)
    return;
  auto c = ref.cell_;
  c->stop();
  if (detail::current_cell() != c.get() && !c->alive()) {
    std::lock_guard lk(m_);
    std::erase(cells_, c);
  }
}

void actor_system::shutdown() {
  std::vector<std::shared_ptr<detail::cell>> cells;
  {
    std::lock_guard lk(m_);
    shutting_down_ = true;
    cells = cells_;
  }
  // Roots first, newest first: each takes its children down with it; then whatever is left.
  for (auto it = cells.rbegin(); it != cells.rend(); ++it)
    if (!(*it)->parent())
      stop(actor_ref(*it));
  for (auto it = cells.rbegin(); it != cells.rend(); ++it)
    stop(actor_ref(*it));
  {
    std::lock_guard lk(m_);
    cells_.clear();
    registry_.clear();
  }
  std::map<transport::message_id, std::shared_ptr<detail::reply_slot>> ext;
  {
    std::lock_guard lk(m_);
    ext.swap(external_);
  }
  for (auto& [id, slot] : ext) {
    std::lock_guard lk(slot->m);
    slot->done = true;
    slot->err = error{errc::actor_down, "system shut down"};
    slot->cv.notify_all();
  }
  std::lock_guard lk(m_);
  shutting_down_ = false; // the system may be reused (spawn works again)
}

void actor_system::unregister(detail::cell* c) {
  std::lock_guard lk(m_);
  if (auto it = registry_.find(c->addr().name); it != registry_.end() && it->second.get() == c)
    registry_.erase(it);
}

// -- registry ------------------------------------------------------------------------------------

result<actor_ref> actor_system::lookup(std::string_view name) const {
  std::lock_guard lk(m_);
  auto it = registry_.find(name);
  if (it == registry_.end() || !it->second->alive())
    return make_error(errc::not_found, "no actor named '" + std::string(name) + "'");
  return actor_ref(it->second);
}

std::vector<std::string> actor_system::names() const {
  std::lock_guard lk(m_);
  std::vector<std::string> out;
  for (auto& [n, c] : registry_)
    out.push_back(n);
  return out;
}

// -- routing -------------------------------------------------------------------------------------

result<void> actor_system::post(const actor_ref& to, transport::envelope& e) {
  if (!to)
    return make_error(errc::invalid_argument, "empty actor_ref");
  return to.cell_->post(e);
}

result<void> actor_system::route(const address& to, transport::envelope&& e) {
  if (to.process == opts_.process && to.host == opts_.host) {
    if (to.name == client_name) {
      complete_external(std::move(e));
      return {};
    }
    std::shared_ptr<detail::cell> c;
    {
      std::lock_guard lk(m_);
      if (auto it = registry_.find(to.name); it != registry_.end())
        c = it->second;
    }
    if (!c)
      return make_error(errc::not_found, "no actor named '" + to.name + "'");
    return c->post(std::move(e));
  }
  std::shared_ptr<const remote_router> r;
  {
    std::lock_guard lk(m_);
    r = router_;
  }
  if (!r || !*r)
    return make_error(errc::no_route, "no gateway for " + to.to_string());
  e.to = to.to_string();
  return (*r)(std::move(e));
}

result<void> actor_system::deliver(transport::envelope&& e) {
  if (!e.to)
    return make_error(errc::invalid_argument, "envelope without 'to'");
  auto a = address::parse(*e.to);
  if (!a)
    return make_error(errc::invalid_argument, "malformed address '" + *e.to + "'");
  if (a->process != opts_.process || a->host != opts_.host)
    return make_error(errc::no_route, *e.to + " is not in this process");
  return route(*a, std::move(e));
}

void actor_system::set_remote_router(remote_router r) {
  auto p = r ? std::make_shared<const remote_router>(std::move(r)) : nullptr;
  std::lock_guard lk(m_);
  router_ = std::move(p);
}

// -- requests from outside actors ----------------------------------------------------------------

std::shared_ptr<detail::reply_slot> actor_system::post_external_request(const actor_ref* to, const address* addr,
                                                                  transport::envelope&& e, duration timeout) {
  auto slot = std::make_shared<detail::reply_slot>();
  slot->corr = transport::new_message_id();
  slot->deadline = clock_->now() + timeout;
  e.corr = slot->corr;
  e.deadline_ns = e.ts_ns + static_cast<std::uint64_t>(std::max<std::int64_t>(timeout.count(), 0));
  {
    std::lock_guard lk(m_);
    external_.emplace(slot->corr, slot);
  }
  auto r = to ? post(*to, std::move(e)) : route(*addr, std::move(e));
  if (!r) {
    {
      std::lock_guard lk(m_);
      external_.erase(slot->corr);
    }
    std::lock_guard lk(slot->m);
    slot->done = true;
    slot->err = r.error();
  }
  return slot;
}

void actor_system::complete_external(transport::envelope&& e) {
  std::shared_ptr<detail::reply_slot> s;
  if (e.corr) {
    std::lock_guard lk(m_);
    if (auto it = external_.find(*e.corr); it != external_.end()) {
      s = it->second;
      external_.erase(it);
    }
  }
  if (!s) {
    count_late_reply();
    return;
  }
  {
    std::lock_guard lk(s->m);
    s->reply = std::move(e);
    s->done = true;
  }
  s->cv.notify_all();
}

void actor_system::expire_external(time_point now) {
  std::vector<std::shared_ptr<detail::reply_slot>> expired;
  {
    std::lock_guard lk(m_);
    for (auto it = external_.begin(); it != external_.end();) {
      if (it->second->deadline <= now) {
        expired.push_back(it->second);
        it = external_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& s : expired) {
    std::lock_guard lk(s->m);
    s->done = true;
    s->cv.notify_all();
  }
}

result<const transport::envelope*> actor_system::await(detail::reply_slot& slot) {
  std::unique_lock lk(slot.m);
  if (!slot.done) {
    if (opts_.mode == execution::manual)
      return make_error(errc::not_ready, "no reply yet: run the system");
    for (;;) {
      if (slot.done)
        break;
      auto now = clock_->now();
      if (now >= slot.deadline)
        break;
      slot.cv.wait_for(lk, slot.deadline - now);
    }
    if (!slot.done) {
      lk.unlock();
      bool removed;
      {
        std::lock_guard g(m_);
        removed = external_.erase(slot.corr) > 0;
      }
      lk.lock();
      if (removed)
        slot.done = true; // timed out: a reply arriving now is counted as late
      else
        slot.cv.wait(lk, [&] { return slot.done; }); // a reply is being completed right now
    }
  }
  if (slot.err)
    return std::unexpected(*slot.err);
  if (!slot.reply)
    return make_error(errc::timeout, "request timed out");
  return &*slot.reply;
}

// -- manual execution ----------------------------------------------------------------------------

std::size_t actor_system::run_until_idle() {
  std::size_t steps = 0;
  std::vector<std::shared_ptr<detail::cell>> snapshot;
  for (;;) {
    bool any = false;
    auto now = clock_->now();
    {
      std::lock_guard lk(m_);
      snapshot = cells_;
      for (auto& [id, s] : external_)
        if (s->deadline <= now)
          any = true;
    }
    if (any)
      expire_external(now);
    for (auto& c : snapshot)
      if (c->step()) {
        any = true;
        ++steps;
      }
    if (!any)
      break;
  }
  std::lock_guard lk(m_);
  std::erase_if(cells_, [](const auto& c) { return !c->alive(); });
  return steps;
}

std::optional<time_point> actor_system::next_due() const {
  std::optional<time_point> best;
  std::vector<std::shared_ptr<detail::cell>> snapshot;
  {
    std::lock_guard lk(m_);
    snapshot = cells_;
    for (auto& [id, s] : external_)
      if (!best || s->deadline < *best)
        best = s->deadline;
  }
  for (auto& c : snapshot)
    if (auto d = c->next_due(); d && (!best || *d < *best))
      best = d;
  return best;
}

system_stats actor_system::stats() const {
  system_stats s;
  s.late_replies = late_replies_.load(std::memory_order_relaxed);
  s.unknown_kind = unknown_kind_.load(std::memory_order_relaxed);
  s.undeliverable = undeliverable_.load(std::memory_order_relaxed);
  s.expired = expired_.load(std::memory_order_relaxed);
  return s;
}

} // namespace shoal::actors
