// The persistor engine: its start and stop, submit and flush, the batch stages that cut records
// into batches, and the hand-over of sealed batches to the actors (engine_actors.cpp).
#include "workers/persistor/engine_internal.hpp"

#include <cctype>
#include <unistd.h>

namespace shoal::workers::persistor {

using namespace detail;

std::string local_host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0')
    return "localhost";
  std::string out;
  for (const char* p = buf; *p != '\0' && *p != '.'; ++p)
    if (std::isalnum(static_cast<unsigned char>(*p)) || *p == '-')
      out += *p;
  return out.empty() ? "localhost" : out;
}

// Hands sealed batches to the batcher actor (by slot), counting them as in flight first.
void engine::impl::dispatch(std::vector<batch>&& sealed) {
  for (auto& b : sealed) {
    {
      std::lock_guard lk(idle_m);
      inflight_records += b.tokens.size();
    }
    queued_bytes.fetch_add(b.body.size(), std::memory_order_relaxed);
    const std::uint64_t id = batch_slots.put(std::move(b));
    if (auto r = sys->tell(batcher_ref, batch_sealed{id}); !r)
      // Only when stopping (the batcher is gone): the batch is abandoned unacked.
      spdlog::debug("persistor: dropping sealed batch: {}", r.error().message);
  }
}

// A writer threw while writing `b`: hands the batch back to the batcher, which gives it to
// the next idle writer. Its records stay counted in flight. Nothing to do when the tokens
// were already handed on (acked, or queued for the registrar).
void engine::impl::requeue(batch&& b, std::string_view writer, std::string_view why) {
  if (b.tokens.empty())
    return;
  spdlog::warn("persistor: {} failed writing a batch of {} record(s) for '{}': {}; the batch is queued again",
               writer, b.tokens.size(), b.dest, why);
  const std::uint64_t id = batch_slots.put(std::move(b));
  if (auto r = sys->tell(batcher_ref, batch_sealed{id}); !r)
    spdlog::debug("persistor: dropping a re-queued batch: {}", r.error().message);
}

// -- batch_stage ----------------------------------------------------------------------------------

batch_stage::batch_stage(engine::impl* e, std::size_t slot)
    : eng_(e), b_(e->opts.limits, e->opts.format, e->opts.partition), slot_(slot) {}

batch_stage::~batch_stage() { eng_->stage_bytes[slot_].v.store(0, std::memory_order_relaxed); }

result<void> batch_stage::add(const record& r, ack_token token) {
  if (auto v = validate_dest(r.dest); !v)
    return v;
  if (auto v = check_payload(r, eng_->opts.format); !v)
    return v;
  if (eng_->stopping.load(std::memory_order_relaxed))
    return fail(errc::cancelled, "persistor is stopping");
  eng_->stats.records_in.fetch_add(1, std::memory_order_relaxed);
  auto sealed = b_.add(r, token, steady_ms());
  if (!sealed.empty())
    dispatch(std::move(sealed));
  eng_->stage_bytes[slot_].v.store(b_.open_bytes(), std::memory_order_relaxed);
  return {};
}

std::optional<std::chrono::milliseconds> batch_stage::seal_due() {
  const std::int64_t now = steady_ms();
  auto sealed = b_.due(now);
  if (!sealed.empty())
    dispatch(std::move(sealed));
  eng_->stage_bytes[slot_].v.store(b_.open_bytes(), std::memory_order_relaxed);
  auto next = b_.next_due();
  if (!next)
    return std::nullopt;
  return std::chrono::milliseconds(std::max<std::int64_t>(*next - now, 0));
}

void batch_stage::seal_all() {
  dispatch(b_.flush_all());
  eng_->stage_bytes[slot_].v.store(0, std::memory_order_relaxed);
}

void batch_stage::seal_holding(const std::function<bool(ack_token)>& holds) {
  auto sealed = b_.seal_holding(holds);
  if (!sealed.empty())
    dispatch(std::move(sealed));
  eng_->stage_bytes[slot_].v.store(b_.open_bytes(), std::memory_order_relaxed);
}

void batch_stage::dispatch(std::vector<batch>&& sealed) { eng_->dispatch(std::move(sealed)); }

// -- engine ---------------------------------------------------------------------------------------

engine::engine(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

engine::~engine() {
  {
    std::lock_guard lk(impl_->stop_m);
    impl_->stopping.store(true);
  }
  impl_->stop_cv.notify_all();
  impl_->idle_cv.notify_all();
  if (impl_->sys)
    impl_->sys->shutdown(); // sources, then the engine's actors; each joins its thread
  impl_->own_stage.reset();
}

result<std::unique_ptr<engine>> engine::start(engine_options opts, storage::blob_client blobs,
                                              std::optional<work_table> etl,
                                              std::optional<storage::blob_catalog> catalog,
                                              commit_fn on_commit) {
  if (opts.writers < 1 || opts.writers > 64)
    return fail(errc::invalid_argument, "persistor writers must be between 1 and 64");
  if (opts.limits.max_records < 1 || opts.limits.max_bytes < 1)
    return fail(errc::invalid_argument, "persistor batch limits must be at least 1");
  if (opts.append_max_blocks < 1 || opts.append_max_blocks >= storage::max_blob_blocks)
    return fail(errc::invalid_argument, "append_max_blocks must be between 1 and 49999");
  if (auto v = validate_dest(opts.host); !v)
    return fail(errc::invalid_argument, "persistor host: " + v.error().message);
  if (auto v = validate_dest(opts.name); !v)
    return fail(errc::invalid_argument, "persistor name: " + v.error().message);
  if (opts.seq_reserve < 1)
    opts.seq_reserve = 1;
  auto created = blobs.create_container_if_not_exists(opts.container);
  if (!created)
    return std::unexpected(error::from_storage(created.error(), "creating container " + opts.container));
  auto p = std::make_unique<impl>(std::move(opts), std::move(blobs), std::move(etl),
                                  std::move(catalog), std::move(on_commit));
  {
    std::lock_guard lk(p->seq_m);
    if (auto r = p->reserve_seq(); !r)
      return std::unexpected(r.error());
  }
  if (auto r = p->recover_open_appends(); !r)
    return std::unexpected(r.error());

  impl* raw = p.get();
  std::unique_ptr<engine> eng(new engine(std::move(p)));
  raw->stages.store(1);
  raw->own_stage.reset(new batch_stage(raw, 0));
  actors::system_options so;
  so.process = "persistor-" + raw->opts.name;
  so.host = raw->opts.host;
  raw->sys = std::make_unique<actors::actor_system>(so);
  auto children = engine_actor_specs(raw);
  actors::supervisor_options sup;
  sup.on_escalate = [](const actors::error& e) {
    spdlog::error("persistor: actors keep failing; giving up on them: {}", e.message);
  };
  auto s = raw->sys->spawn<actors::supervisor>({.name = "persistor"}, sup, std::move(children));
  if (!s)
    return fail(errc::io, "persistor actors: " + s.error().message);
  auto b = raw->sys->lookup(batcher_name);
  if (!b)
    return fail(errc::io, "persistor actors: no batcher");
  raw->batcher_ref = *b;
  return eng;
}

result<void> engine::submit(const record& r, ack_token token) {
  if (auto v = validate_dest(r.dest); !v)
    return v;
  if (auto v = check_payload(r, impl_->opts.format); !v)
    return v;
  if (impl_->stopping.load(std::memory_order_relaxed))
    return fail(errc::cancelled, "persistor is stopping");
  bool wake = false;
  {
    std::lock_guard lk(impl_->inbox_m);
    impl_->inbox.emplace_back(r, token);
    wake = !impl_->inbox_signalled;
    impl_->inbox_signalled = true;
  }
  if (wake)
    if (auto t = impl_->sys->tell(impl_->batcher_ref, inbox_ready{}); !t) {
      std::lock_guard lk(impl_->inbox_m);
      impl_->inbox_signalled = false;
      return fail(errc::cancelled, "persistor is stopping: " + t.error().message);
    }
  return {};
}

bool engine::saturated() const noexcept { return impl_->held_bytes() > impl_->opts.max_inflight_bytes; }

result<void> engine::flush(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto sealed = impl_->sys->request<bool>(impl_->batcher_ref, flush_open{}, timeout).get();
  if (!sealed)
    return fail(errc::timeout, "flush: sealing the open batches: " + sealed.error().message);
  std::uint64_t records = 0, entries = 0;
  bool done = false;
  {
    std::unique_lock lk(impl_->idle_m);
    done = impl_->idle_cv.wait_until(lk, deadline, [&] {
      return (impl_->inflight_records == 0 && impl_->uncatalogued == 0) || impl_->stopping.load();
    });
    records = impl_->inflight_records;
    entries = impl_->uncatalogued;
  }
  if (impl_->opts.append_blobs)
    impl_->roll_all_appends();
  if (!done) {
    if (records > 0)
      return fail(errc::timeout, "flush: " + std::to_string(records) +
                                     " records still not committed after " +
                                     std::to_string(timeout.count()) + " ms");
    return fail(errc::timeout, "flush: every record is acked, but " + std::to_string(entries) +
                                   " blobs are still waiting for their catalog entry after " +
                                   std::to_string(timeout.count()) + " ms");
  }
  return {};
}

const engine_stats& engine::stats() const noexcept { return impl_->stats; }

result<std::unique_ptr<batch_stage>> engine::make_stage() {
  std::size_t slot = impl_->stages.load();
  while (true) {
    if (slot >= max_stages)
      return fail(errc::limit_exceeded, "a persistor engine has at most 63 source stages");
    if (impl_->stages.compare_exchange_weak(slot, slot + 1))
      break;
  }
  return std::unique_ptr<batch_stage>(new batch_stage(impl_.get(), slot));
}

actors::actor_system& engine::system() noexcept { return *impl_->sys; }

} // namespace shoal::workers::persistor
