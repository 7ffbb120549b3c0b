// Two processes, one gateway each: tell and request across them over ipc and over tcp with
// CURVE, and watch the peer go down when killed and come back up when restarted.
//
// The peer is this same test binary re-executed with --gtest_filter=GatewayPeer.Serve and its
// configuration in SHOAL_GW_* environment variables; without them that test skips.
#include "actors/gateway.hpp"
#include "actors/system.hpp"
#include "tests/support/eventually.hpp"
#include "transport/curve.hpp"
#include "workers/child_process.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

extern char** environ;

namespace shoal::actors {
namespace {
using namespace std::chrono_literals;

// -- messages --------------------------------------------------------------------------------
struct echo_req {
  static constexpr std::string_view kind = "test.gw.echo_req";
  std::int32_t value = 0;
  MSGPACK_DEFINE(value);
};
struct echo_tell {
  static constexpr std::string_view kind = "test.gw.echo_tell";
  std::uint64_t seq = 0;
  MSGPACK_DEFINE(seq);
};
struct echo_back {
  static constexpr std::string_view kind = "test.gw.echo_back";
  std::uint64_t seq = 0;
  MSGPACK_DEFINE(seq);
};
struct kick {
  static constexpr std::string_view kind = "test.gw.kick";
  std::uint64_t count = 0;
  MSGPACK_DEFINE(count);
};

/// Lives in the peer: doubles requests, echoes tells back to their sender by address.
class echo final : public actor {
public:
  explicit echo(actor_config& cfg) : actor(cfg) {}

protected:
  behavior make_behavior() override {
    return {
        [](const echo_req& r) { return r.value * 2; },
        [this](const echo_tell& t) {
          if (auto to = address::parse(current_sender()))
            (void)tell(*to, echo_back{t.seq});
        },
    };
  }
};

/// Lives in the test process: sends numbered tells to the remote echo and checks the order of
/// what comes back.
class collector final : public actor {
public:
  struct shared {
    std::atomic<std::uint64_t> received{0};
    std::atomic<std::uint64_t> out_of_order{0};
    std::atomic<std::uint64_t> send_errors{0};
  };
  collector(actor_config& cfg, address remote, shared* s) : actor(cfg), remote_(std::move(remote)), s_(s) {}

protected:
  behavior make_behavior() override {
    return {
        [this](const kick& k) {
          for (std::uint64_t i = 0; i < k.count; ++i)
            if (!tell(remote_, echo_tell{++next_}))
              ++s_->send_errors;
        },
        [this](const echo_back& b) {
          if (b.seq != last_ + 1)
            ++s_->out_of_order;
          last_ = b.seq;
          ++s_->received;
        },
    };
  }

private:
  address remote_;
  shared* s_;
  std::uint64_t next_ = 0;
  std::uint64_t last_ = 0;
};

using shoal::tests::eventually; // tests/support/eventually.hpp

std::string env_or(const char* name, std::string fallback = {}) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : fallback;
}

// -- the peer process ------------------------------------------------------------------------

TEST(GatewayPeer, Serve) {
  auto bind = env_or("SHOAL_GW_BIND");
  if (bind.empty())
    GTEST_SKIP() << "only runs as the peer of the gateway tests";
  actor_system sys{system_options{.process = env_or("SHOAL_GW_PROCESS"), .host = "h"}};
  ASSERT_TRUE(sys.spawn<echo>({.name = "echo"}));
  gateway_options o{.bind = bind};
  peer_options parent{.process = "p", .host = "h", .endpoint = env_or("SHOAL_GW_PARENT")};
  if (auto secret = env_or("SHOAL_GW_SECRET"); !secret.empty()) {
    o.curve = transport::curve_key_pair{env_or("SHOAL_GW_PUBLIC"), secret};
    o.zap_allow_list = env_or("SHOAL_GW_ALLOW");
    parent.server_public_key = env_or("SHOAL_GW_PARENT_PUBLIC");
  }
  o.peers.push_back(parent);
  o.heartbeat_interval = 100ms;
  auto gw = gateway::start(sys, o);
  ASSERT_TRUE(gw) << gw.error().message;
  auto ppid = ::getppid();
  while (::getppid() == ppid) // serve until killed, or until the test process goes away
    std::this_thread::sleep_for(50ms);
  (*gw)->stop();
}

// -- the test process ------------------------------------------------------------------------

std::uint16_t free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

enum class link_kind { ipc, tcp_curve };

class GatewayTest : public ::testing::TestWithParam<link_kind> {
protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("shoal-gw-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    if (GetParam() == link_kind::ipc) {
      parent_ep_ = "ipc://" + (dir_ / "p.sock").string();
      child_ep_ = "ipc://" + (dir_ / "q.sock").string();
    } else {
      if (!transport::curve_available())
        GTEST_SKIP() << "libzmq without CURVE";
      parent_ep_ = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
      child_ep_ = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
      auto kp = transport::generate_curve_key_pair();
      auto kq = transport::generate_curve_key_pair();
      ASSERT_TRUE(kp && kq);
      kp_ = *kp;
      kq_ = *kq;
      std::ofstream(dir_ / "p.allow") << kq_.public_key << " peer q\n";
      std::ofstream(dir_ / "q.allow") << kp_.public_key << " parent p\n";
    }
  }
  void TearDown() override {
    kill_child();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  void start_child() {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e)
      if (std::string_view(*e).substr(0, 7) != "SHOAL_GW")
        env.emplace_back(*e);
    env.push_back("SHOAL_GW_BIND=" + child_ep_);
    env.push_back("SHOAL_GW_PARENT=" + parent_ep_);
    env.push_back("SHOAL_GW_PROCESS=q");
    if (GetParam() == link_kind::tcp_curve) {
      env.push_back("SHOAL_GW_SECRET=" + kq_.secret_key);
      env.push_back("SHOAL_GW_PUBLIC=" + kq_.public_key);
      env.push_back("SHOAL_GW_PARENT_PUBLIC=" + kp_.public_key);
      env.push_back("SHOAL_GW_ALLOW=" + (dir_ / "q.allow").string());
    }
    std::vector<char*> envp;
    for (auto& s : env)
      envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    std::string filter = "--gtest_filter=GatewayPeer.Serve";
    char* argv[] = {self.data(), filter.data(), nullptr};
    const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    ASSERT_GE(devnull, 0);
    workers::spawn_request req;
    req.path = self.c_str();
    req.argv = argv;
    req.envp = envp.data();
    req.stdout_fd = devnull;
    auto pid = workers::spawn_process(req);
    ::close(devnull);
    ASSERT_TRUE(pid) << pid.error().message;
    child_ = *pid;
  }
  void kill_child() {
    if (child_ > 0) {
      ::kill(child_, SIGKILL);
      int st = 0;
      ::waitpid(child_, &st, 0);
      child_ = -1;
    }
  }

  gateway_options parent_options() {
    gateway_options o{.bind = parent_ep_};
    peer_options q{.process = "q", .host = "h", .endpoint = child_ep_};
    if (GetParam() == link_kind::tcp_curve) {
      o.curve = kp_;
      o.zap_allow_list = dir_ / "p.allow";
      q.server_public_key = kq_.public_key;
    }
    o.peers.push_back(q);
    o.heartbeat_interval = 100ms;
    o.heartbeat_liveness = 3;
    o.on_peer_event = [this](const peer_info& i) {
      std::lock_guard lk(events_m_);
      events_.push_back(i.state);
    };
    return o;
  }
  std::vector<peer_state> events() {
    std::lock_guard lk(events_m_);
    return events_;
  }

  static inline int counter_ = 0;
  std::filesystem::path dir_;
  std::string parent_ep_, child_ep_;
  transport::curve_key_pair kp_, kq_;
  pid_t child_ = -1;
  std::mutex events_m_;
  std::vector<peer_state> events_;
};

TEST_P(GatewayTest, TellsAndRequestsCrossProcessesAndPeerGoesDownAndUp) {
  actor_system sys{system_options{.process = "p", .host = "h"}};
  collector::shared got;
  const address remote_echo{"echo", "q", "h"};
  auto col = sys.spawn<collector>({.name = "collector"}, remote_echo, &got);
  ASSERT_TRUE(col);
  auto gw = gateway::start(sys, parent_options());
  ASSERT_TRUE(gw) << gw.error().message;

  start_child();
  ASSERT_TRUE(eventually([&] { return (*gw)->peer_state_of("q", "h") == peer_state::up; }))
      << "peer never came up";

  // request/reply across the processes
  auto r = sys.request<std::int32_t>(remote_echo, echo_req{21}, 5s);
  ASSERT_TRUE(r.get()) << r.get().error().message;
  EXPECT_EQ(*r.get(), 42);

  // actor-to-actor tells both ways, order kept per sender
  ASSERT_TRUE(sys.tell(*col, kick{1000}));
  ASSERT_TRUE(eventually([&] { return got.received == 1000; })) << got.received << " of 1000 came back";
  EXPECT_EQ(got.out_of_order, 0u);
  EXPECT_EQ(got.send_errors, 0u);

  // kill the peer: reported down, and sends fail with peer_down instead of vanishing
  kill_child();
  ASSERT_TRUE(eventually([&] { return (*gw)->peer_state_of("q", "h") == peer_state::down; }))
      << "peer never reported down";
  auto refused = sys.tell(remote_echo, echo_tell{1});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::peer_down);

  // restart it on the same endpoint: back up by itself (reconnect with backoff)
  start_child();
  ASSERT_TRUE(eventually([&] { return (*gw)->peer_state_of("q", "h") == peer_state::up; }))
      << "peer never came back up";
  auto again = sys.request<std::int32_t>(remote_echo, echo_req{50}, 5s);
  ASSERT_TRUE(again.get()) << again.get().error().message;
  EXPECT_EQ(*again.get(), 100);

  auto ev = events();
  EXPECT_EQ(ev, (std::vector<peer_state>{peer_state::up, peer_state::down, peer_state::up}));
  auto peers = (*gw)->peers();
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_EQ(peers[0].ups, 2u);
  EXPECT_EQ(peers[0].downs, 1u);
  (*gw)->stop();
}

TEST_P(GatewayTest, UnknownProcessHasNoRoute) {
  actor_system sys{system_options{.process = "p", .host = "h"}};
  auto gw = gateway::start(sys, parent_options());
  ASSERT_TRUE(gw) << gw.error().message;
  auto r = sys.tell(address{"x", "nowhere", "h"}, echo_tell{1});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::no_route);
  auto down = sys.tell(address{"echo", "q", "h"}, echo_tell{1}); // configured, never up
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().code, errc::peer_down);
}

INSTANTIATE_TEST_SUITE_P(Links, GatewayTest, ::testing::Values(link_kind::ipc, link_kind::tcp_curve),
                         [](const auto& info) { return info.param == link_kind::ipc ? "Ipc" : "TcpCurve"; });

} // namespace
} // namespace shoal::actors
