#pragma once
// CURVE security for tcp links between hosts (ZMTP-CURVE, RFC 26 CurveZMQ / RFC 25) and the ZAP
// handler that admits only listed client keys (ZAP, RFC 27).
//
// Usage, server side:
//   zap_options zo;
//   zo.allow_list = "/etc/shoal/clients.keys";
//   auto zap = zap_authenticator::start(ctx, zo);
//   auto keys = load_curve_secret_key("/etc/shoal/server.key_secret");
//   configure_curve_server(sock.raw(), *keys);   // before bind
// Client side: configure_curve_client(sock.raw(), client_keys, server_public) before connect.
// Start the authenticator BEFORE binding: libzmq consults ZAP only if a handler is bound in the
// socket's context; without one every client that knows the server key is admitted.

#include "transport/error.hpp"

#include <zmq.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <sys/types.h>

namespace shoal::transport {

/// Length of a Z85-encoded CURVE key, in characters (32 bytes of key).
inline constexpr std::size_t curve_key_z85_chars = 40;

/// A long-term CURVE key pair, both halves Z85 text (40 characters each).
struct curve_key_pair {
  std::string public_key; ///< shareable; goes into peers' allow-lists / client configuration
  std::string secret_key; ///< private; only ever in a mode-0600 file

  friend bool operator==(const curve_key_pair&, const curve_key_pair&) = default;
};

/// Whether this libzmq was built with CURVE (libsodium). Thread-safe.
bool curve_available() noexcept;

/// True if `key` is 40 characters of Z85 that decode to 32 bytes. Thread-safe (pure).
bool valid_curve_key(std::string_view key) noexcept;

/// A fresh key pair (zmq_curve_keypair). Errors: security (CURVE not available). Thread-safe.
[[nodiscard]] result<curve_key_pair> generate_curve_key_pair();

/// The public key belonging to `secret_key` (zmq_curve_public).
/// Errors: invalid_argument (not a Z85 key), security (CURVE not available). Thread-safe.
[[nodiscard]] result<std::string> curve_public_key(std::string_view secret_key);

/// Writes `keys` as two text files: `public_file` (mode 0644) holds the public key and
/// `secret_file` (created with mode 0600 via open(O_CREAT, 0600), written to a temporary name
/// and renamed into place) holds the secret key. Each file is "# comment" lines plus the key.
/// Errors: invalid_argument (bad keys), io (with errno). Thread-safe for distinct paths.
[[nodiscard]] result<void> save_curve_key_pair(const curve_key_pair& keys,
                                               const std::filesystem::path& public_file,
                                               const std::filesystem::path& secret_file);

/// Reads a public key file (first line that is not blank or a '#' comment). Follows symlinks;
/// the file itself must be a regular file. Errors: io (missing/unreadable), invalid_argument
/// (no valid key, not a regular file). Thread-safe.
[[nodiscard]] result<std::string> load_curve_public_key(const std::filesystem::path& file);

/// Reads a file holding a secret (a CURVE secret key, a storage connection string), at most
/// `max_bytes`. Symlinks are followed — a Kubernetes Secret volume presents `key -> ..data/key`
/// and `..data -> ..2024_…/` — and the file reached is judged after open, through its
/// descriptor, as OpenSSH judges private keys: a regular file, owned by the effective user or by
/// root; one we own must give group and others no access (mode & 077 = 0, e.g. 0600); one root
/// owns (an administrator's, or the kubelet's with the pod's fsGroup) may let its group read and
/// nothing more (mode & 027 = 0, e.g. 0440). Errors: io (missing, unreadable), security (owner
/// or mode, naming both), invalid_argument (not a regular file, larger than `max_bytes`).
/// Thread-safe.
[[nodiscard]] result<std::string> read_secret_file(const std::filesystem::path& file,
                                                   std::size_t max_bytes = 1 << 20);

/// Reads a secret key file (read_secret_file's rules: symlinks followed, owner and mode checked
/// after open) and derives its public half. Errors: security (owner/permissions), io,
/// invalid_argument. Thread-safe.
[[nodiscard]] result<curve_key_pair> load_curve_secret_key(const std::filesystem::path& file);

/// Writes `text` to `target` with permission bits `mode` (e.g. 0600 for a secret, 0644 for a
/// public file), atomically: a new temporary file beside it is created with O_CREAT | O_EXCL |
/// O_NOFOLLOW (never an existing file or a planted symlink), given `mode` with fchmod whatever
/// the umask, written and fsynced, then renamed over `target` (`replace`) or hard-linked to it
/// (not `replace`: fails with EEXIST if `target` exists, with no window between a check and the
/// write). A reader never sees half a file. Errors: io (with errno; EEXIST when not replacing).
/// Thread-safe for distinct targets.
[[nodiscard]] result<void> write_file_atomically(const std::filesystem::path& target,
                                                 std::string_view text, mode_t mode, bool replace);

/// The allow-list text of a folder of public key files: one "KEY FILE" line per `*.pub` file
/// (hidden files skipped), sorted by name, after a '#' comment line. Whoever can add a file to
/// the folder is admitted, so a folder others may write to is refused unless its file system
/// is mounted read-only (a Kubernetes Secret volume is mode 1777, read-only), and so is a
/// world-writable key file. Symlinks are followed. Errors: invalid_argument (not a folder, a
/// file without a key), security (writable by others), io. Thread-safe.
[[nodiscard]] result<std::string> allow_list_from_dir(const std::filesystem::path& dir);

/// Makes `socket` a CURVE server with `server` keys (ZMQ_CURVE_SERVER, ZMQ_CURVE_SECRETKEY) in
/// ZAP domain `zap_domain`. Call before bind. Errors: invalid_argument (bad key), security
/// (CURVE not available), zmq. Owner of `socket` only.
[[nodiscard]] result<void> configure_curve_server(zmq::socket_t& socket,
                                                  const curve_key_pair& server,
                                                  std::string_view zap_domain = "shoal");

/// Makes `socket` a CURVE client with its own `client` keys that accepts only a server holding
/// the secret of `server_public_key`. Call before connect. Errors: as configure_curve_server.
[[nodiscard]] result<void> configure_curve_client(zmq::socket_t& socket,
                                                  const curve_key_pair& client,
                                                  std::string_view server_public_key);

/// A failed security handshake seen on a socket (handshake_monitor).
struct handshake_failure {
  /// auth: the server's ZAP handler refused our key (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  /// protocol: the peers disagree on the mechanism or a key is wrong (a plain client meeting a
  /// CURVE server, a wrong server key: ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL); other: anything
  /// else (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL).
  enum class kind : std::uint8_t { auth, protocol, other } what = kind::other;
  int value = 0;        ///< auth: the ZAP status code (400); else the ZMTP error code or errno
  std::string endpoint; ///< the peer endpoint the handshake was with
};

/// Watches the handshakes of one socket through zmq_socket_monitor (an inproc PAIR in the same
/// context), so a client can say "the server refused my key" instead of waiting for replies
/// that never come. Attach before connect. Owner only (the thread that owns the socket).
class handshake_monitor {
public:
  /// Starts monitoring `socket` (created in `ctx`). Errors: zmq.
  [[nodiscard]] static result<handshake_monitor> attach(zmq::context_t& ctx, zmq::socket_t& socket);
  /// Reads the events queued so far without blocking. Returns the latest failure not followed
  /// by a successful handshake, if any; a success clears it. Never throws.
  std::optional<handshake_failure> poll();
  /// True once any handshake succeeded (and none failed since).
  bool succeeded() const noexcept { return succeeded_; }

private:
  explicit handshake_monitor(zmq::socket_t pair) : pair_(std::move(pair)) {}
  zmq::socket_t pair_;
  std::optional<handshake_failure> failed_;
  bool succeeded_ = false;
};

/// Why and from where a ZAP request was refused (passed to zap_options::on_refusal).
struct zap_refusal {
  std::string address;    ///< peer IP address as libzmq reports it ("127.0.0.1")
  std::string public_key; ///< client's CURVE public key (Z85); empty for other mechanisms
  std::string mechanism;  ///< "CURVE", "NULL", "PLAIN"
  std::string domain;     ///< ZAP domain of the server socket
  std::string reason;     ///< status text sent back, e.g. "public key not in allow-list"
};

/// Settings of a zap_authenticator.
struct zap_options {
  /// File of admitted client public keys: one Z85 key per line, optionally followed by
  /// whitespace and a comment; blank lines and lines starting with '#' are ignored.
  std::filesystem::path allow_list;
  /// Instead of `allow_list`: a folder of `*.pub` files (allow_list_from_dir), re-read at most
  /// every `check_interval` and swapped in when its keys changed.
  std::filesystem::path allow_dir;
  /// Re-read the allow-list when its inode, size or mtime changed (a folder: when its text
  /// changed); checked on each ZAP request and every `check_interval` while idle.
  bool reload_on_change = true;
  /// How often the idle handler looks at the allow-list file.
  std::chrono::milliseconds check_interval{1000};
  /// Called on the handler thread for every refusal (after it is counted and logged). Must not
  /// block; must not throw.
  std::function<void(const zap_refusal&)> on_refusal;
};

/// Counters of a zap_authenticator; readable from any thread.
struct zap_stats {
  std::atomic<std::uint64_t> admitted{0};        ///< requests answered 200
  std::atomic<std::uint64_t> refused{0};         ///< requests answered 400
  std::atomic<std::uint64_t> malformed{0};       ///< requests answered 500 (bad ZAP frames)
  std::atomic<std::uint64_t> reloads{0};         ///< successful allow-list loads, first included
  std::atomic<std::uint64_t> reload_failures{0}; ///< loads that failed (old list kept)
};

/// A ZAP handler (RFC 27) on its own thread, bound to inproc://zeromq.zap.01 in one context. It
/// answers 200 to CURVE clients whose public key is in the allow-list and 400 to everyone else
/// (other mechanisms included), logging each refusal with the peer address (spdlog, warn).
/// One per context. Stop it (or destroy it) before the context is closed.
class zap_authenticator {
public:
  /// Loads the allow-list, binds the handler socket and starts the thread; returns once it
  /// serves. Errors: io / invalid_argument (allow-list), security (a handler is already bound
  /// in `ctx`: EADDRINUSE), closed, zmq.
  [[nodiscard]] static result<std::unique_ptr<zap_authenticator>> start(zmq::context_t& ctx,
                                                                        zap_options opts);
  zap_authenticator(const zap_authenticator&) = delete;
  zap_authenticator& operator=(const zap_authenticator&) = delete;
  /// Stops the handler (see stop()).
  ~zap_authenticator();

  /// Stops the thread and unbinds; idempotent; returns after the thread has exited. Owner only.
  void stop() noexcept;
  /// Re-reads the allow-list now and returns how many keys it holds. On error the previous list
  /// stays in force. Errors: io, invalid_argument (a line is not a key). Thread-safe.
  [[nodiscard]] result<std::size_t> reload();
  /// Whether `public_key` (Z85) is admitted by the current list. Thread-safe.
  bool allows(std::string_view public_key) const;
  /// Number of keys in the current list. Thread-safe.
  std::size_t size() const;
  /// Counters. Thread-safe.
  const zap_stats& stats() const noexcept;

private:
  struct impl;
  explicit zap_authenticator(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace shoal::transport
