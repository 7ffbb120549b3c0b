// The libcurl transport against a tiny in-process HTTP/1.1 server on 127.0.0.1: the exact
// bytes on the wire (verbs, Content-Length, no Content-Type/Expect added), response parsing,
// keep-alive reuse, and how resets, timeouts and refused connections map to errors.

#include "storage/encoding.hpp"
#include "storage/http.hpp"
#include "tests/support/eventually.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace shoal::storage {
namespace {

using namespace std::chrono;

// What the server does with one request.
struct reply {
  std::string bytes;          // raw response; empty with `close` = close without answering
  bool close = false;         // close the connection after this request
  bool reset = false;         // close with SO_LINGER 0 (RST) instead of answering
  bool hang = false;          // never answer (until the client goes away)
};

struct received {
  std::string head; // request line + headers, CRLF separated
  std::string body;
  int connection = 0; // 1-based index of the TCP connection it came on
};

// One thread per connection, so concurrent clients each get served.
class tiny_server {
public:
  explicit tiny_server(std::function<reply(const received&)> handler) : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 16);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { run(); });
  }
  ~tiny_server() {
    ::shutdown(fd_, SHUT_RDWR);
    acceptor_.join();
    ::close(fd_);
    {
      std::lock_guard lock(mu_);
      for (int c : conns_)
        if (c >= 0)
          ::shutdown(c, SHUT_RDWR); // wakes the serving threads' recv()
    }
    for (auto& t : servers_)
      t.join();
    for (int c : conns_)
      if (c >= 0)
        ::close(c);
  }

  std::string url(std::string_view path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
  }
  std::vector<received> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  // Connections the client has open now (accepted and not yet closed by either side).
  int open_connections() const { return open_.load(); }

private:
  void run() {
    for (;;) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0)
        return;
      std::lock_guard lock(mu_);
      conns_.push_back(c);
      const int id = static_cast<int>(conns_.size()); // 1-based connection number
      open_ += 1;
      servers_.emplace_back([this, c, id] {
        serve(c, id);
        open_ -= 1;
      });
    }
  }

  // Closes connection `id` now (with an RST when `reset`) and forgets its descriptor.
  void drop(int c, int id, bool reset) {
    std::lock_guard lock(mu_);
    if (reset) {
      linger l{1, 0};
      ::setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    ::close(c);
    conns_[static_cast<std::size_t>(id - 1)] = -1;
  }

  void serve(int c, int id) {
    std::string buf;
    char chunk[4096];
    for (;;) {
      std::size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        const ssize_t n = ::recv(c, chunk, sizeof chunk, 0);
        if (n <= 0)
          return; // client went away (or the destructor shut it down)
        buf.append(chunk, static_cast<std::size_t>(n));
      }
      received r;
      r.head = buf.substr(0, end);
      r.connection = id;
      std::size_t length = 0;
      if (const std::size_t cl = ascii_lower(r.head).find("\r\ncontent-length:"); cl != std::string::npos)
        length = std::stoul(r.head.substr(cl + 17));
      buf.erase(0, end + 4);
      while (buf.size() < length) {
        const ssize_t n = ::recv(c, chunk, sizeof chunk, 0);
        if (n <= 0)
          break;
        buf.append(chunk, static_cast<std::size_t>(n));
      }
      r.body = buf.substr(0, length);
      buf.erase(0, std::min(length, buf.size()));
      {
        std::lock_guard lock(mu_);
        requests_.push_back(r);
      }
      const reply rep = handler_(r);
      if (rep.hang) {
        while (::recv(c, chunk, sizeof chunk, 0) > 0) {
        }
        return;
      }
      if (rep.reset)
        return drop(c, id, true);
      if (!rep.bytes.empty())
        (void)::send(c, rep.bytes.data(), rep.bytes.size(), MSG_NOSIGNAL);
      if (rep.close)
        return drop(c, id, false);
    }
  }

  std::function<reply(const received&)> handler_;
  int fd_ = -1;
  int port_ = 0;
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::vector<int> conns_;           // by connection number - 1; -1 once closed
  std::vector<std::thread> servers_; // guarded by mu_ while the acceptor runs
  std::vector<received> requests_;
  std::atomic<int> open_{0};
};

reply ok(std::string body = "", std::string extra_headers = "") {
  return reply{"HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
                   extra_headers + "\r\n" + body,
               false, false, false};
}

std::shared_ptr<http_transport> make_transport(curl_transport_options o = {}) {
  auto t = make_curl_transport(o);
  EXPECT_TRUE(t) << t.error().describe();
  return *t;
}

bool has_line(const std::string& head, const std::string& line) {
  return head.find("\r\n" + line + "\r\n") != std::string::npos ||
         head.ends_with("\r\n" + line);
}

TEST(CurlTransportTest, SendsVerbsAndBodiesExactly) {
  tiny_server server([](const received&) { return ok(); });
  auto t = make_transport();

  http_request put{http_method::put, server.url("/c?restype=container"), {{"x-ms-date", "d"}}, "", {}};
  ASSERT_TRUE(t->send(put));
  http_request merge{http_method::merge,
                     server.url("/t(PartitionKey='a',RowKey='b')"),
                     {{"Content-Type", "application/json"}, {"If-Match", "*"}},
                     R"({"x":1})",
                     {}};
  ASSERT_TRUE(t->send(merge));
  http_request del{http_method::del, server.url("/q1"), {}, "", {}};
  ASSERT_TRUE(t->send(del));
  http_request post{http_method::post, server.url("/q/messages"), {}, "<m/>", {}};
  ASSERT_TRUE(t->send(post));
  http_request get{http_method::get, server.url("/c/b"), {{"x-ms-empty", ""}}, "", {}};
  ASSERT_TRUE(t->send(get));

  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 5u);
  EXPECT_TRUE(reqs[0].head.starts_with("PUT /c?restype=container HTTP/1.1\r\n")) << reqs[0].head;
  EXPECT_TRUE(has_line(reqs[0].head, "Content-Length: 0")) << reqs[0].head;
  EXPECT_TRUE(has_line(reqs[0].head, "x-ms-date: d")) << reqs[0].head;
  EXPECT_TRUE(reqs[1].head.starts_with("MERGE /t(PartitionKey='a',RowKey='b') HTTP/1.1\r\n"));
  EXPECT_TRUE(has_line(reqs[1].head, "Content-Length: 7")) << reqs[1].head;
  EXPECT_TRUE(has_line(reqs[1].head, "Content-Type: application/json")) << reqs[1].head;
  EXPECT_EQ(reqs[1].body, R"({"x":1})");
  EXPECT_TRUE(reqs[2].head.starts_with("DELETE /q1 HTTP/1.1\r\n"));
  EXPECT_TRUE(has_line(reqs[2].head, "Content-Length: 0")) << reqs[2].head;
  EXPECT_TRUE(reqs[3].head.starts_with("POST /q/messages HTTP/1.1\r\n"));
  EXPECT_EQ(reqs[3].body, "<m/>");
  EXPECT_TRUE(reqs[4].head.starts_with("GET /c/b HTTP/1.1\r\n"));
  EXPECT_EQ(reqs[4].head.find("Content-Length"), std::string::npos) << reqs[4].head;
  EXPECT_TRUE(has_line(reqs[4].head, "x-ms-empty:")) << reqs[4].head;
  for (const auto& r : reqs) {
    // curl must add nothing that is signed or that stalls: no form Content-Type, no Expect.
    EXPECT_EQ(r.head.find("x-www-form-urlencoded"), std::string::npos) << r.head;
    EXPECT_EQ(r.head.find("Expect"), std::string::npos) << r.head;
    EXPECT_EQ(r.head.find("\r\nDate:"), std::string::npos) << r.head;
  }
}

TEST(CurlTransportTest, LargeBodyGoesWithoutExpectContinue) {
  tiny_server server([](const received&) { return ok(); });
  auto t = make_transport();
  const std::string big(2 << 20, 'x');
  const auto start = steady_clock::now();
  ASSERT_TRUE(t->send(http_request{http_method::put, server.url("/big"), {}, big, {}}));
  EXPECT_LT(steady_clock::now() - start, milliseconds{900}); // no 1 s Expect wait
  EXPECT_EQ(server.requests().at(0).body.size(), big.size());
}

TEST(CurlTransportTest, ParsesStatusLowerCasesHeadersAndKeepsDuplicates) {
  tiny_server server([](const received&) {
    return reply{"HTTP/1.1 409 Conflict\r\nContent-Length: 4\r\nX-MS-Error-Code: Nope\r\n"
                 "ETag: \"0x1\"\r\nx-ms-meta-a: 1\r\nx-ms-meta-a: 2\r\n\r\nbody",
                 false, false, false};
  });
  auto t = make_transport();
  auto r = t->send(http_request{http_method::get, server.url("/x"), {}, "", {}});
  ASSERT_TRUE(r) << r.error().describe(); // an HTTP error status is a value here
  EXPECT_EQ(r->status, 409);
  EXPECT_EQ(r->body, "body");
  EXPECT_EQ(r->header("x-ms-error-code").value_or(""), "Nope");
  EXPECT_EQ(r->header("etag").value_or(""), "\"0x1\"");
  int metas = 0;
  for (const auto& [k, v] : r->headers)
    metas += k == "x-ms-meta-a";
  EXPECT_EQ(metas, 2);
}

TEST(CurlTransportTest, HeadReadsNoBodyAndNextGetDoes) {
  tiny_server server([](const received& r) {
    if (r.head.starts_with("HEAD"))
      return reply{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false, false, false};
    return ok("hello");
  });
  auto t = make_transport();
  auto h = t->send(http_request{http_method::head, server.url("/b"), {}, "", {}});
  ASSERT_TRUE(h) << h.error().describe();
  EXPECT_EQ(h->header("content-length").value_or(""), "5");
  EXPECT_TRUE(h->body.empty());
  auto g = t->send(http_request{http_method::get, server.url("/b"), {}, "", {}});
  ASSERT_TRUE(g) << g.error().describe();
  EXPECT_EQ(g->body, "hello");
  EXPECT_TRUE(server.requests().at(1).head.starts_with("GET /b"));
}

TEST(CurlTransportTest, ReusesKeptAliveConnection) {
  tiny_server server([](const received&) { return ok("x"); });
  auto t = make_transport();
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(t->send(http_request{http_method::get, server.url("/k"), {}, "", {}}));
  for (const auto& r : server.requests())
    EXPECT_EQ(r.connection, 1);
}

TEST(CurlTransportTest, ReconnectsAfterServerClosedIdleConnection) {
  tiny_server server([](const received&) {
    reply r = ok("x");
    r.close = true; // like Azurite's 5 s keep-alive timeout, without the wait
    return r;
  });
  auto t = make_transport();
  ASSERT_TRUE(t->send(http_request{http_method::get, server.url("/a"), {}, "", {}}));
  auto second = t->send(http_request{http_method::get, server.url("/b"), {}, "", {}});
  ASSERT_TRUE(second) << second.error().describe();
  EXPECT_EQ(server.requests().back().connection, 2);
}

TEST(CurlTransportTest, ConnectionResetIsRetryableTransportError) {
  tiny_server server([](const received&) { return reply{"", false, true, false}; });
  auto t = make_transport();
  auto r = t->send(http_request{http_method::put, server.url("/r"), {}, "x", {}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::transport) << r.error().describe();
  EXPECT_TRUE(r.error().retryable);
  EXPECT_EQ(r.error().http_status, 0);
}

TEST(CurlTransportTest, SlowResponseIsRetryableTimeout) {
  tiny_server server([](const received&) { return reply{"", false, false, true}; });
  auto t = make_transport();
  auto r = t->send(http_request{http_method::get, server.url("/slow"), {}, "", milliseconds{100}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::timeout) << r.error().describe();
  EXPECT_TRUE(r.error().retryable);
}

TEST(CurlTransportTest, RefusedConnectionIsRetryableTransportError) {
  int port = 0;
  {
    tiny_server probe([](const received&) { return ok(); });
    port = std::stoi(probe.url("").substr(17));
  } // closed: nothing listens there now
  auto t = make_transport();
  auto r = t->send(http_request{http_method::get,
                                "http://127.0.0.1:" + std::to_string(port) + "/", {}, "", {}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::transport);
  EXPECT_TRUE(r.error().retryable);
  EXPECT_FALSE(r.error().message.empty());
}

TEST(CurlTransportTest, RejectsUnusableOptions) {
  curl_transport_options o;
  o.ca_file = "/nonexistent/ca.pem";
  auto t = make_curl_transport(o);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, errc::invalid_argument);
  o = {};
  o.request_timeout = milliseconds{0};
  EXPECT_FALSE(make_curl_transport(o));
  o = {};
  o.max_idle_time = milliseconds{0};
  EXPECT_FALSE(make_curl_transport(o));
}

TEST(CurlTransportTest, IsSafeToShareAcrossThreads) {
  tiny_server server([](const received&) { return ok("y"); });
  auto t = make_transport();
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      for (int j = 0; j < 10; ++j) {
        auto r = t->send(http_request{http_method::get, server.url("/m"), {}, "", {}});
        good += r && r->body == "y";
      }
    });
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(good.load(), 40);
}

// A server that answers none of the first `n` requests before all `n` have arrived, so a burst
// of `n` concurrent requests holds `n` handles at once, each with its own connection.
struct held_burst {
  int n;
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  tiny_server server{[this](const received&) {
    std::unique_lock lock(m);
    arrived += 1;
    cv.notify_all();
    cv.wait_for(lock, seconds(30), [&] { return arrived >= n; });
    return ok("z");
  }};
  explicit held_burst(int count) : n(count) {}

  // `n` concurrent GETs through `t`; how many succeeded.
  int send_all(http_transport& t) {
    std::atomic<int> good{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i)
      threads.emplace_back([&] { good += t.send(http_request{http_method::get, server.url("/b"), {}, "", {}}).has_value(); });
    for (auto& th : threads)
      th.join();
    return good.load();
  }
  // Polls until exactly `k` client connections are open (30 s at most); whether they were.
  ::testing::AssertionResult open_becomes(int k, const std::function<void()>& meanwhile = {}) {
    return tests::eventually(
        [&] {
          if (meanwhile)
            meanwhile();
          return server.open_connections() == k;
        },
        seconds(30), milliseconds(20));
  }
};

TEST(CurlTransportTest, KeepsAtMostMaxIdleHandlesAndClosesThoseIdleLongerThanMaxIdleTime) {
  // 20 requests in flight at once leave 20 handles, each with its connection: 16 are kept, the
  // rest closed. Then one request at a time reuses one handle, and the others, idle for longer
  // than max_idle_time, are closed: the pool follows the recent concurrency, not its peak
  // (issue 16: a worker's descriptors grew 34 → 85 over a 30-minute soak).
  held_burst b(20);
  curl_transport_options o;
  o.max_idle_connections = 16;
  o.max_idle_time = milliseconds(300);
  auto t = make_transport(o);
  ASSERT_EQ(b.send_all(*t), 20);
  EXPECT_TRUE(b.open_becomes(16)) << b.server.open_connections() << " connections open after the burst";
  EXPECT_TRUE(b.open_becomes(1, [&] {
    ASSERT_TRUE(t->send(http_request{http_method::get, b.server.url("/s"), {}, "", {}}));
  })) << b.server.open_connections() << " connections still open";
}

TEST(CurlTransportTest, ClosesIdleHandlesWhenNoRequestComesAfterThem) {
  // A transport nobody uses after a burst still closes its idle handles: its reaper thread
  // does, within two max_idle_time.
  held_burst b(6);
  curl_transport_options o;
  o.max_idle_time = milliseconds(200);
  auto t = make_transport(o);
  ASSERT_EQ(b.send_all(*t), 6);
  EXPECT_TRUE(b.open_becomes(0)) << b.server.open_connections() << " connections still open";
}

} // namespace
} // namespace shoal::storage
