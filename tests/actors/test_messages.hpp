#pragma once
// Message structs and small actors shared by the actor tests.

#include "actors/supervisor.hpp"
#include "actors/system.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace shoal::actors::testing {

struct ping {
  static constexpr std::string_view kind = "test.ping";
  std::uint32_t sender = 0; // which producer
  std::uint64_t seq = 0;    // per-sender sequence number
  MSGPACK_DEFINE(sender, seq);
};
struct get_count {
  static constexpr std::string_view kind = "test.get_count";
  std::uint8_t reserved = 0;
  MSGPACK_DEFINE(reserved);
};
struct crash {
  static constexpr std::string_view kind = "test.crash";
  std::string why;
  MSGPACK_DEFINE(why);
};
struct add { // no declared kind: dispatched by its type name
  std::int32_t a = 0;
  std::int32_t b = 0;
  MSGPACK_DEFINE(a, b);
};

/// Counts pings, records per-sender order violations, crashes on demand.
class counter final : public actor {
public:
  struct shared {
    std::atomic<std::uint64_t> inits{0};
    std::atomic<std::uint64_t> stops{0};
    std::atomic<std::uint64_t> out_of_order{0};
  };
  counter(actor_config& cfg, shared* s) : actor(cfg), s_(s) {}

protected:
  result<void> init() override {
    if (s_)
      ++s_->inits;
    return {};
  }
  void on_stop() override {
    if (s_)
      ++s_->stops;
  }
  behavior make_behavior() override {
    return {
        [this](const ping& p) {
          if (p.sender >= last_.size())
            last_.resize(p.sender + 1, 0);
          if (p.seq != last_[p.sender] + 1 && s_)
            ++s_->out_of_order;
          last_[p.sender] = p.seq;
          ++count_;
        },
        [this](const get_count&) { return count_; },
        [](const crash& c) { throw std::runtime_error(c.why); },
        [](const add& m) -> result<std::int32_t> {
          if (m.a < 0)
            return make_error(errc::invalid_argument, "negative");
          return m.a + m.b;
        },
    };
  }

private:
  shared* s_;
  std::uint64_t count_ = 0;
  std::vector<std::uint64_t> last_;
};

/// spdlog sink that keeps every formatted message (thread-safe).
class capture_sink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  std::vector<std::string> lines(spdlog::level::level_enum min = spdlog::level::trace) {
    std::lock_guard lk(mutex_);
    std::vector<std::string> out;
    for (auto& [lvl, s] : lines_)
      if (lvl >= min)
        out.push_back(s);
    return out;
  }
  std::size_t count_containing(std::string_view needle, spdlog::level::level_enum min = spdlog::level::trace) {
    std::size_t n = 0;
    for (auto& l : lines(min))
      if (l.find(needle) != std::string::npos)
        ++n;
    return n;
  }

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lines_.emplace_back(msg.level, std::string(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}

private:
  std::vector<std::pair<spdlog::level::level_enum, std::string>> lines_;
};

/// Installs a capture_sink as the default logger for the scope.
class log_capture {
public:
  log_capture() : sink_(std::make_shared<capture_sink>()), prev_(spdlog::default_logger()) {
    auto l = std::make_shared<spdlog::logger>("capture", sink_);
    l->set_level(spdlog::level::trace);
    spdlog::set_default_logger(l);
  }
  ~log_capture() { spdlog::set_default_logger(prev_); }
  capture_sink& sink() { return *sink_; }

private:
  std::shared_ptr<capture_sink> sink_;
  std::shared_ptr<spdlog::logger> prev_;
};

} // namespace shoal::actors::testing
