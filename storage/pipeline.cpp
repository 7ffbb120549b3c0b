#include "storage/pipeline.hpp"

#include "storage/backoff.hpp"
#include "storage/encoding.hpp"
#include "storage/shared_key.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <random>
#include <thread>

namespace shoal::storage {

struct pipeline::impl {
  storage_account account;
  pipeline_options opts;
  std::shared_ptr<http_transport> transport;
  std::string no_endpoint; // returned by endpoint() for an unknown service
};

namespace {

// The longest service message we keep in an error (the rest is noise for a log line).
constexpr std::size_t max_error_message_bytes = 512;

// -- retry policy -------------------------------------------------------------------------------

bool is_retryable_status(int status) noexcept {
  switch (status) {
  case 408:
  case 429:
  case 500:
  case 502:
  case 503:
  case 504: return true;
  default: return false;
  }
}

// Non-negative integer header value, or nullopt (absent, empty, not a number, absurdly big).
std::optional<long long> header_integer(const http_response& r, std::string_view name) {
  const auto v = r.header(name);
  if (!v || v->empty() || v->size() > 12)
    return std::nullopt;
  long long n = 0;
  for (const char c : *v) {
    if (c < '0' || c > '9')
      return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n;
}

// The delay the service asked for, if any (the order the C++ SDK checks them in).
// Retry-After in its HTTP-date form is ignored, as the SDKs do.
std::optional<std::chrono::milliseconds> server_delay(const http_response& r) {
  if (auto ms = header_integer(r, "retry-after-ms"))
    return std::chrono::milliseconds{*ms};
  if (auto ms = header_integer(r, "x-ms-retry-after-ms"))
    return std::chrono::milliseconds{*ms};
  if (auto s = header_integer(r, "retry-after"))
    return std::chrono::milliseconds{*s * 1000};
  return std::nullopt;
}

// The delay after failed attempt `attempt` (1-based): the one policy, storage/backoff.hpp.
std::chrono::milliseconds backoff(const retry_options& o, int attempt, double unit) {
  return backoff_delay({o.base_delay, o.max_delay, o.jitter}, attempt, unit);
}

// -- error bodies -------------------------------------------------------------------------------

std::string xml_unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '&') {
      static constexpr std::pair<std::string_view, char> entities[] = {
          {"&lt;", '<'}, {"&gt;", '>'}, {"&amp;", '&'}, {"&quot;", '"'}, {"&apos;", '\''}};
      bool done = false;
      for (const auto& [ent, ch] : entities)
        if (s.substr(i, ent.size()) == ent) {
          out += ch;
          i += ent.size() - 1;
          done = true;
          break;
        }
      if (done)
        continue;
    }
    out += s[i];
  }
  return out;
}

// Text of the first <tag>…</tag> in `body`; a substring scan is enough for the flat
// <Error><Code/><Message/></Error> documents of the blob and queue services.
std::string xml_element(std::string_view body, std::string_view tag) {
  const std::string open = "<" + std::string(tag) + ">";
  const std::string close = "</" + std::string(tag) + ">";
  const std::size_t b = body.find(open);
  if (b == std::string_view::npos)
    return {};
  const std::size_t start = b + open.size();
  const std::size_t e = body.find(close, start);
  if (e == std::string_view::npos)
    return {};
  return xml_unescape(body.substr(start, e - start));
}

// Service code and message from an error body: table JSON {"odata.error":{"code":…,
// "message":{"value":…}}} or blob/queue (and Azurite's table 403) XML <Error>.
void parse_error_body(std::string_view body, std::string& code, std::string& message) {
  if (body.starts_with("\xEF\xBB\xBF")) // Azure's XML error bodies start with a UTF-8 BOM
    body.remove_prefix(3);
  std::size_t first = 0;
  while (first < body.size() && std::isspace(static_cast<unsigned char>(body[first])))
    ++first;
  if (first < body.size() && body[first] == '{') {
    try {
      const auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
      if (j.is_object()) {
        const auto err = j.find("odata.error");
        if (err != j.end() && err->is_object()) {
          const auto c = err->find("code");
          if (c != err->end() && c->is_string())
            code = c->get<std::string>();
          const auto m = err->find("message");
          if (m != err->end() && m->is_object()) {
            const auto v = m->find("value");
            if (v != m->end() && v->is_string())
              message = v->get<std::string>();
          } else if (m != err->end() && m->is_string()) {
            message = m->get<std::string>();
          }
        }
      }
    } catch (const std::exception&) {
      // a malformed error body just leaves the message empty
    }
  } else if (first < body.size() && body[first] == '<') {
    code = xml_element(body, "Code");
    message = xml_element(body, "Message");
  }
  // Azure appends "\nRequestId:…\nTime:…": the request id has its own field.
  if (const std::size_t nl = message.find('\n'); nl != std::string::npos)
    message.resize(nl);
  while (!message.empty() && (message.back() == '\r' || message.back() == ' '))
    message.pop_back();
  if (message.size() > max_error_message_bytes)
    message.resize(max_error_message_bytes);
}

error error_from_response(const http_response& r) {
  error e;
  e.http_status = r.status;
  std::string body_code;
  parse_error_body(r.body, body_code, e.message);
  if (auto c = r.header("x-ms-error-code"); c && !c->empty())
    e.service_code = std::string(*c);
  else
    e.service_code = std::move(body_code);
  if (auto id = r.header("x-ms-request-id"))
    e.request_id = std::string(*id);
  e.code = errc_from_http(r.status, e.service_code);
  e.retryable = is_retryable_status(r.status);
  if (e.message.empty())
    e.message = "HTTP " + std::to_string(r.status);
  return e;
}

// -- request building ---------------------------------------------------------------------------

const std::string& endpoint_of(const storage_account& a, service svc) noexcept {
  switch (svc) {
  case service::blob: return a.blob_endpoint;
  case service::queue: return a.queue_endpoint;
  case service::table: return a.table_endpoint;
  }
  return a.table_endpoint;
}

std::string_view service_name(service svc) noexcept {
  switch (svc) {
  case service::blob: return "blob";
  case service::queue: return "queue";
  case service::table: return "table";
  }
  return "?";
}

// Offset of the path in an absolute URL ("http://host:port/path" → index of "/path").
std::size_t path_offset(std::string_view url) noexcept {
  const std::size_t scheme = url.find("://");
  const std::size_t from = scheme == std::string_view::npos ? 0 : scheme + 3;
  const std::size_t slash = url.find('/', from);
  return slash == std::string_view::npos ? url.size() : slash;
}

// -- request counts -------------------------------------------------------------------------------

// The value of query parameter `name`, or "" when absent.
std::string_view query_value(const storage_request& req, std::string_view name) noexcept {
  for (const auto& [k, v] : req.query)
    if (k == name)
      return v;
  return {};
}

bool has_query(const storage_request& req, std::string_view name) noexcept {
  for (const auto& [k, v] : req.query)
    if (k == name)
      return true;
  return false;
}

// Process-wide counters: one lock per request (each costs an HTTP round trip, so the map lookup
// is noise), keyed by service, resource and op.
struct request_counters {
  std::mutex m;
  std::map<std::tuple<service, std::string, std::string>, std::uint64_t> counts;
};

request_counters& counters() {
  static request_counters* c = new request_counters(); // never destroyed: used until exit
  return *c;
}

std::string resource_of(service svc, std::string_view path, std::string_view body);

// `body` is what is sent (req.body may have been moved out).
void count_request(service svc, const storage_request& req, std::string_view body) {
  auto key = std::make_tuple(svc, resource_of(svc, req.path, body), std::string(request_kind(svc, req)));
  auto& c = counters();
  std::lock_guard lk(c.m);
  ++c.counts[std::move(key)];
}

} // namespace

std::string_view to_string(service svc) noexcept { return service_name(svc); }

std::string_view request_kind(service svc, const storage_request& req) noexcept {
  const std::string_view path = req.path;
  const std::string_view comp = query_value(req, "comp");
  const bool container_level = query_value(req, "restype") == "container";
  switch (svc) {
  case service::table: {
    if (path == "/$batch")
      return "batch";
    const bool tables = path == "/Tables" || path.starts_with("/Tables(");
    const bool keyed = path.find('(') != std::string_view::npos && !path.ends_with("()"); // "/t()" = a query
    switch (req.method) {
    case http_method::post: return tables ? "create_table" : "insert";
    case http_method::get: return tables ? "list_tables" : keyed ? "get" : "query";
    case http_method::merge: return "merge";
    case http_method::put: return "update";
    case http_method::del: return tables ? "delete_table" : "delete";
    case http_method::head: return "other";
    }
    return "other";
  }
  case service::blob:
    switch (req.method) {
    case http_method::put:
      if (container_level)
        return comp.empty() ? "create_container" : "other";
      if (comp.empty())
        return "put";
      if (comp == "block")
        return "put_block";
      if (comp == "blocklist")
        return "put_block_list";
      if (comp == "appendblock")
        return "append_block";
      if (comp == "metadata")
        return "set_metadata";
      return "other";
    case http_method::get:
      if (comp == "list")
        return "list";
      return container_level ? "other" : comp.empty() ? "get" : "other";
    case http_method::head: return "properties";
    case http_method::del: return container_level ? "delete_container" : "delete";
    default: return "other";
    }
  case service::queue: {
    const bool messages = path.find("/messages") != std::string_view::npos;
    const bool one_message = messages && !path.ends_with("/messages");
    switch (req.method) {
    case http_method::get:
      if (!messages)
        return "properties";
      return query_value(req, "peekonly") == "true" ? "peek_messages" : "get_messages";
    case http_method::post: return messages ? "put_message" : "other";
    case http_method::put:
      if (one_message)
        return "update_message";
      return messages || has_query(req, "comp") ? "other" : "create_queue";
    case http_method::del: return one_message ? "delete_message" : messages ? "other" : "delete_queue";
    default: return "other";
    }
  }
  }
  return "other";
}

namespace {

std::string resource_of(service svc, std::string_view path, std::string_view body) {
  if (svc == service::table && path == "/$batch") {
    // The first inner request line: "{METHOD} {endpoint}/{table}[(keys)] HTTP/1.1".
    const auto http = body.find(" HTTP/1.1");
    if (http == std::string_view::npos)
      return "$batch";
    const auto line = body.rfind('\n', http);
    std::string_view url = body.substr(line == std::string_view::npos ? 0 : line + 1,
                                       http - (line == std::string_view::npos ? 0 : line + 1));
    if (const auto sp = url.find(' '); sp != std::string_view::npos)
      url.remove_prefix(sp + 1);
    if (const auto paren = url.find('('); paren != std::string_view::npos)
      url = url.substr(0, paren);
    const auto slash = url.rfind('/');
    return std::string(slash == std::string_view::npos ? url : url.substr(slash + 1));
  }
  if (path.starts_with('/'))
    path.remove_prefix(1);
  const auto end = path.find_first_of(svc == service::table ? "/(" : "/");
  return std::string(path.substr(0, end));
}

} // namespace

std::string request_resource(service svc, const storage_request& req) {
  return resource_of(svc, req.path, req.body);
}

std::vector<request_count> process_request_counts() {
  std::vector<request_count> out;
  auto& c = counters();
  std::lock_guard lk(c.m);
  out.reserve(c.counts.size());
  for (const auto& [k, n] : c.counts)
    out.push_back({std::get<0>(k), std::get<2>(k), std::get<1>(k), n});
  return out;
}

result<pipeline> pipeline::make(storage_account account, pipeline_options opts,
                                std::shared_ptr<http_transport> transport) {
  const retry_options& r = opts.retry;
  if (r.max_attempts < 1)
    return std::unexpected(error::invalid("pipeline: retry.max_attempts must be >= 1"));
  if (r.base_delay.count() < 0 || r.max_delay.count() < 0)
    return std::unexpected(error::invalid("pipeline: retry delays must be >= 0"));
  if (!(r.jitter >= 0.0 && r.jitter <= 1.0))
    return std::unexpected(error::invalid("pipeline: retry.jitter must be in [0, 1]"));
  if (!transport) {
    auto t = make_curl_transport(opts.http);
    if (!t)
      return std::unexpected(std::move(t.error()));
    transport = std::move(*t);
  }
  pipeline_hooks& h = opts.hooks;
  if (!h.now)
    h.now = [] { return std::chrono::system_clock::now(); };
  if (!h.random_unit)
    h.random_unit = backoff_random_unit;
  if (!h.sleep)
    h.sleep = [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
  try {
    auto p = std::make_shared<impl>();
    p->account = std::move(account);
    p->opts = std::move(opts);
    p->transport = std::move(transport);
    return pipeline(std::move(p));
  } catch (const std::exception& e) {
    return std::unexpected(error::invalid(std::string("pipeline: ") + e.what()));
  }
}

const storage_account& pipeline::account() const noexcept { return impl_->account; }

const std::string& pipeline::endpoint(service svc) const noexcept {
  return endpoint_of(impl_->account, svc);
}

const pipeline_options& pipeline::options() const noexcept { return impl_->opts; }

result<http_response> pipeline::send(service svc, const storage_request& req) const {
  return send_with_body(svc, req, req.body);
}

result<http_response> pipeline::send(service svc, storage_request&& req) const {
  std::string body = std::move(req.body);
  req.body.clear();
  return send_with_body(svc, req, std::move(body));
}

// `req.body` is not read here: the body to send is `body` (copied or moved by the caller).
result<http_response> pipeline::send_with_body(service svc, const storage_request& req,
                                               std::string body) const {
  const impl& p = *impl_;
  const storage_account& acct = p.account;
  const std::string& ep = endpoint_of(acct, svc);
  if (ep.empty())
    return std::unexpected(error::invalid("pipeline: the account has no " +
                                          std::string(service_name(svc)) + " endpoint"));
  if (!req.path.empty() && req.path.front() != '/')
    return std::unexpected(error::invalid("pipeline: request path must start with '/'"));

  http_request hr;
  hr.method = req.method;
  hr.timeout = req.timeout;
  hr.max_body_bytes = req.max_body_bytes;
  // URL = endpoint + path + encoded query (+ SAS). The signed path is exactly what is sent.
  std::string& url = hr.url;
  url.reserve(ep.size() + req.path.size() + 64 + acct.sas.size());
  url = ep;
  url += req.path;
  const std::size_t path_at = path_offset(url);
  if (path_at == url.size())
    url += '/'; // host-style endpoint and no path: the path is "/"
  const std::size_t path_len = url.size() - path_at;
  char sep = '?';
  for (const auto& [name, value] : req.query) {
    url += sep;
    // '$' stays literal in names ($filter, $top, $select): it is legal in a query (RFC 3986
    // sub-delims) and it is how the Table REST pages write them.
    if (name.starts_with('$')) {
      url += '$';
      url += url_encode(std::string_view(name).substr(1));
    } else {
      url += url_encode(name);
    }
    url += '=';
    url += url_encode(value);
    sep = '&';
  }
  const bool use_sas = !acct.sas.empty();
  if (use_sas) {
    url += sep;
    url += acct.sas;
  }
  const bool sign = !use_sas && !acct.key.empty();

  // Headers: the caller's, then x-ms-date / x-ms-version / Authorization, filled per attempt.
  hr.headers.reserve(req.headers.size() + 3);
  hr.headers = req.headers;
  const std::size_t date_at = hr.headers.size();
  hr.headers.emplace_back("x-ms-date", std::string());
  if (shared_key::find_header(req.headers, "x-ms-version").empty()) {
    const std::string& version = svc == service::blob    ? p.opts.blob_api_version
                                 : svc == service::queue ? p.opts.queue_api_version
                                                         : p.opts.table_api_version;
    hr.headers.emplace_back("x-ms-version", version);
  }
  const std::size_t auth_at = hr.headers.size();
  if (sign)
    hr.headers.emplace_back("Authorization", std::string());
  hr.body = std::move(body);

  const retry_options& retry = p.opts.retry;
  const bool lite = svc == service::table && p.opts.table_auth == table_auth_scheme::shared_key_lite;
  for (int attempt = 1;; ++attempt) {
    // Re-stamp and re-sign every attempt: a retry may come long after the first try, and
    // Azure rejects dates more than 15 minutes off.
    hr.headers[date_at].second = format_http_date(p.opts.hooks.now());
    if (sign) {
      const shared_key::signing_input in{
          .method = req.method,
          .account = acct.name,
          .path = std::string_view(hr.url).substr(path_at, path_len),
          .query = req.query,
          .headers = hr.headers,
          .content_length = hr.body.size(),
      };
      const std::string to_sign = svc != service::table ? shared_key::blob_queue_string_to_sign(in)
                                  : lite ? shared_key::table_lite_string_to_sign(in)
                                         : shared_key::table_string_to_sign(in);
      hr.headers[auth_at].second =
          shared_key::authorization(acct.name, shared_key::signature(acct.key, to_sign), lite);
    }

    count_request(svc, req, hr.body);
    auto r = p.transport->send(hr);
    if (r && r->status < 400) {
      r->attempts = attempt;
      return r;
    }

    error e;
    std::optional<std::chrono::milliseconds> asked;
    if (!r) {
      e = std::move(r.error());
    } else {
      e = error_from_response(*r);
      if (e.retryable)
        asked = server_delay(*r);
    }
    e.attempts = attempt;
    if (!e.retryable || attempt >= retry.max_attempts)
      return std::unexpected(std::move(e));

    const auto delay = asked ? std::min(*asked, retry.max_delay)
                             : backoff(retry, attempt, p.opts.hooks.random_unit());
    spdlog::debug("storage {}: {} attempt {} failed ({}), retrying in {} ms", service_name(svc),
                  to_string(req.method), attempt, e.describe(), delay.count());
    p.opts.hooks.sleep(delay);
  }
}

} // namespace shoal::storage
