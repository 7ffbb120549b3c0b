// `shoal send`: a producer that streams a JSON array, NDJSON or CSV file (or stdin) to a
// persistor as `persist.record` envelopes and waits until every record is acknowledged.
//
//   shoal send flights.ndjson --dest flights --event-time-field ts [--id-field id]
//              [--endpoint tcp://127.0.0.1:5590] [--ack-timeout-ms 10000] [--timeout-s 300]
//              [--window 20000] [--stall-flush-ms 250] [--progress | --quiet] [--no-flush]
//              [--curve-server-key persistor.pub --curve-secret-key producer.key]
//
// To a persistor on a tcp endpoint that is not loopback the link is CURVE (the persistor admits
// only the producer keys in its curve_allow_dir): --curve-server-key names its public key file,
// --curve-secret-key this producer's key file. A refused key is reported at once.
//
// Each record gets a stable message id — a 128-bit hash of its --id-field value, or the file
// path's 64-bit hash followed by the record number (big-endian, so one file's ids sort in file
// order and the SQL sinks' message-id index grows at its right edge) — so re-sending (after an
// ack timeout, or re-running the command) never creates a second identity. Records not acked within --ack-timeout-ms are sent again.
// After the last record a `persist.flush` asks the persistor to seal its open batches now.
// Exit status: 0 when every record was acked; 1 naming how many were not (or were rejected);
// 2 for bad arguments or an unreadable file. A line that is not valid JSON (or a CSV row with the
// wrong number of fields) is reported on stderr and still sent, as text, so nothing is lost.

#include "workers/cmd/cli.hpp"

#include "storage/encoding.hpp"
#include "transport/curve.hpp"
#include "transport/endpoint.hpp"
#include "transport/socket.hpp"
#include "workers/cmd/input_reader.hpp"
#include "workers/json_limits.hpp"
#include "workers/persistor/engine.hpp"
#include "workers/persistor/sources.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <stdexcept>
#include <unistd.h>
#include <unordered_map>

namespace shoal::cmd {
namespace {

struct send_args {
  std::string file = "-";
  std::string dest;
  std::string event_time_field;
  std::string id_field;
  std::string format = "auto";
  std::string endpoint;
  std::uint32_t ack_timeout_ms = 10'000;
  std::uint32_t timeout_s = 300;
  std::uint32_t window = 20'000;
  std::uint32_t stall_flush_ms = 250;
  bool progress = false;
  bool quiet = false;
  bool no_flush = false;
  std::string curve_secret_key; ///< this producer's CURVE secret key file
  std::string curve_public_key; ///< optional: its public key file, checked against the secret
  std::string curve_server_key; ///< the persistor's public key file (its curve_public_key)
};

// CURVE on the link to the persistor (transport/ENVELOPE.md "Third-party producers"): with
// --curve-server-key this producer is a CURVE client presenting its own key pair; a tcp
// endpoint that is not loopback requires it (such a persistor is always a CURVE server).
// Prints what is wrong and returns false.
bool setup_producer_curve(const send_args& a, const std::string& endpoint, zmq::socket_t& s) {
  auto ep = transport::endpoint::parse(endpoint, transport::endpoint_use::connect);
  if (!ep) {
    std::fprintf(stderr, "shoal send: endpoint %s: %s\n", endpoint.c_str(), ep.error().describe().c_str());
    return false;
  }
  if (a.curve_server_key.empty() && a.curve_secret_key.empty()) {
    if (ep->host_local())
      return true;
    std::fprintf(stderr, "shoal send: %s is not loopback: the persistor there is a CURVE server; give "
                         "--curve-server-key (its public key file) and --curve-secret-key (this "
                         "producer's key, whose .pub is in the persistor's curve_allow_dir)\n",
                 endpoint.c_str());
    return false;
  }
  if (a.curve_server_key.empty() || a.curve_secret_key.empty()) {
    std::fprintf(stderr, "shoal send: --curve-server-key and --curve-secret-key go together\n");
    return false;
  }
  auto keys = transport::load_curve_secret_key(a.curve_secret_key);
  if (!keys) {
    std::fprintf(stderr, "shoal send: --curve-secret-key %s: %s\n", a.curve_secret_key.c_str(),
                 keys.error().describe().c_str());
    return false;
  }
  if (!a.curve_public_key.empty()) {
    auto pub = transport::load_curve_public_key(a.curve_public_key);
    if (!pub || *pub != keys->public_key) {
      std::fprintf(stderr, "shoal send: --curve-public-key %s is not the public half of %s\n",
                   a.curve_public_key.c_str(), a.curve_secret_key.c_str());
      return false;
    }
  }
  auto server = transport::load_curve_public_key(a.curve_server_key);
  if (!server) {
    std::fprintf(stderr, "shoal send: --curve-server-key %s: %s\n", a.curve_server_key.c_str(),
                 server.error().describe().c_str());
    return false;
  }
  if (auto c = transport::configure_curve_client(s, *keys, *server); !c) {
    std::fprintf(stderr, "shoal send: CURVE: %s\n", c.error().describe().c_str());
    return false;
  }
  spdlog::info("send: CURVE client with key {} to a persistor with key {}", keys->public_key, *server);
  return true;
}

std::uint64_t fnv1a(std::string_view s, std::uint64_t h) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

transport::message_id stable_id(std::string_view key) {
  const std::uint64_t a = workers::persistor::splitmix64(fnv1a(key, 14695981039346656037ull));
  const std::uint64_t b = workers::persistor::splitmix64(fnv1a(key, 0x84222325cbf29ce4ull) ^ 0x9e3779b97f4a7c15ull);
  transport::message_id id{};
  std::memcpy(id.data(), &a, 8);
  std::memcpy(id.data() + 8, &b, 8);
  return id;
}

// The id of record `n` of `origin` when no --id-field names one: the origin's 64-bit hash, then
// n, both big-endian. Unique per (file, record); ids of one file sort in record order, so a
// load keyed by message id (a B-tree) appends instead of touching a random page per row.
transport::message_id ordered_id(std::string_view origin, std::uint64_t n) {
  const std::uint64_t a = workers::persistor::splitmix64(fnv1a(origin, 14695981039346656037ull));
  transport::message_id id{};
  for (int i = 0; i < 8; ++i) {
    id[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(a >> (8 * (7 - i)));
    id[static_cast<std::size_t>(8 + i)] = static_cast<std::uint8_t>(n >> (8 * (7 - i)));
  }
  return id;
}

// One record read from the input: its payload and its stable id.
struct input_record {
  std::string payload;
  transport::message_id id{};
};

// Reads records one at a time from a JSON array, NDJSON or CSV input (workers::input_reader)
// and turns each item into a payload and a stable id.
class reader {
public:
  static std::optional<reader> open(const send_args& a) {
    reader r;
    r.id_field_ = a.id_field;
    if (a.file == "-") {
      r.in_ = &std::cin;
      r.origin_ = "stdin";
    } else {
      r.file_ = std::make_unique<std::ifstream>(a.file, std::ios::binary);
      if (!*r.file_) {
        std::fprintf(stderr, "shoal send: cannot open %s: %s\n", a.file.c_str(), std::strerror(errno));
        return std::nullopt;
      }
      r.in_ = r.file_.get();
      std::error_code ec;
      auto canon = std::filesystem::weakly_canonical(a.file, ec);
      r.origin_ = ec ? a.file : canon.string();
    }
    auto fmt = workers::choose_input_format(a.format, a.file == "-" ? "" : a.file, *r.in_);
    if (!fmt) {
      std::fprintf(stderr, "shoal send: --format: %s\n", fmt.error().message.c_str());
      return std::nullopt;
    }
    auto in = workers::input_reader::open(*r.in_, *fmt, r.origin_);
    if (!in) {
      std::fprintf(stderr, "shoal send: %s; nothing sent\n", in.error().message.c_str());
      return std::nullopt;
    }
    r.input_ = std::make_unique<workers::input_reader>(std::move(*in));
    if (*fmt == workers::input_format::csv) {
      const auto& header = r.input_->header();
      // Payload keys in the order (and with the last-of-duplicates rule) nlohmann's object gave.
      for (std::size_t i = 0; i < header.size(); ++i)
        r.csv_order_.push_back(i);
      std::stable_sort(r.csv_order_.begin(), r.csv_order_.end(),
                       [&](std::size_t x, std::size_t y) { return header[x] < header[y]; });
      std::vector<std::size_t> last;
      for (std::size_t k = 0; k < r.csv_order_.size(); ++k)
        if (k + 1 == r.csv_order_.size() || header[r.csv_order_[k]] != header[r.csv_order_[k + 1]])
          last.push_back(r.csv_order_[k]);
      r.csv_order_ = std::move(last);
      r.csv_header_utf8_ = std::all_of(header.begin(), header.end(),
                                       [](const std::string& f) { return storage::utf16_length(f).has_value(); });
    }
    return r;
  }

  /// Next record, or nullopt at the end.
  std::optional<input_record> next() {
    auto item = input_->next();
    if (!item)
      return std::nullopt;
    const std::size_t n = item->number;
    switch (input_->format()) {
    case workers::input_format::json: {
      std::string payload;
      workers::append_minified(payload, item->text);
      if (id_field_.empty())
        return make(std::move(payload), nullptr, n);
      const auto j = nlohmann::json::parse(item->text); // valid (checked): only for --id-field
      return make(std::move(payload), &j, n);
    }
    case workers::input_format::csv:
      return from_csv(std::move(*item));
    case workers::input_format::ndjson:
      break;
    }
    std::string& line = item->text;
    if (auto deep = workers::check_json_depth(line, "line"); !deep) {
      ++broken;
      std::fprintf(stderr, "shoal send: %s:%zu: %s; sent as text (an ndjson persistor rejects it)\n",
                   origin_.c_str(), n, deep.error().message.c_str());
      return make(std::move(line), nullptr, n);
    }
    bool multiline = false;
    if (!workers::persistor::json_accept(line, multiline)) { // one pass, no DOM
      ++broken;
      std::fprintf(stderr, "shoal send: %s:%zu: not valid JSON; sent as text\n", origin_.c_str(), n);
      return make(std::move(line), nullptr, n);
    }
    if (id_field_.empty())
      return make(std::move(line), nullptr, n);
    const auto j = nlohmann::json::parse(line); // valid: only for --id-field
    return make(std::move(line), &j, n);
  }

  std::size_t broken = 0; ///< records sent as text because they did not parse

private:
  // A CSV record as {"column":"value",…}; a broken one (unclosed quote, another field count than
  // the header) as {"_raw": its text}.
  input_record from_csv(workers::input_item item) {
    const auto& header = input_->header();
    const std::vector<std::string>& f = item.fields;
    if (!item.problem.empty() || f.size() != header.size()) {
      ++broken;
      if (!item.problem.empty())
        std::fprintf(stderr, "shoal send: %s: %s; sent as text\n", origin_.c_str(), item.problem.c_str());
      else
        std::fprintf(stderr, "shoal send: %s:%zu: CSV row has %zu fields, the header %zu; sent as text\n",
                     origin_.c_str(), item.number, f.size(), header.size());
      return make(nlohmann::json{{"_raw", item.text}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  nullptr, item.number);
    }
    const bool utf8 = csv_header_utf8_ && std::all_of(f.begin(), f.end(), [](const std::string& v) {
                        return storage::utf16_length(v).has_value();
                      });
    if (utf8 && id_field_.empty()) {
      // {"field":"value",…} written directly (keys sorted as the DOM below sorts them).
      std::string payload = "{";
      for (std::size_t i : csv_order_) {
        if (payload.size() > 1)
          payload += ',';
        storage::append_json_string(payload, header[i]);
        payload += ':';
        storage::append_json_string(payload, f[i]);
      }
      payload += '}';
      return make(std::move(payload), nullptr, item.number);
    }
    nlohmann::json obj = nlohmann::json::object();
    for (std::size_t i = 0; i < header.size(); ++i)
      obj[header[i]] = f[i];
    return make(obj.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), &obj, item.number);
  }

  input_record make(std::string payload, const nlohmann::json* j, std::size_t n) {
    input_record r;
    r.payload = std::move(payload);
    if (!id_field_.empty() && j && j->is_object() && j->contains(id_field_)) {
      const auto& v = (*j)[id_field_];
      r.id = stable_id("id:" + (v.is_string() ? v.get<std::string>() : v.dump()));
    } else {
      r.id = ordered_id(origin_, n);
    }
    return r;
  }

  std::istream* in_ = nullptr;
  std::unique_ptr<std::ifstream> file_;
  std::string origin_;
  std::string id_field_;
  std::unique_ptr<workers::input_reader> input_; // borrows *in_
  std::vector<std::size_t> csv_order_;       // csv: header indexes in payload key order
  bool csv_header_utf8_ = true;
};

int run_send(const global_options& g, const send_args& a) {
  auto cfg = load(g);
  if (!cfg)
    return 2;
  init_logging(*cfg);
  if (auto v = workers::persistor::validate_dest(a.dest); !v) {
    std::fprintf(stderr, "shoal send: --dest: %s\n", v.error().message.c_str());
    return 2;
  }
  auto rd = reader::open(a);
  if (!rd)
    return 2;
  const std::string endpoint = a.endpoint.empty() ? cfg->persistor.endpoint : a.endpoint;
  zmq::context_t ctx(1);
  transport::socket_options so;
  so.send_hwm = 10'000;
  so.receive_hwm = 100'000;
  so.linger = std::chrono::milliseconds(0);
  auto sock = transport::envelope_socket::make(ctx, zmq::socket_type::dealer, so);
  if (!sock) {
    std::fprintf(stderr, "shoal send: socket: %s\n", sock.error().describe().c_str());
    return 2;
  }
  if (!setup_producer_curve(a, endpoint, sock->raw()))
    return 2;
  // A refused key or a mechanism mismatch shows only as handshake events: watch them so the
  // command says so at once instead of re-sending until --timeout-s.
  auto handshakes = transport::handshake_monitor::attach(ctx, sock->raw());
  if (auto c = sock->connect(endpoint); !c) {
    std::fprintf(stderr, "shoal send: connecting %s: %s\n", endpoint.c_str(), c.error().describe().c_str());
    return 2;
  }

  struct pending {
    std::string payload;
    std::int64_t sent_ms = 0;
    std::uint32_t attempt = 0;
  };
  using id_t = transport::message_id;
  std::unordered_map<id_t, pending, workers::persistor::message_id_hash> unacked;
  unacked.reserve(static_cast<std::size_t>(a.window) * 2);
  // Re-send deadlines, a min-heap of (deadline ms, id, sent_ms). A record's timeout doubles with
  // every re-send (capped at 8×), so a slow persistor sees fewer duplicates instead of more.
  struct due {
    std::int64_t at = 0;
    id_t id{};
    std::int64_t sent_ms = 0;
    bool operator>(const due& o) const noexcept { return at > o.at; }
  };
  std::vector<due> timeline;
  std::deque<id_t> unsent;        // read but refused by the HWM
  std::vector<id_t> unsendable;   // refused by the encoder: counted as rejected
  std::size_t read = 0, acked = 0, rejected = 0, resent = 0;
  std::uint64_t bytes = 0;
  bool input_done = false;
  // One record read past the window's edge, only to learn whether the input has ended: the
  // persist.flush then goes out with the last record. Without it an input of exactly `window`
  // records (or the last window of any input) learned of its end only after the first ack, and
  // batches that never fill (records of many date partitions) are acked only after the
  // persistor's batch_max_delay_ms.
  std::optional<input_record> ahead;
  const auto t0 = std::chrono::steady_clock::now();
  auto now_ms = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  };
  std::int64_t last_progress = now_ms(), last_report = 0;

  transport::envelope env;
  env.kind = std::string(workers::persistor::kind_record);
  env.from = "send@" + std::to_string(::getpid()) + "@" + workers::persistor::local_host_name();
  env.hdr["dest"] = a.dest;
  if (!a.event_time_field.empty())
    env.hdr["event_time_field"] = a.event_time_field;
  // End of input: persist.flush seals the persistor's open batches holding our records at once
  // (transport/ENVELOPE.md), so the last records do not wait batch_max_delay_ms per open date
  // partition. Sent after the last record, and again after re-sends at the end.
  std::size_t sent_since_flush = 0, flushes = 0;
  std::int64_t last_flush_ms = 0;
  transport::envelope flush;
  flush.kind = std::string(workers::persistor::kind_flush);
  flush.from = env.from;
  auto send_flush = [&] {
    flush.id = transport::new_message_id();
    flush.ts_ns = transport::unix_now_ns();
    if (sock->send(flush, std::chrono::milliseconds(20))) {
      sent_since_flush = 0;
      last_flush_ms = now_ms();
      ++flushes;
    }
  };
  auto send_one = [&](const id_t& key, pending& p) -> bool {
    env.id = key;
    env.ts_ns = transport::unix_now_ns();
    env.attempt = p.attempt + 1;
    env.body.assign(p.payload.begin(), p.payload.end());
    auto s = sock->send(env, std::chrono::milliseconds(20));
    if (!s) {
      if (s.error().code != transport::errc::would_block) {
        // Never sendable as it is (e.g. larger than the frame limit): refused here, like a
        // persist.reject, instead of waiting for an ack that cannot come.
        std::fprintf(stderr, "shoal send: record cannot be sent: %s\n", s.error().describe().c_str());
        unsendable.push_back(key);
        return true;
      }
      return false;
    }
    p.attempt += 1;
    p.sent_ms = now_ms();
    ++sent_since_flush;
    const std::int64_t timeout = static_cast<std::int64_t>(a.ack_timeout_ms) << std::min<std::uint32_t>(p.attempt - 1, 3);
    timeline.push_back({p.sent_ms + timeout, key, p.sent_ms});
    std::push_heap(timeline.begin(), timeline.end(), std::greater<>());
    return true;
  };

  const bool show = a.progress || (!a.quiet && ::isatty(STDERR_FILENO));
  auto report = [&](bool final) {
    const double secs = std::max(1e-3, static_cast<double>(now_ms()) / 1000.0);
    std::fprintf(stderr, "%s%zu records, %.1f MB, %.0f rec/s, acked %zu%s%s", show ? "\r" : "", read,
                 static_cast<double>(bytes) / 1e6, static_cast<double>(acked) / secs, acked,
                 resent ? (", resent " + std::to_string(resent)).c_str() : "", final || !show ? "\n" : "");
    std::fflush(stderr);
  };

  transport::envelope in;
  while (true) {
    // Fill the window.
    while (!unsent.empty() && unacked.size() <= a.window) {
      if (!send_one(unsent.front(), unacked[unsent.front()]))
        break;
      unsent.pop_front();
    }
    while (!input_done && unsent.empty() && unacked.size() < a.window) {
      auto r = ahead ? std::exchange(ahead, std::nullopt) : rd->next();
      if (!r) {
        input_done = true;
        break;
      }
      ++read;
      bytes += r->payload.size();
      auto [it, fresh] = unacked.try_emplace(r->id, pending{std::move(r->payload), 0, 0});
      if (!fresh)
        continue; // the same id twice in the input: one identity
      if (!send_one(r->id, it->second)) {
        unsent.push_back(r->id);
        break;
      }
    }
    if (!input_done && !ahead && unsent.empty() && unacked.size() >= a.window && !(ahead = rd->next()))
      input_done = true;
    for (const auto& key : unsendable)
      rejected += unacked.erase(key);
    unsendable.clear();
    if (input_done && unacked.empty())
      break;
    // persist.flush at the end of input, and when the window is full and no ack came for
    // stall_flush_ms: then the open batches holding our records can grow only from other
    // producers (we cannot send more until acks come), so waiting for their batch delay would
    // only delay the acks. Batches that fill (records of few partitions) keep acks flowing and
    // are not cut short. A stalled window flushes at most once per stall_flush_ms: records
    // re-sent after their ack timeout would otherwise each be followed by a flush of their own.
    const auto stall = static_cast<std::int64_t>(a.stall_flush_ms);
    if (unsent.empty() && sent_since_flush > 0 && !a.no_flush &&
        (input_done || (stall > 0 && unacked.size() >= a.window && now_ms() - last_progress >= stall &&
                        now_ms() - last_flush_ms >= stall)))
      send_flush();
    // Acks.
    for (int burst = 0; burst < 1000; ++burst) {
      auto got = sock->receive(in, std::chrono::milliseconds(burst == 0 ? 5 : 0));
      if (!got)
        break;
      if (in.kind == workers::persistor::kind_ack) {
        for (std::size_t off = 0; off + 16 <= in.body.size(); off += 16) {
          id_t key;
          std::memcpy(key.data(), in.body.data() + off, 16);
          if (unacked.erase(key)) {
            ++acked;
            last_progress = now_ms();
          }
        }
      } else if (in.kind == workers::persistor::kind_reject && in.corr) {
        if (unacked.erase(*in.corr)) {
          ++rejected;
          std::fprintf(stderr, "\nshoal send: record %s rejected: %.*s\n", transport::to_hex(*in.corr).c_str(),
                       static_cast<int>(in.body.size()), reinterpret_cast<const char*>(in.body.data()));
        }
      }
    }
    // Re-send what was not acked in time.
    const std::int64_t now = now_ms();
    if (timeline.size() > 4 * unacked.size() + 4096) {
      // Deadlines of acked records wait in the heap until they come round: drop them now and
      // then, so the heap stays near the records in flight (O(n), amortized over n acks).
      std::erase_if(timeline, [&](const due& d) {
        auto it = unacked.find(d.id);
        return it == unacked.end() || it->second.sent_ms != d.sent_ms;
      });
      std::make_heap(timeline.begin(), timeline.end(), std::greater<>());
    }
    while (!timeline.empty() && timeline.front().at <= now) {
      std::pop_heap(timeline.begin(), timeline.end(), std::greater<>());
      const due d = timeline.back();
      timeline.pop_back();
      const id_t key = d.id;
      auto it = unacked.find(key);
      if (it == unacked.end() || it->second.sent_ms != d.sent_ms)
        continue; // acked, or sent again since
      if (!send_one(key, it->second)) {
        unsent.push_back(key);
        break;
      }
      ++resent;
    }
    if (handshakes && !handshakes->succeeded())
      if (auto f = handshakes->poll(); f && now - last_progress > 1000) {
        // Reconnects retry the handshake; a second without one succeeding is the answer.
        using kind = transport::handshake_failure::kind;
        std::fprintf(stderr, "\nshoal send: the persistor at %s %s; giving up\n", endpoint.c_str(),
                     f->what == kind::auth
                         ? "refused this producer's key (not in its curve_allow_dir)"
                         : "failed the handshake (it requires CURVE with a listed key, or --curve-server-key "
                           "is not its key)");
        break;
      }
    if (now - last_progress > static_cast<std::int64_t>(a.timeout_s) * 1000) {
      std::fprintf(stderr, "\nshoal send: no acknowledgement for %u s; giving up\n", a.timeout_s);
      break;
    }
    if (show && now - last_report >= 250) {
      report(false);
      last_report = now;
    }
  }
  report(true);
  if (rd->broken)
    std::fprintf(stderr, "shoal send: %zu input lines did not parse and were sent as text\n", rd->broken);
  const std::size_t missing = unacked.size();
  if (missing || rejected) {
    std::fprintf(stderr, "shoal send: %zu of %zu records not acknowledged (%zu rejected)\n",
                 missing + rejected, read, rejected);
    return 1;
  }
  if (g.json)
    std::printf("%s\n", nlohmann::json{{"records", read}, {"acked", acked}, {"resent", resent},
                                       {"bytes", bytes}, {"flushes", flushes}}.dump().c_str());
  return 0;
}

} // namespace

void add_send_command(CLI::App& app, global_options& g, command_fn& run) {
  auto a = std::make_shared<send_args>();
  auto* cmd = app.add_subcommand("send", "Stream a JSON array, NDJSON or CSV file to a persistor");
  cmd->add_option("file", a->file, "input file, or - for stdin")->capture_default_str();
  cmd->add_option("--dest", a->dest, "destination (first blob-name segment)")->required();
  cmd->add_option("--event-time-field", a->event_time_field, "record field holding the event time");
  cmd->add_option("--id-field", a->id_field, "record field giving the stable message id");
  cmd->add_option("--format", a->format, "auto|json|ndjson|csv")->capture_default_str();
  cmd->add_option("--endpoint", a->endpoint, "persistor endpoint (default [persistor] endpoint)");
  cmd->add_option("--ack-timeout-ms", a->ack_timeout_ms, "re-send a record not acked within this")
      ->capture_default_str();
  cmd->add_option("--stall-flush-ms", a->stall_flush_ms,
                  "with the window full and no ack for this long, send persist.flush so the persistor "
                  "seals the batches holding our records, at most once per this interval while stalled (0 = only at the end "
                  "of input)")
      ->capture_default_str();
  cmd->add_option("--timeout-s", a->timeout_s, "give up after this long without any ack")
      ->capture_default_str();
  cmd->add_option("--window", a->window, "most records in flight")->capture_default_str();
  cmd->add_flag("--progress", a->progress, "show the progress line even when stderr is not a terminal");
  cmd->add_flag("--quiet", a->quiet, "no progress line");
  cmd->add_flag("--no-flush", a->no_flush,
                "no persist.flush at the end of the input: the persistor seals the last batches "
                "after its batch_max_delay_ms");
  cmd->add_option("--curve-secret-key", a->curve_secret_key,
                  "CURVE: this producer's secret key file (`shoal keys generate`)");
  cmd->add_option("--curve-public-key", a->curve_public_key,
                  "CURVE: its public key file, checked against the secret (optional)");
  cmd->add_option("--curve-server-key", a->curve_server_key,
                  "CURVE: the persistor's public key file (required for a tcp endpoint that is not loopback)");
  cmd->callback([&g, &run, a] { run = [&g, a] { return run_send(g, *a); }; });
}

} // namespace shoal::cmd
