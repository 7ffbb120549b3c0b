#include "tests/support/fault_proxy.hpp"

#include "storage/connection_string.hpp"
#include "storage/encoding.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace shoal::tests {

using workers::errc;
using workers::fail;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using clock_type = std::chrono::steady_clock;

namespace {

constexpr std::array<std::string_view, 9> k_kind_names{
    "server_busy", "server_busy_retry_after", "operation_timed_out", "operation_timed_out_after",
    "reset_before_response", "reset_mid_body", "latency", "stall", "outage"};
constexpr std::array<std::string_view, 3> k_services{"blob", "queue", "table"};

// -- sockets ----------------------------------------------------------------------------------

// Closes with an RST instead of a FIN: SO_LINGER with a zero timeout (RFC 793 "abort").
void close_with_reset(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

int listen_on(const std::string& host, int& port_out) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd, 512) != 0) {
    ::close(fd);
    return -1;
  }
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port_out = ntohs(a.sin_port);
  return fd;
}

int connect_to(const std::string& host, int port, milliseconds timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
    ::close(fd);
    return -1;
  }
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err == 0 ? 0 : -1;
    }
  }
  if (rc != 0) {
    ::close(fd);
    return -1;
  }
  const int flags = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// A socket with a read buffer; reads wait at most `timeout` each.
class stream {
public:
  explicit stream(int fd = -1) : fd_(fd) {}
  int fd() const noexcept { return fd_; }
  void reset(int fd) {
    fd_ = fd;
    buf_.clear();
  }
  bool buffered() const noexcept { return !buf_.empty(); }

  // Reads more bytes into the buffer. False on EOF, error or timeout.
  bool fill(milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    for (;;) {
      const int r = ::poll(&p, 1, static_cast<int>(timeout.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      break;
    }
    char tmp[65536];
    for (;;) {
      const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      buf_.append(tmp, static_cast<std::size_t>(n));
      return true;
    }
  }

  // The bytes up to and including `delim`, or nullopt (EOF, timeout, or over `max` bytes).
  std::optional<std::string> read_until(std::string_view delim, milliseconds timeout, std::size_t max = 1 << 20) {
    std::size_t from = 0;
    for (;;) {
      const auto at = buf_.find(delim, from);
      if (at != std::string::npos) {
        std::string out = buf_.substr(0, at + delim.size());
        buf_.erase(0, at + delim.size());
        return out;
      }
      if (buf_.size() > max) return std::nullopt;
      from = buf_.size() >= delim.size() ? buf_.size() - delim.size() + 1 : 0;
      if (!fill(timeout)) return std::nullopt;
    }
  }

  std::optional<std::string> read_exact(std::size_t n, milliseconds timeout) {
    while (buf_.size() < n)
      if (!fill(timeout)) return std::nullopt;
    std::string out = buf_.substr(0, n);
    buf_.erase(0, n);
    return out;
  }

  // A chunked body (RFC 9112 §7.1) as raw bytes: chunks, the last chunk and the trailer section.
  std::optional<std::string> read_chunked(milliseconds timeout) {
    std::string out;
    for (;;) {
      auto line = read_until("\r\n", timeout);
      if (!line) return std::nullopt;
      out += *line;
      const std::size_t size = std::strtoull(line->c_str(), nullptr, 16);
      if (size == 0) {
        for (;;) { // trailers, up to the empty line
          auto t = read_until("\r\n", timeout);
          if (!t) return std::nullopt;
          out += *t;
          if (*t == "\r\n") return out;
        }
      }
      auto data = read_exact(size + 2, timeout);
      if (!data) return std::nullopt;
      out += *data;
    }
  }

  std::string read_to_eof(milliseconds timeout) {
    while (fill(timeout)) {
    }
    return std::exchange(buf_, {});
  }

private:
  int fd_;
  std::string buf_;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A parsed message head: the first line and the headers we act on.
struct head {
  std::string raw;
  std::string first_line;
  std::optional<std::size_t> content_length;
  bool chunked = false;
  bool close = false;
  bool expect_continue = false;

  static std::optional<head> parse(std::string raw) {
    head h;
    h.raw = std::move(raw);
    const auto eol = h.raw.find("\r\n");
    if (eol == std::string::npos) return std::nullopt;
    h.first_line = h.raw.substr(0, eol);
    std::size_t pos = eol + 2;
    while (pos < h.raw.size()) {
      const auto end = h.raw.find("\r\n", pos);
      if (end == std::string::npos || end == pos) break;
      const std::string line = h.raw.substr(pos, end - pos);
      pos = end + 2;
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      const std::string name = lower(line.substr(0, colon));
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(" \t"));
      const std::string v = lower(value);
      if (name == "content-length") h.content_length = std::strtoull(value.c_str(), nullptr, 10);
      else if (name == "transfer-encoding") h.chunked = v.find("chunked") != std::string::npos;
      else if (name == "connection") h.close = v.find("close") != std::string::npos;
      else if (name == "expect") h.expect_continue = v.find("100-continue") != std::string::npos;
    }
    return h;
  }

  // The head without its Expect header (the proxy answers 100 Continue itself; Expect is not
  // one of the headers SharedKey signs).
  std::string without_expect() const {
    std::string out;
    std::size_t pos = 0;
    while (pos < raw.size()) {
      auto end = raw.find("\r\n", pos);
      if (end == std::string::npos) end = raw.size() - 2;
      const std::string line = raw.substr(pos, end + 2 - pos);
      pos = end + 2;
      if (lower(line).starts_with("expect:")) continue;
      out += line;
    }
    return out;
  }

  int status() const { // responses: "HTTP/1.1 204 No Content"
    const auto sp = first_line.find(' ');
    return sp == std::string::npos ? 0 : std::atoi(first_line.c_str() + sp + 1);
  }
  std::string method() const { return first_line.substr(0, first_line.find(' ')); }
};

std::string new_request_id() {
  static std::atomic<std::uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[40];
  const std::uint64_t a = rng(), b = counter.fetch_add(1) + 1;
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xffff), 0xfa01u,
                static_cast<unsigned long long>(b));
  return buf;
}

std::string http_date() { return storage::format_http_date(std::chrono::system_clock::now()); }

std::string iso_now() { return storage::format_iso8601(std::chrono::system_clock::now()); }

// The service's error response: blob and queue answer XML, tables JSON (odata.error).
std::string error_response(std::size_t service, int status, std::string_view reason, std::string_view code,
                           std::string_view message, int retry_after_s) {
  const std::string rid = new_request_id();
  const std::string text = std::string(message) + "\nRequestId:" + rid + "\nTime:" + iso_now();
  std::string body, type;
  if (k_services[service] == "table") {
    body = nlohmann::json{{"odata.error", {{"code", code}, {"message", {{"lang", "en-US"}, {"value", text}}}}}}.dump();
    type = "application/json;odata=minimalmetadata;streaming=true;charset=utf-8";
  } else {
    body = "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>" + std::string(code) +
           "</Code><Message>" + text + "</Message></Error>";
    type = "application/xml";
  }
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) + "\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "Content-Type: " + type + "\r\n";
  out += "Server: Windows-Azure-" + std::string(k_services[service] == "table" ? "Table" : k_services[service] == "blob" ? "Blob" : "Queue") +
         "/1.0 Microsoft-HTTPAPI/2.0\r\n";
  out += "x-ms-request-id: " + rid + "\r\n";
  out += "x-ms-version: 2023-11-03\r\n";
  out += "x-ms-error-code: " + std::string(code) + "\r\n";
  if (retry_after_s > 0) out += "Retry-After: " + std::to_string(retry_after_s) + "\r\n";
  out += "Date: " + http_date() + "\r\n\r\n";
  return out + body;
}

// "http://127.0.0.1:10000/devstoreaccount1" → host, port, rest ("/devstoreaccount1").
struct endpoint_parts {
  std::string host;
  int port = 0;
  std::string rest;
};
std::optional<endpoint_parts> split_endpoint(const std::string& e) {
  if (!e.starts_with("http://")) return std::nullopt;
  const auto start = 7;
  const auto slash = e.find('/', start);
  const std::string hostport = e.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
  const auto colon = hostport.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  endpoint_parts p;
  p.host = hostport.substr(0, colon);
  p.port = std::atoi(hostport.c_str() + colon + 1);
  p.rest = slash == std::string::npos ? "" : e.substr(slash);
  if (p.port <= 0) return std::nullopt;
  return p;
}

} // namespace

// -- names and plans --------------------------------------------------------------------------

std::string_view to_string(fault_kind k) noexcept { return k_kind_names[static_cast<std::size_t>(k)]; }

std::optional<fault_kind> parse_fault_kind(std::string_view name) noexcept {
  for (std::size_t i = 0; i < k_kind_names.size(); ++i)
    if (k_kind_names[i] == name) return static_cast<fault_kind>(i);
  return std::nullopt;
}

workers::result<fault_plan> fault_plan::from_json(const nlohmann::json& j) {
  if (!j.is_object()) return fail(errc::invalid_argument, "a fault plan is a JSON object");
  fault_plan p;
  try {
    if (j.contains("seed")) p.seed = j.at("seed").get<std::uint64_t>();
    if (!j.contains("rules")) return p;
    if (!j.at("rules").is_array()) return fail(errc::invalid_argument, "plan: 'rules' must be an array");
    std::size_t i = 0;
    for (const auto& r : j.at("rules")) {
      const std::string where = "plan rule " + std::to_string(i++);
      if (!r.is_object() || !r.contains("kind")) return fail(errc::invalid_argument, where + ": needs a 'kind'");
      auto kind = parse_fault_kind(r.at("kind").get<std::string>());
      if (!kind) return fail(errc::invalid_argument, where + ": unknown kind '" + r.at("kind").get<std::string>() + "'");
      fault_rule f;
      f.kind = *kind;
      for (const auto& [key, v] : r.items()) {
        if (key == "kind") continue;
        else if (key == "rate") f.rate = v.get<double>();
        else if (key == "services") {
          for (const auto& s : v) {
            const auto name = s.get<std::string>();
            if (std::find(k_services.begin(), k_services.end(), name) == k_services.end())
              return fail(errc::invalid_argument, where + ": unknown service '" + name + "'");
            f.services.push_back(name);
          }
        } else if (key == "methods") {
          for (const auto& m : v) f.methods.push_back(m.get<std::string>());
        } else if (key == "from_ms") f.from = milliseconds(v.get<std::int64_t>());
        else if (key == "to_ms") f.to = milliseconds(v.get<std::int64_t>());
        else if (key == "period_ms") f.period = milliseconds(v.get<std::int64_t>());
        else if (key == "active_ms") f.active = milliseconds(v.get<std::int64_t>());
        else if (key == "delay_ms") f.delay = milliseconds(v.get<std::int64_t>());
        else if (key == "retry_after_s") f.retry_after_s = v.get<int>();
        else return fail(errc::invalid_argument, where + ": unknown key '" + key + "'");
      }
      if (f.rate < 0 || f.rate > 1) return fail(errc::invalid_argument, where + ": rate must be in [0, 1]");
      if (f.period.count() < 0 || f.active.count() < 0 || f.delay.count() < 0)
        return fail(errc::invalid_argument, where + ": times must be >= 0");
      p.rules.push_back(std::move(f));
    }
  } catch (const nlohmann::json::exception& e) {
    return fail(errc::invalid_argument, std::string("plan: ") + e.what());
  }
  return p;
}

nlohmann::json fault_plan::to_json() const {
  nlohmann::json rules = nlohmann::json::array();
  for (const auto& r : this->rules) {
    nlohmann::json j{{"kind", to_string(r.kind)}, {"rate", r.rate}};
    if (!r.services.empty()) j["services"] = r.services;
    if (!r.methods.empty()) j["methods"] = r.methods;
    if (r.from.count()) j["from_ms"] = r.from.count();
    if (r.to != milliseconds::max()) j["to_ms"] = r.to.count();
    if (r.period.count()) j["period_ms"] = r.period.count(), j["active_ms"] = r.active.count();
    if (r.delay.count()) j["delay_ms"] = r.delay.count();
    if (r.kind == fault_kind::server_busy_retry_after) j["retry_after_s"] = r.retry_after_s;
    rules.push_back(std::move(j));
  }
  return {{"seed", seed}, {"rules", std::move(rules)}};
}

// -- the proxy --------------------------------------------------------------------------------

struct fault_proxy::impl {
  fault_proxy_options opts;
  std::array<endpoint_parts, 3> upstream{};
  std::array<int, 4> listen_fds{-1, -1, -1, -1}; // blob, queue, table, control
  std::array<int, 4> ports{};

  std::atomic<bool> stopping{false};
  bool started = false;
  std::thread acceptor;

  // Connections: their fds (to shut them down on stop) and a count to wait for.
  std::mutex conn_m;
  std::condition_variable conn_cv;
  std::set<int> conn_fds;
  std::size_t conn_threads = 0;

  // The plan, its start and its PRNG.
  mutable std::mutex plan_m;
  fault_plan plan;
  clock_type::time_point plan_start = clock_type::now();
  std::mt19937_64 rng{1};

  // Counters.
  std::array<std::atomic<std::uint64_t>, 3> requests{};
  std::array<std::atomic<std::uint64_t>, 9> injected{};
  std::atomic<std::uint64_t> connections{0};

  ~impl() { shutdown(); }

  void shutdown() {
    stopping = true;
    for (int& fd : listen_fds)
      if (fd >= 0) ::shutdown(fd, SHUT_RDWR), ::close(std::exchange(fd, -1));
    if (acceptor.joinable()) acceptor.join();
    std::unique_lock lk(conn_m);
    for (int fd : conn_fds) ::shutdown(fd, SHUT_RDWR);
    conn_cv.notify_all();
    conn_cv.wait(lk, [&] { return conn_threads == 0; });
  }

  // Sleeps up to `d`; false when the proxy is stopping.
  bool pause(milliseconds d) {
    std::unique_lock lk(conn_m);
    return !conn_cv.wait_for(lk, d, [&] { return stopping.load(); });
  }

  // Whether rule `r` is in force `age` after the plan started, for a request of `service` with
  // HTTP `method` ("" matches only rules for every method).
  static bool applies(const fault_rule& r, milliseconds age, std::size_t service, std::string_view method) {
    if (age < r.from || age >= r.to) return false;
    if (r.period.count() > 0 && (age - r.from) % r.period >= r.active) return false;
    if (!r.methods.empty() && std::find(r.methods.begin(), r.methods.end(), method) == r.methods.end()) return false;
    return r.services.empty() ||
           std::find(r.services.begin(), r.services.end(), k_services[service]) != r.services.end();
  }

  milliseconds plan_age() const {
    return std::chrono::duration_cast<milliseconds>(clock_type::now() - plan_start);
  }

  // The fault for one request of `service` (nullopt = forward untouched). An outage in force
  // beats every other rule; the others fire with their rate, the first that fires wins.
  std::optional<fault_rule> decide(std::size_t service, std::string_view method) {
    std::lock_guard lk(plan_m);
    const auto age = plan_age();
    for (const auto& r : plan.rules)
      if (r.kind == fault_kind::outage && applies(r, age, service, method)) return r;
    for (const auto& r : plan.rules)
      if (r.kind != fault_kind::outage && applies(r, age, service, method) &&
          std::uniform_real_distribution<double>(0, 1)(rng) < r.rate)
        return r;
    return std::nullopt;
  }

  bool in_outage(std::size_t service) {
    std::lock_guard lk(plan_m);
    const auto age = plan_age();
    return std::any_of(plan.rules.begin(), plan.rules.end(),
                       [&](const fault_rule& r) { return r.kind == fault_kind::outage && r.methods.empty() && applies(r, age, service, ""); });
  }

  void count(fault_kind k) { injected[static_cast<std::size_t>(k)].fetch_add(1, std::memory_order_relaxed); }

  void accept_loop() {
    std::array<pollfd, 4> pfds{};
    for (std::size_t i = 0; i < 4; ++i) pfds[i] = {listen_fds[i], POLLIN, 0};
    while (!stopping) {
      const int r = ::poll(pfds.data(), pfds.size(), 200);
      if (r <= 0) continue;
      for (std::size_t i = 0; i < 4; ++i) {
        if (!(pfds[i].revents & POLLIN)) continue;
        const int fd = ::accept4(listen_fds[i], nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (i < 3 && in_outage(i)) {
          count(fault_kind::outage);
          close_with_reset(fd);
          continue;
        }
        {
          std::lock_guard lk(conn_m);
          conn_fds.insert(fd);
          ++conn_threads;
        }
        connections.fetch_add(1, std::memory_order_relaxed);
        std::thread([this, fd, i] {
          int close_how = 0; // 0 = FIN, 1 = RST
          if (i < 3) close_how = serve(fd, i);
          else control(fd);
          std::lock_guard lk(conn_m);
          conn_fds.erase(fd);
          if (close_how == 1) close_with_reset(fd);
          else ::close(fd);
          --conn_threads;
          conn_cv.notify_all();
        }).detach();
      }
    }
  }

  // Relays one client connection of `service`. Returns 1 when it must end with an RST.
  int serve(int client_fd, std::size_t service) {
    stream client(client_fd);
    stream up(-1);
    auto up_last_used = clock_type::now();
    auto close_up = [&] {
      if (up.fd() >= 0) ::close(up.fd());
      up.reset(-1);
    };
    struct guard {
      std::function<void()> f;
      ~guard() { f(); }
    } g{close_up};
    const milliseconds idle = 300s, io = 120s;
    while (!stopping) {
      auto raw = client.read_until("\r\n\r\n", idle);
      if (!raw) return 0;
      auto req = head::parse(std::move(*raw));
      if (!req) return 1;
      if (req->expect_continue && !write_all(client_fd, "HTTP/1.1 100 Continue\r\n\r\n")) return 1;
      std::string body;
      if (req->chunked) {
        auto b = client.read_chunked(io);
        if (!b) return 1;
        body = std::move(*b);
      } else if (req->content_length && *req->content_length > 0) {
        auto b = client.read_exact(*req->content_length, io);
        if (!b) return 1;
        body = std::move(*b);
      }
      requests[service].fetch_add(1, std::memory_order_relaxed);
      const auto fault = decide(service, std::string_view(req->first_line).substr(0, req->first_line.find(' ')));
      const fault_kind kind = fault ? fault->kind : fault_kind::latency;
      if (fault) count(kind);
      if (fault && kind == fault_kind::outage) return 1;
      if (fault && (kind == fault_kind::server_busy || kind == fault_kind::server_busy_retry_after)) {
        if (!write_all(client_fd, error_response(service, 503, "Server Busy", "ServerBusy", "The server is busy.",
                                                 kind == fault_kind::server_busy_retry_after ? fault->retry_after_s : 0)))
          return 1;
        if (req->close) return 0;
        continue;
      }
      if (fault && kind == fault_kind::operation_timed_out) {
        if (!write_all(client_fd, error_response(service, 500, "Operation could not be completed within the specified time.",
                                                 "OperationTimedOut",
                                                 "The operation could not be completed within the permitted time.", 0)))
          return 1;
        if (req->close) return 0;
        continue;
      }
      if (fault && kind == fault_kind::stall) {
        pause(fault->delay);
        return 0; // never forwarded; the client has long given up
      }
      if (fault && kind == fault_kind::latency && !pause(fault->delay)) return 1;

      // Forward: a fresh upstream connection when none, or when Azurite may have dropped an idle
      // one (its keep-alive timeout is 5 s).
      if (up.fd() >= 0 && clock_type::now() - up_last_used > 4s) close_up();
      const std::string out = (req->expect_continue ? req->without_expect() : req->raw) + body;
      std::optional<head> resp;
      std::string resp_body;
      for (int attempt = 0; attempt < 2 && !resp; ++attempt) {
        if (up.fd() < 0) {
          const int fd = connect_to(upstream[service].host, upstream[service].port, 5s);
          if (fd < 0) return 1; // upstream down: the client sees a reset
          up.reset(fd);
        }
        if (!write_all(up.fd(), out)) {
          close_up();
          continue;
        }
        auto rhead = up.read_until("\r\n\r\n", io);
        if (!rhead) { // nothing came back: a stale keep-alive connection, try once more
          close_up();
          if (attempt == 0) continue;
          return 1;
        }
        resp = head::parse(std::move(*rhead));
        if (!resp) return 1;
        const int st = resp->status();
        const bool no_body = req->method() == "HEAD" || st == 204 || st == 304 || (st >= 100 && st < 200);
        if (!no_body) {
          if (resp->chunked) {
            auto b = up.read_chunked(io);
            if (!b) return 1;
            resp_body = std::move(*b);
          } else if (resp->content_length) {
            auto b = up.read_exact(*resp->content_length, io);
            if (!b) return 1;
            resp_body = std::move(*b);
          } else {
            resp_body = up.read_to_eof(io);
            resp->close = true;
          }
        }
      }
      if (!resp) return 1;
      up_last_used = clock_type::now();
      if (resp->close) close_up();
      if (fault && kind == fault_kind::operation_timed_out_after) {
        if (!write_all(client_fd, error_response(service, 500, "Operation could not be completed within the specified time.",
                                                 "OperationTimedOut",
                                                 "The operation could not be completed within the permitted time.", 0)))
          return 1;
        if (req->close) return 0;
        continue;
      }
      if (fault && kind == fault_kind::reset_before_response) return 1;
      if (fault && kind == fault_kind::reset_mid_body) {
        // Half the body; a response without one (204, or Content-Length: 0) is cut in its head.
        const std::string partial = resp_body.size() >= 2 ? resp->raw + resp_body.substr(0, resp_body.size() / 2)
                                                          : resp->raw.substr(0, resp->raw.size() / 2);
        (void)write_all(client_fd, partial);
        return 1;
      }
      if (!write_all(client_fd, resp->raw + resp_body)) return 1;
      if (req->close || resp->close) return 0;
    }
    return 0;
  }

  // One control request (HTTP/1.0 style: one exchange, then close).
  void control(int fd) {
    stream s(fd);
    auto raw = s.read_until("\r\n\r\n", 10s);
    if (!raw) return;
    auto req = head::parse(std::move(*raw));
    if (!req) return;
    std::string body;
    if (req->content_length && *req->content_length > 0) {
      auto b = s.read_exact(*req->content_length, 10s);
      if (!b) return;
      body = std::move(*b);
    }
    const auto sp1 = req->first_line.find(' ');
    const auto sp2 = req->first_line.find(' ', sp1 + 1);
    const std::string method = req->first_line.substr(0, sp1);
    const std::string path = req->first_line.substr(sp1 + 1, sp2 - sp1 - 1);
    int status = 200;
    std::string out;
    if (method == "GET" && path == "/stats") {
      out = stats().dump();
    } else if (method == "PUT" && path == "/plan") {
      auto j = nlohmann::json::parse(body, nullptr, false);
      auto p = j.is_discarded() ? fail(errc::invalid_argument, "the plan is not JSON") : fault_plan::from_json(j);
      if (p) {
        set_plan(std::move(*p));
        status = 204;
      } else {
        status = 400;
        out = p.error().message;
      }
    } else if (method == "POST" && path == "/reset") {
      reset();
      status = 204;
    } else {
      status = 404;
      out = "GET /stats, PUT /plan, POST /reset";
    }
    std::string resp = "HTTP/1.0 " + std::to_string(status) + (status < 300 ? " OK" : " Error") +
                       "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(out.size()) +
                       "\r\nConnection: close\r\n\r\n" + out;
    (void)write_all(fd, resp);
  }

  void set_plan(fault_plan p) {
    std::lock_guard lk(plan_m);
    rng.seed(p.seed);
    plan = std::move(p);
    plan_start = clock_type::now();
  }

  nlohmann::json stats() const {
    nlohmann::json j;
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < 3; ++i) {
      const auto n = requests[i].load(std::memory_order_relaxed);
      j["requests"][std::string(k_services[i])] = n;
      total += n;
    }
    j["requests"]["total"] = total;
    for (std::size_t i = 0; i < injected.size(); ++i)
      j["injected"][std::string(k_kind_names[i])] = injected[i].load(std::memory_order_relaxed);
    j["connections"] = connections.load(std::memory_order_relaxed);
    std::lock_guard lk(plan_m);
    j["plan_age_ms"] = plan_age().count();
    return j;
  }

  void reset() {
    for (auto& r : requests) r = 0;
    for (auto& r : injected) r = 0;
    connections = 0;
  }
};

workers::result<fault_proxy> fault_proxy::listen(const fault_proxy_options& opts) {
  auto account = storage::parse_connection_string(opts.upstream_connection_string);
  if (!account) return fail(errc::invalid_argument, "fault proxy: upstream: " + account.error().message);
  auto p = std::make_unique<impl>();
  p->opts = opts;
  const std::string* eps[3] = {&account->blob_endpoint, &account->queue_endpoint, &account->table_endpoint};
  for (std::size_t i = 0; i < 3; ++i) {
    auto e = split_endpoint(*eps[i]);
    if (!e) return fail(errc::invalid_argument, "fault proxy: upstream endpoint '" + *eps[i] + "' is not http://host:port/…");
    p->upstream[i] = *e;
  }
  for (std::size_t i = 0; i < 4; ++i) {
    p->listen_fds[i] = listen_on(opts.listen_host, p->ports[i]);
    if (p->listen_fds[i] < 0)
      return fail(errc::io, "fault proxy: cannot listen on " + opts.listen_host + ": " + std::strerror(errno));
  }
  return fault_proxy(std::move(p));
}

fault_proxy::fault_proxy(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
fault_proxy::fault_proxy(fault_proxy&&) noexcept = default;
fault_proxy& fault_proxy::operator=(fault_proxy&&) noexcept = default;
fault_proxy::~fault_proxy() { stop(); }

void fault_proxy::start() {
  if (!impl_ || impl_->started) return;
  impl_->started = true;
  impl_->acceptor = std::thread([p = impl_.get()] { p->accept_loop(); });
}

void fault_proxy::stop() {
  if (impl_) impl_->shutdown();
}

std::array<int, 3> fault_proxy::ports() const noexcept { return {impl_->ports[0], impl_->ports[1], impl_->ports[2]}; }
int fault_proxy::control_port() const noexcept { return impl_->ports[3]; }

std::string fault_proxy::connection_string() const {
  auto account = storage::parse_connection_string(impl_->opts.upstream_connection_string);
  const char* names[3] = {"BlobEndpoint", "QueueEndpoint", "TableEndpoint"};
  std::string cs = "DefaultEndpointsProtocol=http;AccountName=" + account->name + ";AccountKey=";
  // The key as the upstream string spells it (base64), taken from the string itself.
  const std::string& up = impl_->opts.upstream_connection_string;
  const auto k = up.find("AccountKey=");
  if (k != std::string::npos) cs += up.substr(k + 11, up.find(';', k) - k - 11);
  for (std::size_t i = 0; i < 3; ++i)
    cs += std::string(";") + names[i] + "=http://" + impl_->opts.listen_host + ":" + std::to_string(impl_->ports[i]) +
          impl_->upstream[i].rest;
  return cs + ";";
}

void fault_proxy::set_plan(fault_plan plan) { impl_->set_plan(std::move(plan)); }
nlohmann::json fault_proxy::stats() const { return impl_->stats(); }
void fault_proxy::reset() { impl_->reset(); }

// -- control client ---------------------------------------------------------------------------

workers::result<std::pair<int, std::string>> http_exchange(const std::string& host, int port, std::string_view method,
                                                           std::string_view path, std::string_view body) {
  const int fd = connect_to(host, port, 5s);
  if (fd < 0) return fail(errc::io, "cannot connect to " + host + ":" + std::to_string(port));
  std::string req = std::string(method) + " " + std::string(path) + " HTTP/1.0\r\nHost: " + host + "\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + std::string(body);
  if (!write_all(fd, req)) {
    ::close(fd);
    return fail(errc::io, "cannot send to " + host + ":" + std::to_string(port));
  }
  stream s(fd);
  std::string all = s.read_to_eof(10s);
  ::close(fd);
  const auto end = all.find("\r\n\r\n");
  auto h = head::parse(all.substr(0, end == std::string::npos ? all.size() : end + 4));
  if (!h || h->status() == 0) return fail(errc::parse, "no HTTP status line from " + host + ":" + std::to_string(port));
  return std::pair<int, std::string>{h->status(), end == std::string::npos ? std::string() : all.substr(end + 4)};
}

workers::result<void> fault_proxy_client::set_plan(const fault_plan& plan) const {
  auto r = http_exchange(host_, port_, "PUT", "/plan", plan.to_json().dump());
  if (!r) return std::unexpected(r.error());
  if (r->first / 100 != 2) return fail(errc::invalid_argument, "the fault proxy refused the plan: " + r->second);
  return {};
}

workers::result<nlohmann::json> fault_proxy_client::stats() const {
  auto r = http_exchange(host_, port_, "GET", "/stats");
  if (!r) return std::unexpected(r.error());
  auto j = nlohmann::json::parse(r->second, nullptr, false);
  if (r->first != 200 || j.is_discarded()) return fail(errc::parse, "fault proxy /stats: " + r->second);
  return j;
}

workers::result<void> fault_proxy_client::reset() const {
  auto r = http_exchange(host_, port_, "POST", "/reset");
  if (!r) return std::unexpected(r.error());
  return {};
}

} // namespace shoal::tests
