#include "workers/web/dashboard.hpp"

#include "workers/fleet/metrics.hpp"
#include "workers/fleet/status.hpp"
#include "workers/fleet/supervisor.hpp"
#include "workers/version.hpp"
#include "workers/web/assets.hpp"
#include "workers/web/guard.hpp"
#include "workers/fleet/queue_monitor.hpp"
#include "workers/web/sources.hpp"

#include <civetweb.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>

namespace shoal::workers::web {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

constexpr long long max_body_bytes = 64 * 1024; // an action's JSON body
constexpr std::size_t list_limit_default = 200;
constexpr std::size_t list_limit_max = 1000;

// Only the dashboard's own scripts and styles run; data is never markup (dashboard.hpp).
constexpr const char* security_headers =
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "X-Frame-Options: DENY\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Cross-Origin-Resource-Policy: same-origin\r\n";

// The page paths, each served as the HTML shell.
constexpr std::array<std::string_view, 5> pages{"/fleet", "/queues", "/dead", "/etl", "/persistor"};

void send(mg_connection* c, int status, std::string_view type, std::string_view body,
          std::string_view cache = "no-store") {
  mg_printf(c,
            "HTTP/1.1 %d %s\r\nContent-Type: %.*s\r\nContent-Length: %zu\r\nCache-Control: %.*s\r\n%s"
            "Connection: close\r\n\r\n",
            status, mg_get_response_code_text(c, status), static_cast<int>(type.size()), type.data(), body.size(),
            static_cast<int>(cache.size()), cache.data(), security_headers);
  mg_write(c, body.data(), body.size());
}

void send_json(mg_connection* c, int status, const std::string& body) {
  send(c, status, "application/json; charset=utf-8", body);
}

void send_error(mg_connection* c, int status, const std::string& why) {
  send_json(c, status, json{{"ok", false}, {"error", why}}.dump(-1, ' ', false, json::error_handler_t::replace));
}

int status_of(const error& e) {
  if (e.code == errc::storage && e.storage_code == storage::errc::not_found)
    return 404; // the table (runs, catalog) does not exist yet
  switch (e.code) {
  case errc::invalid_argument: return 400;
  case errc::not_found: return 404;
  case errc::timeout: return 504;
  default: return 502; // storage or SQL behind the dashboard failed
  }
}

std::string header(const mg_connection* c, const char* name) {
  const char* v = mg_get_header(c, name);
  return v ? v : "";
}

// A query-string variable, URL-decoded; "" when absent.
std::string query_var(const mg_request_info* ri, const char* name) {
  if (!ri->query_string)
    return "";
  std::string buf(4096, '\0');
  const int n = mg_get_var(ri->query_string, std::strlen(ri->query_string), name, buf.data(), buf.size());
  if (n < 0)
    return "";
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

std::size_t limit_var(const mg_request_info* ri) {
  const auto s = query_var(ri, "limit");
  if (s.empty())
    return list_limit_default;
  const auto n = std::strtoull(s.c_str(), nullptr, 10);
  return std::clamp<std::size_t>(n ? n : list_limit_default, 1, list_limit_max);
}

} // namespace

struct dashboard::impl {
  dashboard_options opts;
  std::optional<std::string> token;
  std::unique_ptr<dashboard_data> data;
  fleet::fleet_feed feed;
  mg_context* ctx = nullptr;

  ~impl() {
    if (ctx)
      mg_stop(ctx); // joins civetweb's threads: no handler runs after this
  }

  static int on_request(mg_connection* c, void* self) {
    try {
      return static_cast<impl*>(self)->route(c);
    } catch (const std::exception& e) { // a handler must never take the server down
      spdlog::error("dashboard: {}", e.what());
      send_error(c, 500, "internal error");
      return 500;
    }
  }

  int route(mg_connection* c) {
    const mg_request_info* ri = mg_get_request_info(c);
    const std::string method = ri->request_method ? ri->request_method : "";
    const std::string path = ri->local_uri ? ri->local_uri : "/";
    if (path.starts_with("/api/dead/") && (path == "/api/dead/requeue" || path == "/api/dead/purge"))
      return action(c, ri, method, path.substr(std::strlen("/api/dead/")));
    if (method != "GET" && method != "HEAD") {
      send_error(c, 405, "only GET here");
      return 405;
    }
    if (path == "/") {
      mg_printf(c, "HTTP/1.1 302 Found\r\nLocation: /fleet\r\nContent-Length: 0\r\n%sConnection: close\r\n\r\n",
                security_headers);
      return 302;
    }
    for (auto p : pages)
      if (path == p)
        return file(c, "/static/index.html");
    if (path.starts_with("/static/"))
      return file(c, path);
    if (path == "/api/config")
      return reply(c, config_json());
    if (path == "/api/fleet")
      return fleet(c);
    if (path == "/api/queues")
      return reply(c, data->queues_json());
    if (path == "/api/dead")
      return reply(c, data->dead_json(query_var(ri, "queue").empty() ? default_queue() : query_var(ri, "queue"),
                                       limit_var(ri)));
    if (path == "/api/etl")
      return reply(c, data->etl_json(query_var(ri, "status"), limit_var(ri)));
    if (path == "/api/etl/run")
      return reply(c, data->etl_run_json(query_var(ri, "id")));
    if (path == "/api/persistor")
      return reply(c, data->persistor_json());
    if (path == "/api/catalog")
      return reply(c, data->catalog_json(
                          {query_var(ri, "dest"), query_var(ri, "date"), query_var(ri, "host"), limit_var(ri)}));
    send_error(c, 404, "no such page: " + path);
    return 404;
  }

  std::string default_queue() const { return fleet::resolve_worker_queue(opts.cfg); }

  int file(mg_connection* c, const std::string& path) {
    const asset* a = find_asset(path);
    if (!a) {
      send_error(c, 404, "no such file: " + path);
      return 404;
    }
    send(c, 200, a->content_type, std::string_view(reinterpret_cast<const char*>(a->data), a->size), "no-cache");
    return 200;
  }

  int reply(mg_connection* c, const result<std::string>& r) {
    if (!r) {
      send_error(c, status_of(r.error()), r.error().describe());
      return status_of(r.error());
    }
    send_json(c, 200, *r);
    return 200;
  }

  std::string config_json() const {
    const auto& w = opts.cfg.web;
    return json{{"version", std::string(version())},
                {"refresh_ms", w.refresh_ms},
                {"sample_ms", w.sample_ms},
                {"actions", token.has_value()},
                {"default_queue", default_queue()},
                {"etl_queue", opts.cfg.etl.queue},
                {"max_attempts", opts.cfg.work.max_attempts}}
        .dump();
  }

  int fleet(mg_connection* c) {
    // A view at most one refresh old; else the supervisor's loop builds one within milliseconds.
    auto s = feed.get(milliseconds(std::max<std::uint32_t>(opts.cfg.web.refresh_ms / 2, 250)), milliseconds(2000));
    if (!s) {
      send_error(c, 503, "the supervisor has not published its fleet view yet");
      return 503;
    }
    send_json(c, 200, fleet::to_json(*s));
    return 200;
  }

  int action(mg_connection* c, const mg_request_info* ri, const std::string& method, const std::string& what) {
    action_headers h{method,
                     header(c, "Authorization"),
                     header(c, "Content-Type"),
                     header(c, "Origin"),
                     header(c, "Host"),
                     header(c, "Sec-Fetch-Site")};
    auto count = [&](const char* outcome) {
      if (opts.metrics)
        opts.metrics->add_web_action(what, outcome);
    };
    if (auto no = check_action(h, token)) {
      spdlog::warn("dashboard: {} from {} refused: {}", what, ri->remote_addr, no->why);
      count("refused");
      send_error(c, no->status, no->why);
      return no->status;
    }
    if (ri->content_length < 0 || ri->content_length > max_body_bytes) {
      count("refused");
      send_error(c, 413, "the body must have a Content-Length of at most 64 KiB");
      return 413;
    }
    std::string body(static_cast<std::size_t>(ri->content_length), '\0');
    std::size_t got = 0;
    while (got < body.size()) {
      const int n = mg_read(c, body.data() + got, body.size() - got);
      if (n <= 0)
        break;
      got += static_cast<std::size_t>(n);
    }
    body.resize(got);
    record_action a;
    try {
      auto j = json::parse(body);
      a.queue = j.value("queue", std::string());
      if (j.contains("ids"))
        a.ids = j.at("ids").get<std::vector<std::string>>();
      a.all_dead = j.value("all", false);
    } catch (const std::exception& e) {
      count("refused");
      send_error(c, 400, std::string("the body is not {\"queue\": …, \"ids\": […] | \"all\": true}: ") + e.what());
      return 400;
    }
    if (a.queue.empty() || (a.ids.empty() && !a.all_dead)) {
      count("refused");
      send_error(c, 400, "name a queue and the records: {\"queue\": …, \"ids\": […]} or \"all\": true");
      return 400;
    }
    auto r = what == "requeue" ? data->requeue(a) : data->purge(a);
    if (!r) {
      count("failed");
      send_error(c, status_of(r.error()), r.error().describe());
      return status_of(r.error());
    }
    count("done");
    spdlog::info("dashboard: {} of {} in queue '{}' by {}: {} record(s)", what,
                 a.all_dead ? std::string("every dead record") : std::to_string(a.ids.size()) + " id(s)", a.queue,
                 ri->remote_addr, *r);
    send_json(c, 200, json{{"ok", true}, {"action", what}, {"queue", a.queue}, {"changed", *r}}.dump(
                          -1, ' ', false, json::error_handler_t::replace));
    return 200;
  }
};

dashboard::dashboard(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
dashboard::~dashboard() = default;

fleet::fleet_feed& dashboard::feed() noexcept { return impl_->feed; }

std::vector<int> dashboard::ports() const {
  std::array<mg_server_port, 4> ports{};
  const int n = mg_get_server_ports(impl_->ctx, static_cast<int>(ports.size()), ports.data());
  std::vector<int> out;
  for (int i = 0; i < n; ++i)
    out.push_back(ports[static_cast<std::size_t>(i)].port);
  return out;
}

result<std::unique_ptr<dashboard>> dashboard::start(dashboard_options opts) {
  auto m = std::make_unique<impl>();
  if (!opts.cfg.web.token_file.empty()) {
    auto t = read_token_file(opts.cfg.web.token_file);
    if (!t)
      return std::unexpected(t.error());
    m->token = *std::move(t);
  }
  m->data = std::make_unique<dashboard_data>(opts.cfg, opts.pipe, opts.queues);
  m->opts = std::move(opts);
  const auto& w = m->opts.cfg.web;
  // civetweb takes "host:port"; an IPv6 literal needs brackets.
  std::string bind = w.address.find(':') != std::string::npos ? "[" + w.address + "]" : w.address;
  bind += ":" + std::to_string(w.port);
  const std::string threads = std::to_string(std::max(1u, m->opts.threads));
  const char* options[] = {"listening_ports", bind.c_str(), "num_threads", threads.c_str(),
                           "request_timeout_ms", "30000", "enable_keep_alive", "no", nullptr};
  mg_callbacks callbacks{};
  char why[256] = {};
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.configuration_options = options;
  mg_error_data err{};
  err.text = why;
  err.text_buffer_size = sizeof why;
  m->ctx = mg_start2(&init, &err);
  if (!m->ctx)
    return fail(errc::io, "dashboard: cannot listen on " + bind + ": " + (why[0] ? why : "civetweb failed to start"));
  mg_set_request_handler(m->ctx, "/", &impl::on_request, m.get());
  if (!m->token)
    spdlog::info("dashboard: no [web] token_file: requeue and purge are disabled");
  return std::unique_ptr<dashboard>(new dashboard(std::move(m)));
}

fleet::dashboard_starter dashboard_starter() {
  return [](fleet::dashboard_context c) -> result<std::unique_ptr<fleet::supervisor_dashboard>> {
    dashboard_options o;
    o.cfg = std::move(c.cfg);
    o.pipe = std::move(c.pipe);
    o.queues = c.queues;
    o.metrics = c.metrics;
    auto d = dashboard::start(std::move(o));
    if (!d)
      return std::unexpected(d.error());
    return std::unique_ptr<fleet::supervisor_dashboard>(std::move(*d));
  };
}

} // namespace shoal::workers::web
