#pragma once
// A queue service of one test's own: the pinned Azurite's queue service alone (azurite-queue,
// deploy/local), its workspace on tmpfs (/dev/shm), on a free loopback port, for tests that move
// tens of thousands of queue messages. Why not the shared `azurite` fixture: Azurite 3.35.0's
// Loki queue store scans every message of the account on each get, delete and peek
// (clearExpiredMessages and the findOne by messageId filter the account's messages one by one),
// and its disk mode fdatasyncs every put (~7 ms on the VM's disk); a private account holding only
// the test's own messages, on tmpfs, avoids both, and a long queue in one test no longer slows
// every other test's queue calls. Why not --inMemoryPersistence: in memory, every put makes an
// extent of its own, and the garbage collector (every 60 s) deletes each unreferenced extent with
// a findAndRemove that scans them all, synchronously, O(extents^2) on the one event loop: after
// 20,000 messages the service stopped answering for minutes (30 s request timeouts).
//
//   auto q = private_queue_service::start(dir);            // ASSERT_TRUE(q) << q.error()...
//   std::string cs = q->connection_string_with(azurite_connection_string());
//   // blobs and tables: the fixture's Azurite; queues: this process. Stopped by ~.

#include "workers/error.hpp"

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>

namespace shoal::tests {

/// A running in-memory azurite-queue child. Move-only; the destructor stops it (SIGINT, SIGKILL
/// after 5 s). The child also gets SIGKILL from the kernel if the thread that started it dies
/// (PR_SET_PDEATHSIG), so a crashed or killed test leaves no Azurite behind. Owner only (not
/// thread-safe); its endpoint may be used from any thread.
class private_queue_service {
public:
  /// Starts `<source_dir>/deploy/local/node_modules/.bin/azurite-queue --loose
  /// --skipApiVersionCheck` on 127.0.0.1 and a free port (up to 3 ports tried), its workspace a
  /// fresh folder under /dev/shm (under `dir` when /dev/shm is not a writable folder; removed by
  /// stop()), its log `dir`/azurite-queue.log (`dir` created), and waits up to `start_timeout`
  /// until it accepts connections. Errors: not_found (azurite-queue missing: run
  /// deploy/setup.sh), io (fork/exec failed, or it exited during start-up: the message quotes
  /// its log), timeout.
  [[nodiscard]] static workers::result<private_queue_service>
  start(const std::filesystem::path& dir, std::chrono::milliseconds start_timeout = std::chrono::seconds(60));

  private_queue_service(private_queue_service&& other) noexcept;
  private_queue_service& operator=(private_queue_service&& other) noexcept;
  private_queue_service(const private_queue_service&) = delete;
  private_queue_service& operator=(const private_queue_service&) = delete;
  ~private_queue_service();

  /// SIGINT, SIGKILL after 5 s, reaped; the workspace removed. Idempotent.
  void stop();

  pid_t pid() const noexcept { return pid_; }
  int port() const noexcept { return port_; }
  /// "http://127.0.0.1:<port>/devstoreaccount1" (the emulator account, its well-known key).
  std::string endpoint() const;
  /// `base` (a connection string with explicit endpoints, e.g. the fixture's) with its
  /// QueueEndpoint replaced by (or, if it has none, extended with) this service's endpoint;
  /// the account name and key must be the emulator's, as the fixture's are.
  std::string connection_string_with(const std::string& base) const;

private:
  private_queue_service() = default;
  pid_t pid_ = -1;
  int port_ = 0;
  std::filesystem::path workspace_;
};

} // namespace shoal::tests
