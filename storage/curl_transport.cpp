// The libcurl transport behind make_curl_transport().
//
// One easy handle per in-flight request, taken from a mutex-guarded pool and put back after
// the request: each handle keeps its own connection cache, so a pooled handle reuses its
// kept-alive connection and the hot path allocates no handle. The pool is a stack (the most
// recently used handle is taken first), so the handles beyond the recent concurrency sink to its
// bottom and are closed once idle for max_idle_time (at the next release, or by the transport's
// reaper thread when no request comes); each one holds descriptors (its connection, the wake-up
// socket pair of curl_easy_perform's internal multi handle). Options that never change (timeouts,
// TLS, callbacks, keepalive) are set once when a handle is created; only the per-request ones
// (URL, method, headers, body) are set for each request.

#include "storage/encoding.hpp"
#include "storage/http.hpp"

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <limits>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

namespace shoal::storage {
namespace {

// -- global init ------------------------------------------------------------------------------

// curl_global_init is not thread-safe in libcurl 7.88: run it once, before the first handle.
CURLcode global_init() {
  static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  return rc;
}

// -- callbacks --------------------------------------------------------------------------------

// Largest body we pre-reserve from a Content-Length header; bigger bodies just grow.
constexpr std::size_t max_body_reserve = 64u << 20;

constexpr std::uint64_t max_u64 = std::numeric_limits<std::uint64_t>::max();

// What one transfer's callbacks write to: the response, and the body cap of its request.
struct transfer {
  http_response* resp = nullptr;
  std::uint64_t max_body_bytes = 0; // 0 = no limit
  std::uint64_t announced = 0;      // Content-Length of the final response, when it was over
  bool over_limit = false;          // the transfer was abandoned for the cap
};

std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) noexcept {
  auto* t = static_cast<transfer*>(user);
  auto* resp = t->resp;
  const std::size_t len = size * n;
  const std::string_view line = trim_space(std::string_view(data, len));
  // A status line starts a new header block (after "100 Continue" or an interim response):
  // keep only the final response's headers.
  if (line.starts_with("HTTP/")) {
    resp->headers.clear();
    return len;
  }
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0)
    return len; // blank line that ends the block, or garbage
  try {
    std::string name(line.substr(0, colon));
    for (char& c : name)
      c = ascii_lower(c);
    const std::string_view value = trim_space(line.substr(colon + 1));
    if (name == "content-length") {
      std::uint64_t bytes = 0;
      for (const char c : value)
        if (c >= '0' && c <= '9')
          bytes = bytes > (max_u64 - 9) / 10 ? max_u64 : bytes * 10 + static_cast<std::uint64_t>(c - '0');
      if (t->max_body_bytes != 0 && bytes > t->max_body_bytes) {
        t->over_limit = true; // abandon before a byte of the body is read
        t->announced = bytes;
        return 0;
      }
      resp->body.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(bytes, max_body_reserve)));
    }
    resp->headers.emplace_back(std::move(name), std::string(value));
  } catch (...) {
    return 0; // out of memory: abort the transfer (CURLE_WRITE_ERROR) rather than throw into C
  }
  return len;
}

std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) noexcept {
  auto* t = static_cast<transfer*>(user);
  auto* resp = t->resp;
  if (t->max_body_bytes != 0 && resp->body.size() + size * n > t->max_body_bytes) {
    t->over_limit = true; // no or a false Content-Length: stop at the cap, not after it
    return 0;
  }
  try {
    resp->body.append(data, size * n);
  } catch (...) {
    return 0;
  }
  return size * n;
}

// -- error mapping ----------------------------------------------------------------------------

error transport_error(CURLcode rc, const char* detail) {
  error e;
  e.http_status = 0;
  e.retryable = true;
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT: e.code = errc::timeout; break;
  // Configuration or certificate problems do not heal by retrying.
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_OUT_OF_MEMORY:
    e.code = errc::transport;
    e.retryable = false;
    break;
  default: e.code = errc::transport; break;
  }
  // curl's error buffer names host and port at most, never the query (which may hold a SAS).
  e.message = "curl: ";
  e.message += curl_easy_strerror(rc);
  if (detail != nullptr && *detail != '\0') {
    e.message += ": ";
    e.message += detail;
  }
  return e;
}

// -- the pool ---------------------------------------------------------------------------------

struct easy_handle {
  CURL* curl = nullptr;
  char error_buffer[CURL_ERROR_SIZE] = {};

  easy_handle() = default;
  easy_handle(const easy_handle&) = delete;
  easy_handle& operator=(const easy_handle&) = delete;
  ~easy_handle() {
    if (curl != nullptr)
      curl_easy_cleanup(curl);
  }
};

// Frees a header list when the request ends, however it ends.
struct slist_guard {
  curl_slist* list = nullptr;
  ~slist_guard() { curl_slist_free_all(list); }
  bool append(const char* line) {
    curl_slist* next = curl_slist_append(list, line);
    if (next == nullptr)
      return false;
    list = next;
    return true;
  }
};

// `name` (any case) equals `lower_name` (lower-case).
bool is_named(std::string_view name, std::string_view lower_name) noexcept {
  if (name.size() != lower_name.size())
    return false;
  for (std::size_t i = 0; i < name.size(); ++i)
    if (ascii_lower(name[i]) != lower_name[i])
      return false;
  return true;
}

bool has_header(const http_request& req, std::string_view lower_name) noexcept {
  for (const auto& [k, v] : req.headers)
    if (is_named(k, lower_name))
      return true;
  return false;
}

class curl_transport final : public http_transport {
public:
  explicit curl_transport(curl_transport_options opts) : opts_(std::move(opts)) {
    reaper_ = std::jthread([this](std::stop_token st) { reap(st); });
  }
  // reaper_ (the last member) is stopped and joined first.
  ~curl_transport() override = default;

  result<http_response> send(const http_request& req) override {
    std::unique_ptr<easy_handle> h = acquire();
    if (!h)
      return std::unexpected(error{errc::transport, 0, {}, {}, false, 1,
                                   "curl: could not create an easy handle"});
    auto r = perform(*h, req);
    release(std::move(h));
    return r;
  }

private:
  struct idle_handle {
    std::unique_ptr<easy_handle> handle;
    std::chrono::steady_clock::time_point since; // put back then
  };

  std::unique_ptr<easy_handle> acquire() {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        auto h = std::move(idle_.back().handle);
        idle_.pop_back();
        return h;
      }
    }
    auto h = std::make_unique<easy_handle>();
    h->curl = curl_easy_init();
    if (h->curl == nullptr)
      return nullptr;
    CURL* c = h->curl;
    // Fixed options: set once per handle, they survive across requests.
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); // no SIGALRM for DNS timeouts: we are threaded
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->error_buffer);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(opts_.connect_timeout.count()));
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 30L);  // seconds
    curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 15L); // seconds
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, opts_.verify_peer ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, opts_.verify_peer ? 2L : 0L);
    if (!opts_.ca_file.empty())
      curl_easy_setopt(c, CURLOPT_CAINFO, opts_.ca_file.c_str());
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &on_body);
    return h;
  }

  void release(std::unique_ptr<easy_handle> h) {
    const auto now = std::chrono::steady_clock::now();
    std::vector<idle_handle> expired; // closed below, outside the lock
    std::lock_guard lock(mu_);
    if (idle_.size() < opts_.max_idle_connections)
      idle_.push_back({std::move(h), now});
    // else: h (and its connection) is closed when it goes out of scope
    expired = take_expired(now);
  }

  // Moves the handles idle for longer than max_idle_time out of the pool. Caller holds mu_.
  std::vector<idle_handle> take_expired(std::chrono::steady_clock::time_point now) {
    std::vector<idle_handle> expired;
    // The bottom of the stack is the longest idle.
    std::size_t n = 0;
    while (n < idle_.size() && now - idle_[n].since > opts_.max_idle_time)
      ++n;
    if (n > 0) {
      const auto end = idle_.begin() + static_cast<std::ptrdiff_t>(n);
      expired.assign(std::make_move_iterator(idle_.begin()), std::make_move_iterator(end));
      idle_.erase(idle_.begin(), end);
    }
    return expired;
  }

  // The reaper thread: every max_idle_time, closes the handles idle for longer, so a transport
  // that no request uses any more (a lane that found no work since a burst) frees them too.
  void reap(std::stop_token st) {
    std::unique_lock lock(mu_);
    while (!st.stop_requested()) {
      if (reaper_cv_.wait_for(lock, st, opts_.max_idle_time, [] { return false; }) || st.stop_requested())
        return;
      auto expired = take_expired(std::chrono::steady_clock::now());
      lock.unlock();
      expired.clear(); // curl_easy_cleanup closes their connections, outside the lock
      lock.lock();
    }
  }

  result<http_response> perform(easy_handle& h, const http_request& req) {
    CURL* c = h.curl;
    h.error_buffer[0] = '\0';
    http_response resp;
    resp.headers.reserve(16);

    slist_guard headers;
    std::string line;
    line.reserve(256);
    bool ok = true;
    for (const auto& [name, value] : req.headers) {
      if (is_named(name, "content-length"))
        continue; // computed from the body below
      line.assign(name);
      // "Name;" sends an empty header; "Name:" would remove it.
      if (value.empty()) {
        line += ';';
      } else {
        line += ": ";
        line += value;
      }
      ok = ok && headers.append(line.c_str());
    }
    // An empty Expect: stops curl's "Expect: 100-continue" round trip on large bodies.
    ok = ok && headers.append("Expect:");

    curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
    switch (req.method) {
    case http_method::get:
      curl_easy_setopt(c, CURLOPT_HTTPGET, 1L); // also clears a previous HEAD's NOBODY
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, nullptr);
      break;
    case http_method::head:
      curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
      curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, nullptr);
      break;
    case http_method::put:
    case http_method::post:
    case http_method::merge:
    case http_method::del: {
      // Every verb with a (possibly empty) body goes out as a POST whose verb is replaced:
      // curl then sends exactly our bytes, and an explicit Content-Length (0 included, which
      // Azure requires on a bodyless PUT).
      curl_easy_setopt(c, CURLOPT_NOBODY, 0L);
      curl_easy_setopt(c, CURLOPT_POST, 1L);
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.data());
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST,
                       req.method == http_method::post ? nullptr : to_string(req.method).data());
      line.assign("Content-Length: ");
      line += std::to_string(req.body.size());
      ok = ok && headers.append(line.c_str());
      // Without this curl adds "Content-Type: application/x-www-form-urlencoded", which is
      // signed and would break the signature.
      if (!has_header(req, "content-type"))
        ok = ok && headers.append("Content-Type:");
      break;
    }
    }
    if (!ok)
      return std::unexpected(error{errc::transport, 0, {}, {}, false, 1,
                                   "curl: out of memory building the header list"});
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.list);
    const auto timeout = req.timeout.count() > 0 ? req.timeout : opts_.request_timeout;
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    transfer t{&resp, req.max_body_bytes, 0, false};
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);

    const CURLcode rc = curl_easy_perform(c);
    // Do not leave pointers into this call's stack in the pooled handle.
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, nullptr);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, nullptr);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, nullptr);
    if (rc != CURLE_OK && t.over_limit) {
      long status = 0;
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
      std::string what = "response body";
      if (t.announced != 0)
        what += " of " + std::to_string(t.announced) + " bytes";
      return std::unexpected(error{errc::limit_exceeded, static_cast<int>(status), {}, {}, false, 1,
                                   what + " is larger than the " + std::to_string(req.max_body_bytes) +
                                       "-byte limit of this request; not read"});
    }
    if (rc != CURLE_OK) {
      error e = transport_error(rc, h.error_buffer);
      spdlog::debug("storage http: {} failed: {}", to_string(req.method), e.message);
      return std::unexpected(std::move(e));
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    resp.status = static_cast<int>(status);
    return resp;
  }

  const curl_transport_options opts_;
  std::mutex mu_;
  std::vector<idle_handle> idle_; // guarded by mu_; a stack, most recently used last
  std::condition_variable_any reaper_cv_; // only its stop token wakes the reaper early
  std::jthread reaper_;                   // last: stopped and joined before the pool goes
};

} // namespace

result<std::shared_ptr<http_transport>> make_curl_transport(const curl_transport_options& opts) {
  if (opts.connect_timeout.count() <= 0 || opts.request_timeout.count() <= 0 || opts.max_idle_time.count() <= 0)
    return std::unexpected(error::invalid("curl transport: timeouts must be positive"));
  if (!opts.ca_file.empty() && !std::ifstream(opts.ca_file).good())
    return std::unexpected(error::invalid("curl transport: ca_file '" + opts.ca_file +
                                          "' cannot be read"));
  if (const CURLcode rc = global_init(); rc != CURLE_OK)
    return std::unexpected(error::invalid(std::string("curl_global_init failed: ") +
                                          curl_easy_strerror(rc)));
  try {
    return std::shared_ptr<http_transport>(std::make_shared<curl_transport>(opts));
  } catch (const std::exception& e) {
    return std::unexpected(error::invalid(std::string("curl transport: ") + e.what()));
  }
}

} // namespace shoal::storage
