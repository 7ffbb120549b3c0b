// The persistor engine's actors: the batcher (stages and the queue of sealed batches), the
// writers (blocking blob I/O, one batch at a time) and the registrar (registrations and acks).
#include "workers/persistor/engine_internal.hpp"

#include <deque>
#include <future>

namespace shoal::workers::persistor {

using namespace detail;

namespace {

// -- actors ---------------------------------------------------------------------------------------

// Owns the stage of engine::submit's records and the queue of sealed batches; gives each sealed
// batch to an idle writer (oldest first), and seals open batches when their delay passes.
class batcher_actor final : public actors::actor {
public:
  batcher_actor(actors::actor_config& cfg, engine::impl* e) : actor(cfg), e_(e) {}

protected:
  actors::behavior make_behavior() override {
    return {
        [this](const batch_sealed& m) {
          sealed_.push_back(m.slot);
          assign();
        },
        [this](const writer_idle& m) {
          if (m.index >= idle_.size())
            idle_.resize(m.index + 1, false);
          idle_[m.index] = true;
          assign();
        },
        [this](const inbox_ready&) { drain_inbox(); },
        [this](const flush_open&) -> bool {
          drain_inbox();
          e_->own_stage->seal_all();
          return true;
        },
    };
  }

private:
  void drain_inbox() {
    {
      std::lock_guard lk(e_->inbox_m);
      taken_.swap(e_->inbox);
      e_->inbox_signalled = false;
    }
    for (auto& [r, token] : taken_)
      (void)e_->own_stage->add(r, token); // dest checked by submit; cancelled only when stopping
    taken_.clear();
    arm();
  }
  // One timer for the oldest open batch: later batches never fall due earlier.
  void arm() {
    if (timer_armed_)
      return;
    if (auto next = e_->own_stage->seal_due()) {
      timer_armed_ = true;
      start_timer(*next, [this] {
        timer_armed_ = false;
        arm();
      });
    }
  }
  void assign() {
    for (std::uint32_t i = 0; i < idle_.size() && !sealed_.empty(); ++i) {
      if (!idle_[i])
        continue;
      if (i >= writers_.size())
        writers_.resize(i + 1);
      if (!writers_[i]) {
        auto w = sys().lookup(writer_name(i));
        if (!w)
          continue;
        writers_[i] = *w;
      }
      if (!tell(writers_[i], write_batch{sealed_.front()}))
        continue; // stopping, or restarting: it says writer_idle again once up
      sealed_.pop_front();
      idle_[i] = false;
    }
  }
  engine::impl* e_;
  std::deque<std::uint64_t> sealed_;   // batch slots waiting for a writer, oldest first
  std::vector<bool> idle_;             // per writer index
  std::vector<actors::actor_ref> writers_;
  std::vector<std::pair<record, ack_token>> taken_; // drained inbox (capacity reused)
  bool timer_armed_ = false;
};

// Writes batches with blocking blob I/O on its own thread, one at a time.
class writer_actor final : public actors::actor {
public:
  writer_actor(actors::actor_config& cfg, engine::impl* e, std::uint32_t index)
      : actor(cfg), e_(e), index_(index) {}

protected:
  actors::result<void> init() override {
    // Also after a restart: the batcher then knows it may send work again.
    if (auto b = sys().lookup(batcher_name))
      (void)tell(*b, writer_idle{index_});
    return {};
  }
  actors::behavior make_behavior() override {
    return {[this](const write_batch& m) {
      auto b = e_->batch_slots.take(m.slot);
      if (b) {
        bool written = false;
        try {
          written = e_->write_one(*b);
        } catch (const std::exception& ex) {
          e_->requeue(std::move(*b), writer_name(index_), ex.what());
          throw; // the supervisor restarts this writer, which then says writer_idle
        } catch (...) {
          e_->requeue(std::move(*b), writer_name(index_), "unknown exception");
          throw;
        }
        if (!written)
          return; // stopping
      }
      if (auto bt = sys().lookup(batcher_name))
        (void)tell(*bt, writer_idle{index_});
    }};
  }

private:
  engine::impl* e_;
  std::uint32_t index_;
};

// Registers committed blobs in commit order: it collects every blob queued before its own
// catalog_flush comes round, then enqueues their ETL records in one work_table::enqueue call (one
// entity group transaction per shard partition) while another thread registers their catalog
// entries in one register_blobs call (one WAL append), acking each blob after both
// (catalog_before_ack), or after its ETL record when the catalog entry may follow the ack. Both registrations are
// idempotent, so a round retried after a failure (or a crash) writes nothing twice.
class registrar_actor final : public actors::actor {
public:
  registrar_actor(actors::actor_config& cfg, engine::impl* e) : actor(cfg), e_(e) {}

protected:
  actors::behavior make_behavior() override {
    return {
        [this](const catalog_entry& m) {
          if (auto p = e_->ack_slots.take(m.slot))
            pending_.push_back(std::move(*p));
          if (!flush_queued_ && tell(self(), catalog_flush{}))
            flush_queued_ = true;
        },
        [this](const catalog_flush&) {
          flush_queued_ = false;
          register_pending();
        },
    };
  }

private:
  void register_pending() {
    if (pending_.empty())
      return;
    const std::string what = pending_.size() == 1
                                 ? pending_.front().blob.name
                                 : std::to_string(pending_.size()) + " blobs from " + pending_.front().blob.name;
    // The catalog entries are written while the ETL records are (they do not depend on each
    // other): a round costs the longer of the two, not their sum.
    std::future<bool> catalogued;
    if (e_->catalog) {
      std::vector<storage::blob_catalog_entry> entries;
      entries.reserve(pending_.size());
      for (const auto& p : pending_)
        entries.push_back(engine::impl::catalog_entry_of(p.blob));
      catalogued = std::async(std::launch::async, [this, what, entries = std::move(entries)] {
        return e_->retry_until_ok("cataloguing", what, [&]() -> result<void> {
          auto r = e_->catalog->register_blobs(entries);
          if (!r)
            return std::unexpected(error::from_storage(r.error(), "registering " + what + " in the catalog"));
          return {};
        });
      });
    }
    const auto t0 = std::chrono::steady_clock::now();
    const bool enqueued = e_->retry_until_ok("registering", what, [&] { return e_->register_etl_many(pending_); });
    const auto t_etl = std::chrono::steady_clock::now();
    if (enqueued && (!e_->catalog || !e_->opts.catalog_before_ack))
      for (auto& p : pending_) { // acked now; the catalog entry (if any) follows
        e_->finish(p);
        p.acked = true;
      }
    const bool ok = enqueued && (!catalogued.valid() || catalogued.get());
    if (!ok)
      return; // stopping: unacked ones are redelivered by their sources
    if (e_->catalog)
      e_->stats.catalogued.fetch_add(pending_.size(), std::memory_order_relaxed);
    spdlog::debug("persistor: registered {} blob(s): ETL records in {} ms, both in {} ms", pending_.size(),
                  std::chrono::duration_cast<std::chrono::milliseconds>(t_etl - t0).count(),
                  std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
    for (auto& p : pending_)
      if (!p.acked)
        e_->finish(p);
    {
      std::lock_guard lk(e_->idle_m);
      e_->uncatalogued -= pending_.size();
    }
    pending_.clear();
    e_->idle_cv.notify_all();
  }
  engine::impl* e_;
  std::vector<pending_ack> pending_; // committed, waiting for their registrations
  bool flush_queued_ = false;
};


} // namespace

std::vector<actors::child_spec> detail::engine_actor_specs(engine::impl* e) {
  // Mailboxes block rather than refuse: every message here carries a slot or a wake-up that
  // must not be lost, and none is sent per record.
  const actors::mailbox_options mb{.capacity = 1u << 16, .policy = actors::overflow_policy::block};
  std::vector<actors::child_spec> children;
  if (e->catalog || e->etl)
    children.push_back(actors::child_spec::of<registrar_actor>({.name = registrar_name, .mailbox = mb}, e));
  children.push_back(actors::child_spec::of<batcher_actor>({.name = batcher_name, .mailbox = mb}, e));
  for (std::uint32_t i = 0; i < e->opts.writers; ++i)
    children.push_back(actors::child_spec::of<writer_actor>({.name = writer_name(i), .mailbox = mb}, e, i));
  return children;
}

} // namespace shoal::workers::persistor
