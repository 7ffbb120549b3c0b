#pragma once
// Internal: the runtime slot of one actor (mailbox, instance, timers, pending requests, thread).
// Not part of the public API; included by actors/*.cpp only.

#include "actors/actor.hpp"

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace shoal::actors::detail {

/// Creates a fresh actor instance (used for the first start and every restart).
using factory_fn = actor_factory;

enum class cell_state : std::uint8_t { starting, running, failed, stopped };

/// The cell whose handler is running on this thread (nullptr outside handlers).
cell*& current_cell();

class cell : public std::enable_shared_from_this<cell> {
public:
  cell(actor_system& sys, address addr, mailbox_options mb, factory_fn make, std::shared_ptr<cell> parent);
  ~cell();

  // -- identity (any thread) --------------------------------------------------------------------
  const address& addr() const { return addr_; }
  const std::string& addr_string() const { return addr_str_; }
  actor_system& sys() const { return sys_; }
  bool alive() const { return state_.load(std::memory_order_acquire) != cell_state::stopped; }
  actor_stats stats() const;

  // -- producers (any thread) -------------------------------------------------------------------
  /// Queues a message. Errors: mailbox_full, actor_down. Drops (drop_newest) count as success.
  result<void> post(transport::envelope& e);
  result<void> post(transport::envelope&& e) { return post(e); }
  /// Queues a control function for the owner thread; false when the cell has stopped.
  bool post_control(std::function<void(cell&)> fn);

  // -- lifecycle (any thread) -------------------------------------------------------------------
  /// Threaded execution: starts the thread and waits for construction + init.
  result<void> start_threaded();
  /// Manual execution: constructs and initialises on the calling thread.
  result<void> start_inline();
  /// Asks the owner to stop and, in threaded mode, joins its thread (unless called from it).
  void stop();
  /// Joins the thread if it has ended or is ending (after stop/quit). Idempotent.
  void join();

  // -- manual execution (the single test thread) ------------------------------------------------
  /// Processes controls, due timers and queued mail; true if anything was done.
  bool step();
  /// Earliest timer due; nullopt if none (or not running).
  std::optional<time_point> next_due() const;

  // -- owner thread (called through `actor`) -----------------------------------------------------
  timer_id start_timer(duration delay, duration period, std::function<void()> fn);
  bool cancel_timer(timer_id id);
  void add_pending(const transport::message_id& corr, duration timeout,
                   std::function<void(const transport::envelope*)> done);
  void request_quit() { quit_ = true; }
  void request_fail(error e) { fail_ = std::move(e); }
  msgpack::zone& zone() { return zone_; }
  const std::string& current_sender() const {
    static const std::string none;
    return current_env_ ? current_env_->from : none;
  }
  actor* instance() const { return inst_.get(); }
  std::shared_ptr<cell> parent() const { return parent_.lock(); }

  /// Owner thread: restart the instance (supervisor decision). No-op once stopped.
  void restart();
  /// Owner thread: remember a child spawned by this actor (stopped with it).
  void add_child(std::shared_ptr<cell> c) { children_.push_back(std::move(c)); }

private:
  void thread_main(std::promise<result<void>>* started);
  result<void> instantiate();
  void run_controls();
  void process_user();
  void fire_timers(time_point now);
  void dispatch(transport::envelope& e);
  void handle_reply(const transport::envelope& e);
  void after_callback();
  void send_reply(const transport::envelope& req);
  void on_failure(error e);
  void finish_stop();
  void drop_instance(bool call_on_stop);

  actor_system& sys_;
  address addr_;
  std::string addr_str_;
  mailbox mb_;
  factory_fn make_;
  std::weak_ptr<cell> parent_;
  std::unique_ptr<actor> inst_;
  std::vector<behavior::entry> handlers_;
  const behavior::entry* last_ = nullptr; // one-entry dispatch cache
  std::atomic<cell_state> state_{cell_state::starting};
  bool quit_ = false;
  std::optional<error> fail_;
  bool manual_ = false;

  // owner-thread state
  std::vector<transport::envelope> batch_; // [0, batch_n_) taken mail; the rest recycled slots
  std::size_t batch_n_ = 0;
  std::size_t batch_pos_ = 0;
  std::vector<std::function<void()>> ctl_;
  msgpack::zone zone_;
  const transport::envelope* current_env_ = nullptr; // the message being handled
  std::vector<std::uint8_t> reply_buf_;
  struct timer {
    time_point due;
    duration period; // 0: one-shot
    std::function<void()> fn;
  };
  timer_id next_timer_ = 1;
  std::map<timer_id, timer> timers_;
  std::set<std::pair<time_point, timer_id>> schedule_;
  struct pending {
    timer_id timer;
    std::function<void(const transport::envelope*)> done;
  };
  std::map<transport::message_id, pending> pending_;
  std::vector<std::weak_ptr<cell>> children_; // spawned by this actor, in order

  // thread
  std::thread thread_;
  std::mutex join_m_;

  // counters (written by the owner, read by anyone)
  std::atomic<std::uint64_t> processed_{0}, failures_{0}, restarts_{0};
};

} // namespace shoal::actors::detail
