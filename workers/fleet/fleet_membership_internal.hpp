#pragma once
// Private to workers/fleet (fleet_membership.cpp, fleet_membership_messaging.cpp): the
// membership's class, its commands and the helpers both halves use. Not part of the fleet's
// interface; include it from nowhere else.

#include "workers/fleet/fleet_membership.hpp"

#include "actors/message.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "transport/curve.hpp"
#include "transport/socket.hpp"
#include "workers/fleet/assignment.hpp"
#include "workers/fleet/fleet_protocol.hpp"
#include "workers/fleet/fleet_table.hpp"
#include "workers/version.hpp"

#include <spdlog/spdlog.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <unistd.h>
namespace shoal::workers::fleet::detail {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

inline std::string random_instance() {
  std::random_device rd;
  std::uint64_t v = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

template <class M> transport::envelope make_envelope(const M& m, std::string_view kind, const std::string& from) {
  transport::envelope e;
  e.id = transport::new_message_id();
  e.kind = std::string(kind);
  e.from = from;
  e.ts_ns = transport::unix_now_ns();
  actors::encode_body(m, e.body);
  return e;
}

inline std::vector<std::uint32_t> all_shards(std::uint32_t n) {
  std::vector<std::uint32_t> v(n);
  for (std::uint32_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

inline bool is_tcp(const std::string& ep) { return ep.rfind("tcp://", 0) == 0; }

// A command from an API thread to the messaging thread.
struct command {
  enum class type { work, workers } what = type::work;
  std::string queue;
  std::int32_t shard = -1;
  std::uint32_t count = 0;
};

// What the lease thread last learned, for the messaging thread.
struct lease_view {
  bool held = false;
  std::optional<coordinator_row> row;     // current holder's row (ours when held)
  std::vector<host_row> seed;             // fresh host rows at the moment we took the lease
  std::uint64_t generation = 0;           // +1 whenever held/holder changes
};

// -- the membership ----------------------------------------------------------------------------

class fleet_membership final : public membership {
public:
  fleet_membership(const config& cfg, std::string host, std::uint32_t workers, membership_hooks hooks,
                   fleet_table table)
      : cfg_(cfg), f_(cfg.fleet), host_(std::move(host)), instance_(random_instance()),
        from_("membership@supervisor@" + host_), hooks_(std::move(hooks)), table_(std::move(table)),
        workers_(workers) {}

  ~fleet_membership() override { stop(); }

  // -- setup (before threads start) ------------------------------------------------------------
  result<void> setup_security_and_bind();
  result<void> start_threads(milliseconds first_assign_wait);

  // -- membership API --------------------------------------------------------------------------
  void set_local_workers(std::uint32_t n) override {
    {
      std::lock_guard lock(mu_);
      workers_ = n;
    }
    push({command::type::workers, {}, -1, n});
  }
  void announce_work(const std::string& queue, std::int32_t shard, std::uint32_t count) override {
    push({command::type::work, queue, shard, count});
  }
  host_assignment assignment() const override {
    std::lock_guard lock(mu_);
    return assignment_;
  }
  std::vector<host_view> hosts() const override {
    std::lock_guard lock(mu_);
    if (view_.empty()) return {host_view{host_, advertised_, workers_, assignment_.shards, coordinator_.load(), 0}};
    return view_;
  }
  bool is_coordinator() const override { return coordinator_.load(); }
  void stop() override;

private:
  void push(command c) {
    std::lock_guard lock(cmd_mu_);
    commands_.push_back(std::move(c));
  }

  // -- lease thread ----------------------------------------------------------------------------
  void lease_loop();
  void lease_cycle();
  void wake_lease() {
    {
      std::lock_guard lock(lease_mu_);
      lease_wake_ = true;
    }
    lease_cv_.notify_all();
  }

  // -- messaging thread ------------------------------------------------------------------------
  void run();
  void on_role_change(const lease_view& v);
  void handle_router();
  void handle_dealer();
  void handle_monitor();
  void handle_commands();
  void coordinator_tick(steady::time_point now);
  void member_tick(steady::time_point now);
  void rebalance(bool force);
  void note_fleet_shape(const std::vector<assignment_host>& hosts, const shard_map& next);
  void send_assign(const std::string& host);
  void set_assignment(host_assignment a);
  void update_view();
  void connect_dealer(const coordinator_row& row);
  void close_dealer();
  void refresh_allow_list();
  void deliver_local(const std::string& queue, std::int32_t shard, std::uint32_t count) {
    if (hooks_.on_work_available) hooks_.on_work_available(queue, shard, count);
  }
  fleet_join my_join() const;
  std::uint32_t workers() const {
    std::lock_guard lock(mu_);
    return workers_;
  }
  milliseconds hb() const { return milliseconds(f_.heartbeat_interval_ms); }
  milliseconds dead_after() const { return milliseconds(f_.heartbeat_interval_ms) * f_.heartbeat_liveness; }

  config cfg_;
  fleet_config f_;
  std::string host_;
  std::string instance_;
  std::string from_;
  membership_hooks hooks_;
  fleet_table table_;

  // security and sockets (messaging thread after start)
  std::optional<transport::curve_key_pair> keys_;
  std::string advertised_;               // our host_endpoint as others should connect to it
  fs::path allow_file_;
  std::string allow_text_;
  steady::time_point allow_checked_{};
  zmq::context_t ctx_{1};
  std::unique_ptr<transport::zap_authenticator> zap_;
  std::optional<transport::envelope_socket> router_;
  std::optional<transport::envelope_socket> dealer_;
  std::optional<zmq::socket_t> monitor_;
  int monitor_seq_ = 0;
  std::optional<coordinator_row> target_;  // coordinator the dealer talks to
  steady::time_point dealer_since_{}, last_from_coordinator_{}, last_heartbeat_sent_{};
  bool refused_logged_ = false;
  bool silence_logged_ = false;           // warned once about the coordinator's silence
  msgpack::zone zone_;

  // coordinator state (messaging thread)
  struct member {
    std::vector<std::uint8_t> rid;  // ROUTER routing id of its link (empty until it joins)
    std::string endpoint, public_key, instance;
    std::uint32_t workers = 0;
    steady::time_point last_seen{};
    std::vector<std::uint32_t> reported; // shards it said it holds
  };
  std::map<std::string, member> members_;
  shard_map current_;
  std::uint64_t lease_epoch_ = 0;
  std::uint32_t change_ = 0;
  std::uint32_t assigned_workers_ = 0;
  std::string shape_noted_;               // "hosts/workers" last checked against work.shards
  steady::time_point last_assign_sent_{};
  std::uint64_t seen_generation_ = 0;
  bool role_coordinator_ = false;
  bool have_role_ = false;

  // shared
  mutable std::mutex mu_;
  std::uint32_t workers_;
  host_assignment assignment_;
  bool assigned_once_ = false;
  std::vector<host_view> view_;
  std::atomic<bool> coordinator_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> stopped_{false};
  std::atomic<bool> lease_done_{false};

  // startup handshake
  std::mutex start_mu_;
  std::condition_variable start_cv_;
  enum class start_state { pending, assigned, refused } start_ = start_state::pending;
  std::string refusal_;

  std::mutex cmd_mu_;
  std::deque<command> commands_;

  std::mutex lease_mu_;
  std::condition_variable lease_cv_;
  bool lease_wake_ = false;
  lease_view lease_;              // guarded by lease_mu_
  std::optional<coordinator_row> held_; // lease thread only
  steady::time_point held_until_{};     // lease thread only
  std::optional<steady::time_point> lease_retry_at_; // lease thread only: another holder's lease ends

  std::thread lease_thread_, msg_thread_;
};

} // namespace shoal::workers::fleet::detail
