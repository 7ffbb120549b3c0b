#include "actors/cell.hpp"

#include "actors/system.hpp"

#include <spdlog/spdlog.h>

#include <chrono>

namespace shoal::actors::detail {

namespace {
// Sets current_cell() for the scope (handlers may run nested under manual execution).
struct current_scope {
  cell* prev;
  explicit current_scope(cell* c) : prev(current_cell()) { current_cell() = c; }
  ~current_scope() { current_cell() = prev; }
};

void bump(std::atomic<std::uint64_t>& a) { // single writer: no locked RMW needed
  a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}
} // namespace

cell*& current_cell() {
  thread_local cell* c = nullptr;
  return c;
}

cell::cell(actor_system& sys, address addr, mailbox_options mb, factory_fn make, std::shared_ptr<cell> parent)
    : sys_(sys), addr_(std::move(addr)), addr_str_(addr_.to_string()), mb_(mb), make_(std::move(make)),
      parent_(parent), manual_(sys.mode() == execution::manual) {}

cell::~cell() {
  if (thread_.joinable()) {
    if (thread_.get_id() == std::this_thread::get_id())
      thread_.detach();
    else
      thread_.join();
  }
}

actor_stats cell::stats() const {
  actor_stats s;
  s.processed = processed_.load(std::memory_order_relaxed);
  s.queued = mb_.size();
  s.dropped = mb_.dropped();
  s.rejected = mb_.rejected();
  s.failures = failures_.load(std::memory_order_relaxed);
  s.restarts = restarts_.load(std::memory_order_relaxed);
  return s;
}

// -- producers -----------------------------------------------------------------------------------

result<void> cell::post(transport::envelope& e) {
  // Blocking is impossible without a thread of our own (manual execution) or when an actor
  // writes to its own full mailbox (it would wait for itself): both fall back to reject.
  bool may_block = !manual_ && current_cell() != this;
  switch (mb_.push(e, may_block)) {
  case mailbox::push_result::ok:
  case mailbox::push_result::dropped:
    return {};
  case mailbox::push_result::full:
    return make_error(errc::mailbox_full, addr_str_ + ": mailbox full");
  case mailbox::push_result::closed:
    break;
  }
  return make_error(errc::actor_down, addr_str_ + " has stopped");
}

bool cell::post_control(std::function<void(cell&)> fn) {
  return mb_.push_control([this, fn = std::move(fn)] { fn(*this); });
}

// -- lifecycle -----------------------------------------------------------------------------------

result<void> cell::instantiate() {
  state_.store(cell_state::starting, std::memory_order_release);
  quit_ = false;
  fail_.reset();
  current_scope scope(this);
  actor_config cfg(this);
  result<void> r;
  try {
    inst_ = make_(cfg);
    r = inst_->init();
    if (r) {
      behavior b = inst_->make_behavior();
      handlers_ = std::move(b.entries_);
      last_ = nullptr;
    }
  } catch (const std::exception& e) {
    r = make_error(errc::init_failed, std::string("exception: ") + e.what());
  } catch (...) {
    r = make_error(errc::init_failed, "unknown exception");
  }
  if (!r) {
    drop_instance(false);
    return make_error(errc::init_failed, addr_str_ + ": " + r.error().message);
  }
  state_.store(cell_state::running, std::memory_order_release);
  return {};
}

result<void> cell::start_threaded() {
  std::promise<result<void>> started;
  auto fut = started.get_future();
  thread_ = std::thread([this, &started] { thread_main(&started); });
  auto r = fut.get();
  if (!r)
    join();
  return r;
}

result<void> cell::start_inline() {
  auto r = instantiate();
  if (!r) {
    state_.store(cell_state::stopped, std::memory_order_release);
    mb_.close();
  }
  return r;
}

void cell::thread_main(std::promise<result<void>>* started) {
  current_cell() = this;
  {
    auto r = instantiate();
    if (!r) {
      state_.store(cell_state::stopped, std::memory_order_release);
      mb_.close();
      started->set_value(std::move(r)); // `started` dies with the spawner's frame after this
      current_cell() = nullptr;
      return;
    }
    started->set_value({});
  }
  for (;;) {
    auto st = state_.load(std::memory_order_acquire);
    if (st == cell_state::stopped)
      break;
    bool leftover = st == cell_state::running && batch_pos_ < batch_n_;
    if (!leftover) {
      std::optional<std::chrono::nanoseconds> max_wait;
      if (st == cell_state::running) {
        if (auto due = next_due()) {
          auto now = sys_.clock().now();
          max_wait = *due > now ? *due - now : duration(0);
        }
      }
      if (!max_wait || max_wait->count() > 0)
        mb_.wait(st == cell_state::running, max_wait);
    }
    step();
  }
  current_cell() = nullptr;
}

void cell::stop() {
  if (current_cell() == this) {
    quit_ = true; // stopping oneself: after the current handler
    return;
  }
  if (manual_) {
    current_scope scope(this);
    finish_stop();
    return;
  }
  post_control([](cell& c) { c.finish_stop(); });
  join();
}

void cell::join() {
  std::lock_guard lk(join_m_);
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id())
    thread_.join();
}

void cell::drop_instance(bool call_on_stop) {
  if (inst_ && call_on_stop) {
    try {
      inst_->on_stop();
    } catch (const std::exception& e) {
      spdlog::error("actor {}: on_stop threw: {}", addr_str_, e.what());
    } catch (...) {
      spdlog::error("actor {}: on_stop threw", addr_str_);
    }
  }
  // Children die with their parent (most recent first), as in OTP.
  for (auto it = children_.rbegin(); it != children_.rend(); ++it)
    if (auto c = it->lock())
      sys_.stop(actor_ref(c));
  children_.clear();
  timers_.clear();
  schedule_.clear();
  pending_.clear();
  handlers_.clear();
  last_ = nullptr;
  inst_.reset();
}

void cell::finish_stop() {
  auto st = state_.load(std::memory_order_acquire);
  if (st == cell_state::stopped)
    return;
  drop_instance(st == cell_state::running);
  batch_.clear();
  batch_n_ = 0;
  batch_pos_ = 0;
  state_.store(cell_state::stopped, std::memory_order_release);
  mb_.close();
  sys_.unregister(this);
}

void cell::restart() {
  auto st = state_.load(std::memory_order_acquire);
  if (st == cell_state::stopped)
    return;
  drop_instance(st == cell_state::running);
  bump(restarts_);
  auto r = instantiate();
  if (!r) {
    state_.store(cell_state::running, std::memory_order_release);
    on_failure(r.error());
  }
}

void cell::on_failure(error e) {
  auto st = state_.load(std::memory_order_acquire);
  if (st != cell_state::running && st != cell_state::starting)
    return;
  state_.store(cell_state::failed, std::memory_order_release);
  bump(failures_);
  // The one log line for this failure; supervisors log their decisions without the reason.
  spdlog::error("actor {} failed ({}): {}", addr_str_, to_string(e.code), e.message);
  if (auto p = parent_.lock()) {
    auto self = shared_from_this();
    bool queued = p->post_control([self, e](cell& pc) {
      if (pc.state_.load(std::memory_order_acquire) != cell_state::running || !pc.inst_) {
        self->stop(); // parent is failing or restarting: it will not decide; the child goes
        return;
      }
      try {
        pc.inst_->on_child_failed(actor_ref(self), e);
      } catch (const std::exception& ex) {
        pc.fail_ = error{errc::handler_failed, std::string("on_child_failed threw: ") + ex.what()};
      } catch (...) {
        pc.fail_ = error{errc::handler_failed, "on_child_failed threw"};
      }
      pc.after_callback();
    });
    if (queued)
      return;
  }
  finish_stop(); // unsupervised (or orphaned): a failed actor stops
}

void cell::after_callback() {
  if (fail_) {
    auto e = std::move(*fail_);
    fail_.reset();
    quit_ = false;
    on_failure(std::move(e));
  } else if (quit_) {
    quit_ = false;
    finish_stop();
  }
}

// -- the owner loop ------------------------------------------------------------------------------

bool cell::step() {
  if (state_.load(std::memory_order_acquire) == cell_state::stopped)
    return false;
  current_scope scope(this);
  bool want_user = state_.load(std::memory_order_relaxed) == cell_state::running && batch_pos_ >= batch_n_;
  auto taken = mb_.take(batch_, ctl_, want_user);
  if (taken > 0) {
    batch_n_ = taken;
    batch_pos_ = 0;
  }
  bool did = taken > 0 || !ctl_.empty();
  if (!ctl_.empty()) {
    auto ctl = std::move(ctl_);
    ctl_.clear();
    for (auto& f : ctl) {
      f();
      if (state_.load(std::memory_order_acquire) == cell_state::stopped)
        return true;
    }
  }
  // Due timers first: a request whose deadline passed has timed out even if its reply is
  // already queued behind it (that reply then counts as late).
  auto now = sys_.clock().now();
  if (state_.load(std::memory_order_acquire) == cell_state::running && !schedule_.empty() &&
      schedule_.begin()->first <= now) {
    did = true;
    fire_timers(now);
  }
  if (state_.load(std::memory_order_acquire) == cell_state::running && batch_pos_ < batch_n_) {
    did = true;
    process_user();
  }
  return did;
}

void cell::process_user() {
  while (batch_pos_ < batch_n_) {
    auto& e = batch_[batch_pos_++];
    dispatch(e);
    if (quit_ || fail_) {
      after_callback();
      if (state_.load(std::memory_order_acquire) != cell_state::running)
        return;
    }
  }
}

void cell::dispatch(transport::envelope& e) {
  bump(processed_);
  if (e.kind == reply_kind) {
    handle_reply(e);
    return;
  }
  // Manual execution keeps time on the manual clock only; requesters time out by their timers.
  if (!manual_ && e.deadline_ns && transport::unix_now_ns() > *e.deadline_ns) {
    sys_.count_expired();
    return;
  }
  const behavior::entry* h = nullptr;
  if (last_ && last_->kind == e.kind) {
    h = last_;
  } else {
    for (auto& en : handlers_)
      if (en.kind == e.kind) {
        h = &en;
        break;
      }
    if (h)
      last_ = h;
  }
  bool want_reply = e.corr.has_value();
  reply_buf_.clear();
  if (!h) {
    if (e.kind == stop_request::kind) {
      quit_ = true;
      if (want_reply) {
        encode_reply_ok(reply_buf_);
        send_reply(e);
      }
      return;
    }
    sys_.count_unknown_kind();
    spdlog::debug("actor {}: no handler for kind '{}' (dropped)", addr_str_, e.kind);
    if (want_reply) {
      encode_reply_error(reply_buf_, error{errc::unknown_kind, addr_str_ + ": no handler for " + e.kind});
      send_reply(e);
    }
    return;
  }
  handler_call call{e, zone_, want_reply, reply_buf_};
  std::optional<error> err;
  current_env_ = &e;
  struct reset_env {
    const transport::envelope*& p;
    ~reset_env() { p = nullptr; }
  } reset{current_env_};
  try {
    err = h->fn(call);
  } catch (const std::exception& ex) {
    err = error{errc::handler_failed, "exception in handler for " + e.kind + ": " + ex.what()};
  } catch (...) {
    err = error{errc::handler_failed, "unknown exception in handler for " + e.kind};
  }
  if (want_reply) {
    if (err && err->code == errc::handler_failed)
      encode_reply_error(reply_buf_, *err);
    send_reply(e);
  }
  if (err) {
    if (err->code == errc::decode) { // bad input is the sender's fault, not the actor's
      spdlog::warn("actor {}: {}", addr_str_, err->message);
      return;
    }
    if (!fail_)
      fail_ = std::move(err);
  }
}

void cell::send_reply(const transport::envelope& req) {
  transport::envelope r;
  r.id = transport::new_message_id();
  r.kind = reply_kind;
  r.from = addr_str_;
  r.corr = req.corr;
  r.ts_ns = transport::unix_now_ns();
  r.body = std::move(reply_buf_);
  reply_buf_ = {};
  auto to = address::parse(req.from);
  if (!to) {
    sys_.count_undeliverable();
    return;
  }
  if (auto res = sys_.route(*to, std::move(r)); !res) {
    sys_.count_undeliverable();
    spdlog::debug("actor {}: reply to {} undeliverable: {}", addr_str_, req.from, res.error().message);
  }
}

void cell::handle_reply(const transport::envelope& e) {
  auto it = e.corr ? pending_.find(*e.corr) : pending_.end();
  if (it == pending_.end()) {
    sys_.count_late_reply(); // timed out already (or from before a restart)
    return;
  }
  auto done = std::move(it->second.done);
  cancel_timer(it->second.timer);
  pending_.erase(it);
  try {
    done(&e);
  } catch (const std::exception& ex) {
    fail_ = error{errc::handler_failed, std::string("exception in reply callback: ") + ex.what()};
  } catch (...) {
    fail_ = error{errc::handler_failed, "unknown exception in reply callback"};
  }
}

// -- timers and pending requests -----------------------------------------------------------------

timer_id cell::start_timer(duration delay, duration period, std::function<void()> fn) {
  auto id = next_timer_++;
  auto due = sys_.clock().now() + (delay.count() > 0 ? delay : duration(0));
  timers_.emplace(id, timer{due, period, std::move(fn)});
  schedule_.emplace(due, id);
  return id;
}

bool cell::cancel_timer(timer_id id) {
  auto it = timers_.find(id);
  if (it == timers_.end())
    return false;
  schedule_.erase({it->second.due, id});
  timers_.erase(it);
  return true;
}

std::optional<time_point> cell::next_due() const {
  if (schedule_.empty() || state_.load(std::memory_order_acquire) != cell_state::running)
    return std::nullopt;
  return schedule_.begin()->first;
}

void cell::fire_timers(time_point now) {
  while (!schedule_.empty() && state_.load(std::memory_order_acquire) == cell_state::running) {
    auto [due, id] = *schedule_.begin();
    if (due > now)
      break;
    schedule_.erase(schedule_.begin());
    auto it = timers_.find(id);
    if (it == timers_.end())
      continue;
    std::function<void()> fn;
    if (it->second.period.count() > 0) {
      it->second.due = due + it->second.period;
      schedule_.emplace(it->second.due, id);
      fn = it->second.fn;
    } else {
      fn = std::move(it->second.fn);
      timers_.erase(it);
    }
    try {
      fn();
    } catch (const std::exception& ex) {
      fail_ = error{errc::handler_failed, std::string("exception in timer: ") + ex.what()};
    } catch (...) {
      fail_ = error{errc::handler_failed, "unknown exception in timer"};
    }
    if (quit_ || fail_)
      after_callback();
  }
}

void cell::add_pending(const transport::message_id& corr, duration timeout,
                       std::function<void(const transport::envelope*)> done) {
  auto t = start_timer(timeout, duration(0), [this, corr] {
    auto it = pending_.find(corr);
    if (it == pending_.end())
      return;
    auto d = std::move(it->second.done);
    pending_.erase(it);
    d(nullptr);
  });
  pending_.emplace(corr, pending{t, std::move(done)});
}

} // namespace shoal::actors::detail
