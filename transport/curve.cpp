#include "transport/curve.hpp"

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

namespace shoal::transport {
namespace {

constexpr const char* zap_endpoint = "inproc://zeromq.zap.01"; // fixed by RFC 27
constexpr std::size_t max_key_file_bytes = 1 << 20;           // allow-lists are small

error io_error(std::string what, const std::filesystem::path& p, int e) {
  return error{errc::io, e, what + " " + p.string() + ": " + std::strerror(e)};
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Reads a whole (small) file through an already open descriptor.
result<std::string> read_fd(int fd, const std::filesystem::path& p, std::size_t max_bytes) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return unexpected_error(io_error("reading", p, errno));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > max_bytes)
      return fail(errc::invalid_argument,
                  p.string() + " is larger than " + std::to_string(max_bytes) + " bytes; not a key or secret file");
  }
  return out;
}

struct file_identity {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = -1;
  std::int64_t mtime_ns = -1;
  friend bool operator==(const file_identity&, const file_identity&) = default;
};

file_identity identity_of(const struct stat& st) {
  return {st.st_dev, st.st_ino, st.st_size,
          static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

// Opens `p` following symlinks (a Kubernetes Secret volume presents `name -> ..data/name`,
// `..data -> ..2024_…`), then judges the file itself through the open descriptor, so what is
// checked is what is read (no check-then-open race). Refuses anything but a regular file.
result<std::string> read_file(const std::filesystem::path& p, struct stat* st_out = nullptr,
                              std::size_t max_bytes = max_key_file_bytes,
                              const std::function<result<void>(const struct stat&)>& check = {}) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return unexpected_error(io_error("opening", p, errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return unexpected_error(io_error("stat of", p, e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(errc::invalid_argument, p.string() + " is not a regular file");
  }
  if (check) {
    if (auto ok = check(st); !ok) {
      ::close(fd);
      return unexpected_error(std::move(ok).error());
    }
  }
  if (st_out) *st_out = st;
  auto text = read_fd(fd, p, max_bytes);
  ::close(fd);
  return text;
}

std::string mode_text(mode_t m) {
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(m & 07777));
  return mode;
}

// OpenSSH's rule for private key files (sshkey_perm_ok), with the owner checked too: a file we
// own must give group and others no access; a file root owns (an administrator's, or the
// kubelet's Secret volume with the pod's fsGroup) may let its group read but nothing more.
result<void> check_secret_file(const struct stat& st, const std::filesystem::path& p) {
  const uid_t me = ::geteuid();
  if (st.st_uid != me && st.st_uid != 0)
    return fail(errc::security, "secret file " + p.string() + " is owned by uid " +
                                    std::to_string(st.st_uid) + ", not by this user (uid " +
                                    std::to_string(me) + ") or root");
  const mode_t forbidden = st.st_uid == me ? 077 : 027;
  if ((st.st_mode & forbidden) != 0)
    return fail(errc::security,
                "secret file " + p.string() + " has mode " + mode_text(st.st_mode) +
                    (st.st_uid == me ? "; group/others must have no access (chmod 600)"
                                     : "; owned by root, it may be readable by its group at most (chmod 440)"));
  return {};
}

// Calls `take(key)` with the first word of each line that is neither blank nor a comment, in
// order, until it returns false; each word must be a key. Errors name `where` and the line.
template <class F> result<void> for_each_key_line(std::string_view text, const std::string& where, F&& take) {
  std::size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    const std::string_view key = line.substr(0, line.find_first_of(" \t"));
    if (!valid_curve_key(key))
      return fail(errc::invalid_argument, where + ":" + std::to_string(line_no) + ": not a 40-character Z85 key");
    if (!take(key)) break;
  }
  return {};
}

// The first line that is neither blank nor a comment; its first word must be a key.
result<std::string> first_key(std::string_view text, const std::filesystem::path& p) {
  std::optional<std::string> key;
  auto walked = for_each_key_line(text, p.string(), [&](std::string_view k) {
    key.emplace(k);
    return false;
  });
  if (!walked) return unexpected_error(std::move(walked).error());
  if (!key) return fail(errc::invalid_argument, p.string() + ": no key found");
  return *key;
}

result<std::unordered_set<std::string>> parse_allow_list(std::string_view text,
                                                         const std::string& where) {
  std::unordered_set<std::string> keys;
  auto walked = for_each_key_line(text, where, [&](std::string_view k) {
    keys.emplace(k);
    return true;
  });
  if (!walked) return unexpected_error(std::move(walked).error());
  return keys;
}

result<std::array<std::uint8_t, 32>> decode_key(std::string_view z85, const char* what) {
  std::array<std::uint8_t, 32> raw{};
  char text[curve_key_z85_chars + 1] = {};
  if (z85.size() != curve_key_z85_chars)
    return fail(errc::invalid_argument, std::string(what) + " is not a 40-character Z85 key");
  std::memcpy(text, z85.data(), curve_key_z85_chars);
  if (zmq_z85_decode(raw.data(), text) == nullptr)
    return fail(errc::invalid_argument, std::string(what) + " is not valid Z85");
  return raw;
}

result<void> set_key(zmq::socket_t& s, int option, std::string_view z85, const char* what) {
  auto raw = decode_key(z85, what);
  if (!raw) return unexpected_error(std::move(raw).error());
  if (zmq_setsockopt(s.handle(), option, raw->data(), raw->size()) != 0) {
    const int e = zmq_errno();
    return fail(errc::zmq, std::string("setting ") + what + ": " + zmq_strerror(e), e);
  }
  return {};
}

result<void> require_curve() {
  if (!curve_available())
    return fail(errc::security, "this libzmq has no CURVE support (built without libsodium)");
  return {};
}

} // namespace

// -- keys ---------------------------------------------------------------------------------------

bool curve_available() noexcept { return zmq_has("curve") != 0; }

bool valid_curve_key(std::string_view key) noexcept {
  if (key.size() != curve_key_z85_chars) return false;
  std::uint8_t raw[32];
  char text[curve_key_z85_chars + 1] = {};
  std::memcpy(text, key.data(), curve_key_z85_chars);
  return zmq_z85_decode(raw, text) != nullptr;
}

result<curve_key_pair> generate_curve_key_pair() {
  if (auto r = require_curve(); !r) return unexpected_error(std::move(r).error());
  char pub[curve_key_z85_chars + 1], sec[curve_key_z85_chars + 1];
  if (zmq_curve_keypair(pub, sec) != 0)
    return fail(errc::security, "zmq_curve_keypair failed", zmq_errno());
  return curve_key_pair{std::string(pub, curve_key_z85_chars), std::string(sec, curve_key_z85_chars)};
}

result<std::string> curve_public_key(std::string_view secret_key) {
  if (auto r = require_curve(); !r) return unexpected_error(std::move(r).error());
  if (!valid_curve_key(secret_key))
    return fail(errc::invalid_argument, "secret key is not a 40-character Z85 key");
  char sec[curve_key_z85_chars + 1] = {};
  char pub[curve_key_z85_chars + 1] = {};
  std::memcpy(sec, secret_key.data(), curve_key_z85_chars);
  if (zmq_curve_public(pub, sec) != 0)
    return fail(errc::security, "zmq_curve_public failed", zmq_errno());
  return std::string(pub, curve_key_z85_chars);
}

result<void> save_curve_key_pair(const curve_key_pair& keys, const std::filesystem::path& public_file,
                                 const std::filesystem::path& secret_file) {
  if (!valid_curve_key(keys.public_key) || !valid_curve_key(keys.secret_key))
    return fail(errc::invalid_argument, "key pair is not two 40-character Z85 keys");
  const std::string pub = "# shoal CURVE public key (Z85); share it with peers\n" + keys.public_key + "\n";
  const std::string sec = "# shoal CURVE secret key (Z85); keep this file private (mode 0600)\n" +
                          keys.secret_key + "\n";
  if (auto r = write_file_atomically(secret_file, sec, 0600, true); !r) return r;
  return write_file_atomically(public_file, pub, 0644, true);
}

result<std::string> read_secret_file(const std::filesystem::path& file, std::size_t max_bytes) {
  return read_file(file, nullptr, max_bytes,
                   [&](const struct stat& st) { return check_secret_file(st, file); });
}

result<std::string> allow_list_from_dir(const std::filesystem::path& dir) {
  // The folder is opened (following symlinks, as a Secret volume mount is) and judged through
  // its descriptor: whoever may add a file to it is admitted, so others must not be able to.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    const int e = errno;
    return e == ENOTDIR ? fail(errc::invalid_argument, dir.string() + " is not a folder")
                        : unexpected_error(io_error("opening the folder", dir, e));
  }
  struct stat st {};
  struct statvfs vfs {};
  const bool stat_ok = ::fstat(dfd, &st) == 0 && ::fstatvfs(dfd, &vfs) == 0;
  const int stat_errno = errno;
  ::close(dfd);
  if (!stat_ok) return unexpected_error(io_error("stat of", dir, stat_errno));
  // A Kubernetes Secret volume's folder is mode 1777 but mounted read-only: nobody can add to it.
  if ((st.st_mode & S_IWOTH) != 0 && (vfs.f_flag & ST_RDONLY) == 0)
    return fail(errc::security, "allow-list folder " + dir.string() + " has mode " + mode_text(st.st_mode) +
                                    ": anyone could add a key to it (chmod o-w)");
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().extension() == ".pub" && !e.path().filename().string().starts_with("."))
      files.push_back(e.path());
  if (ec) return fail(errc::io, "cannot list " + dir.string() + ": " + ec.message(), ec.value());
  std::sort(files.begin(), files.end());
  std::string out = "# generated by shoal from " + dir.string() + "\n";
  for (const auto& p : files) {
    struct stat fst {};
    auto text = read_file(p, &fst);
    if (!text) return unexpected_error(std::move(text).error());
    if ((fst.st_mode & S_IWOTH) != 0)
      return fail(errc::security, "allow-list file " + p.string() + " has mode " + mode_text(fst.st_mode) +
                                      ": anyone could replace the key in it (chmod o-w)");
    auto k = first_key(*text, p);
    if (!k) return unexpected_error(std::move(k).error());
    out += *k + " " + p.filename().string() + "\n";
  }
  return out;
}

result<void> write_file_atomically(const std::filesystem::path& target, std::string_view text,
                                   mode_t mode, bool replace) {
  // A fresh name created with O_EXCL | O_NOFOLLOW: never someone else's file or symlink planted
  // in a shared folder; the mode is set again with fchmod because the umask may have cut it.
  static std::atomic<std::uint64_t> counter{0};
  std::filesystem::path tmp = target;
  tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return unexpected_error(io_error("creating", tmp, errno));
  auto cleanup = [&](int e, const char* what) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return unexpected_error(io_error(what, tmp, e));
  };
  if (::fchmod(fd, mode) != 0) return cleanup(errno, "chmod of");
  std::size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return cleanup(errno, "writing");
    }
    off += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return cleanup(errno, "fsync of");
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return unexpected_error(io_error("closing", tmp, e));
  }
  // rename replaces; link fails with EEXIST when the target exists (also a dangling symlink),
  // so "write unless present" has no window between a check and the write.
  const int rc = replace ? ::rename(tmp.c_str(), target.c_str()) : ::link(tmp.c_str(), target.c_str());
  const int e = errno;
  if (rc != 0 || !replace) ::unlink(tmp.c_str());
  if (rc != 0) return unexpected_error(io_error(replace ? "renaming to" : "creating", target, e));
  return {};
}

result<std::string> load_curve_public_key(const std::filesystem::path& file) {
  auto text = read_file(file);
  if (!text) return unexpected_error(std::move(text).error());
  return first_key(*text, file);
}

result<curve_key_pair> load_curve_secret_key(const std::filesystem::path& file) {
  auto text = read_secret_file(file);
  if (!text) {
    if (text.error().code == errc::security)
      spdlog::error("curve: refusing secret key file: {}", text.error().message);
    return unexpected_error(std::move(text).error());
  }
  auto secret = first_key(*text, file);
  if (!secret) return unexpected_error(std::move(secret).error());
  auto pub = curve_public_key(*secret);
  if (!pub) return unexpected_error(std::move(pub).error());
  return curve_key_pair{std::move(*pub), std::move(*secret)};
}

// -- socket configuration -----------------------------------------------------------------------

result<void> configure_curve_server(zmq::socket_t& s, const curve_key_pair& server,
                                    std::string_view zap_domain) {
  if (auto r = require_curve(); !r) return r;
  int one = 1;
  if (zmq_setsockopt(s.handle(), ZMQ_CURVE_SERVER, &one, sizeof one) != 0)
    return fail(errc::zmq, std::string("setting ZMQ_CURVE_SERVER: ") + zmq_strerror(zmq_errno()), zmq_errno());
  if (auto r = set_key(s, ZMQ_CURVE_SECRETKEY, server.secret_key, "server secret key"); !r) return r;
  if (zmq_setsockopt(s.handle(), ZMQ_ZAP_DOMAIN, zap_domain.data(), zap_domain.size()) != 0)
    return fail(errc::zmq, std::string("setting ZMQ_ZAP_DOMAIN: ") + zmq_strerror(zmq_errno()), zmq_errno());
  return {};
}

result<void> configure_curve_client(zmq::socket_t& s, const curve_key_pair& client,
                                    std::string_view server_public_key) {
  if (auto r = require_curve(); !r) return r;
  if (auto r = set_key(s, ZMQ_CURVE_SERVERKEY, server_public_key, "server public key"); !r) return r;
  if (auto r = set_key(s, ZMQ_CURVE_PUBLICKEY, client.public_key, "client public key"); !r) return r;
  return set_key(s, ZMQ_CURVE_SECRETKEY, client.secret_key, "client secret key");
}

// -- handshake monitor --------------------------------------------------------------------------

result<handshake_monitor> handshake_monitor::attach(zmq::context_t& ctx, zmq::socket_t& socket) {
  static std::atomic<std::uint64_t> seq{0};
  const std::string ep = "inproc://shoal.handshake-monitor." + std::to_string(::getpid()) + "." +
                         std::to_string(seq.fetch_add(1));
  if (zmq_socket_monitor(socket.handle(), ep.c_str(),
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) != 0)
    return fail(errc::zmq, std::string("zmq_socket_monitor: ") + zmq_strerror(zmq_errno()), zmq_errno());
  try {
    zmq::socket_t pair(ctx, zmq::socket_type::pair);
    pair.set(zmq::sockopt::linger, 0);
    pair.connect(ep);
    return handshake_monitor(std::move(pair));
  } catch (const zmq::error_t& e) {
    return fail(errc::zmq, std::string("handshake monitor: ") + e.what(), e.num());
  }
}

std::optional<handshake_failure> handshake_monitor::poll() {
  for (;;) {
    // Each event is two frames: 6 bytes (uint16 event, uint32 value, host order), the endpoint.
    zmq::message_t ev, addr;
    if (zmq_msg_recv(ev.handle(), pair_.handle(), ZMQ_DONTWAIT) < 0) break;
    if (ev.more() && zmq_msg_recv(addr.handle(), pair_.handle(), ZMQ_DONTWAIT) < 0) break;
    if (ev.size() < 6) continue;
    std::uint16_t event = 0;
    std::uint32_t value = 0;
    std::memcpy(&event, ev.data(), 2);
    std::memcpy(&value, static_cast<const char*>(ev.data()) + 2, 4);
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      succeeded_ = true;
      failed_.reset();
      continue;
    }
    handshake_failure f;
    f.what = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH       ? handshake_failure::kind::auth
             : event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? handshake_failure::kind::protocol
                                                            : handshake_failure::kind::other;
    f.value = static_cast<int>(value);
    f.endpoint.assign(addr.data<char>(), addr.size());
    succeeded_ = false;
    failed_ = std::move(f);
  }
  return failed_;
}

// -- ZAP handler --------------------------------------------------------------------------------

struct zap_authenticator::impl {
  zap_options opts;
  zmq::context_t* ctx = nullptr;
  zmq::socket_t handler;   // REP bound to inproc://zeromq.zap.01; used by the thread only
  zmq::socket_t pipe_in;   // PAIR the thread polls for "stop"
  zmq::socket_t pipe_out;  // PAIR the owner writes "stop" to
  std::thread thread;
  bool stopped = false;
  zap_stats stats;

  mutable std::mutex mu;                  // guards keys and loaded
  std::unordered_set<std::string> keys;
  file_identity loaded;
  std::string loaded_text;                // allow_dir: the list text last loaded
  std::chrono::steady_clock::time_point dir_checked{}; // handler thread only

  std::string source() const {
    return opts.allow_dir.empty() ? opts.allow_list.string() : opts.allow_dir.string() + "/*.pub";
  }

  result<std::size_t> load() {
    struct stat st {};
    result<std::string> text = opts.allow_dir.empty() ? read_file(opts.allow_list, &st)
                                                      : allow_list_from_dir(opts.allow_dir);
    result<std::unordered_set<std::string>> parsed =
        text ? parse_allow_list(*text, source())
             : result<std::unordered_set<std::string>>(unexpected_error(text.error()));
    std::lock_guard lock(mu);
    if (!parsed) {
      // Remember the identity anyway so a broken file is reported once, not on every request.
      if (text) {
        loaded = identity_of(st);
        loaded_text = *text;
      }
      stats.reload_failures.fetch_add(1, std::memory_order_relaxed);
      spdlog::error("zap: allow-list not loaded, keeping the previous {} keys: {}", keys.size(),
                    parsed.error().describe());
      return unexpected_error(parsed.error());
    }
    keys = std::move(*parsed);
    loaded = identity_of(st);
    loaded_text = std::move(*text);
    stats.reloads.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("zap: allow-list {} loaded, {} keys", source(), keys.size());
    return keys.size();
  }

  void reload_if_changed() {
    if (!opts.reload_on_change) return;
    if (!opts.allow_dir.empty()) {
      // A folder has no single identity: read it again, at most once per check interval (its
      // files are a few dozen bytes each), and swap the list only when the text changed.
      const auto now = std::chrono::steady_clock::now();
      if (now - dir_checked < opts.check_interval) return;
      dir_checked = now;
      auto text = allow_list_from_dir(opts.allow_dir);
      if (!text) return; // keep the list while the folder is unreadable (logged on a real reload)
      {
        std::lock_guard lock(mu);
        if (*text == loaded_text) return;
      }
      (void)load();
      return;
    }
    struct stat st {};
    if (::stat(opts.allow_list.c_str(), &st) != 0) return; // keep the list while the file is away
    {
      std::lock_guard lock(mu);
      if (identity_of(st) == loaded) return;
    }
    (void)load();
  }

  bool allows(std::string_view key) const {
    std::lock_guard lock(mu);
    return keys.contains(std::string(key));
  }

  // One ZAP request → one reply (RFC 27 §"Request and reply").
  void serve_one() {
    std::vector<zmq::message_t> frames;
    for (;;) {
      zmq::message_t m;
      if (zmq_msg_recv(m.handle(), handler.handle(), 0) < 0) return; // ETERM: stopping
      const bool more = m.more();
      frames.push_back(std::move(m));
      if (!more || frames.size() > 16) break;
    }
    while (frames.back().more()) { // drain an absurd request so REP stays in step
      zmq::message_t junk;
      if (zmq_msg_recv(junk.handle(), handler.handle(), 0) < 0) return;
      if (!junk.more()) break;
    }
    auto text = [&](std::size_t i) {
      return i < frames.size() ? std::string(frames[i].data<char>(), frames[i].size()) : std::string();
    };
    const std::string request_id = text(1);
    auto reply = [&](const char* code, const std::string& status, const std::string& user) {
      const std::string parts[] = {"1.0", request_id, code, status, user, ""};
      for (std::size_t i = 0; i < 6; ++i)
        zmq_send(handler.handle(), parts[i].data(), parts[i].size(), i < 5 ? ZMQ_SNDMORE : 0);
    };
    if (frames.size() < 6 || text(0) != "1.0") {
      stats.malformed.fetch_add(1, std::memory_order_relaxed);
      spdlog::error("zap: malformed request ({} frames, version '{}')", frames.size(), text(0));
      reply("500", "malformed ZAP request", "");
      return;
    }
    zap_refusal who{text(3), {}, text(5), text(2), {}};
    reload_if_changed();
    if (who.mechanism == "CURVE" && frames.size() == 7 && frames[6].size() == 32) {
      char z85[curve_key_z85_chars + 1] = {};
      zmq_z85_encode(z85, frames[6].data<std::uint8_t>(), 32);
      who.public_key.assign(z85, curve_key_z85_chars);
      if (allows(who.public_key)) {
        stats.admitted.fetch_add(1, std::memory_order_relaxed);
        reply("200", "OK", who.public_key); // User-Id = the client's key, for the application
        return;
      }
      who.reason = "public key not in allow-list";
    } else {
      who.reason = "mechanism " + who.mechanism + " not admitted; CURVE with a listed key only";
    }
    stats.refused.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("zap: refused {} peer {} key '{}' domain '{}': {}", who.mechanism, who.address,
                 who.public_key, who.domain, who.reason);
    reply("400", who.reason, "");
    if (opts.on_refusal) opts.on_refusal(who);
  }

  void run() {
    zmq_pollitem_t items[] = {{handler.handle(), 0, ZMQ_POLLIN, 0},
                              {pipe_in.handle(), 0, ZMQ_POLLIN, 0}};
    const long interval = static_cast<long>(std::max<std::int64_t>(opts.check_interval.count(), 10));
    for (;;) {
      const int n = zmq_poll(items, 2, interval);
      if (n < 0) {
        if (zmq_errno() == EINTR) continue;
        break; // ETERM
      }
      if (items[1].revents & ZMQ_POLLIN) break;
      if (items[0].revents & ZMQ_POLLIN) serve_one();
      else reload_if_changed();
    }
    handler.close();
    pipe_in.close();
  }
};

zap_authenticator::zap_authenticator(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

zap_authenticator::~zap_authenticator() { stop(); }

result<std::unique_ptr<zap_authenticator>> zap_authenticator::start(zmq::context_t& ctx,
                                                                    zap_options opts) {
  auto p = std::make_unique<impl>();
  p->opts = std::move(opts);
  p->ctx = &ctx;
  if (auto r = p->load(); !r) return unexpected_error(std::move(r).error());
  const std::string pipe = "inproc://shoal.zap.pipe." + std::to_string(reinterpret_cast<std::uintptr_t>(p.get()));
  try {
    p->handler = zmq::socket_t(ctx, zmq::socket_type::rep);
    p->pipe_in = zmq::socket_t(ctx, zmq::socket_type::pair);
    p->pipe_out = zmq::socket_t(ctx, zmq::socket_type::pair);
    p->handler.set(zmq::sockopt::linger, 0);
    p->pipe_in.set(zmq::sockopt::linger, 0);
    p->pipe_out.set(zmq::sockopt::linger, 0);
    p->pipe_in.bind(pipe);
    p->pipe_out.connect(pipe);
  } catch (const zmq::error_t& e) {
    return fail(e.num() == ETERM ? errc::closed : errc::zmq,
                std::string("zap: creating sockets: ") + e.what(), e.num());
  }
  if (zmq_bind(p->handler.handle(), zap_endpoint) != 0) {
    const int e = zmq_errno();
    return fail(e == EADDRINUSE ? errc::security : errc::zmq,
                std::string("zap: binding ") + zap_endpoint + ": " + zmq_strerror(e) +
                    (e == EADDRINUSE ? " (another ZAP handler serves this context)" : ""),
                e);
  }
  // The sockets were made on this thread; the thread start is the full memory barrier ZeroMQ
  // asks for when a socket moves to another thread. From here only the thread touches them.
  p->thread = std::thread([raw = p.get()] { raw->run(); });
  return std::unique_ptr<zap_authenticator>(new zap_authenticator(std::move(p)));
}

void zap_authenticator::stop() noexcept {
  if (!impl_ || impl_->stopped) return;
  impl_->stopped = true;
  zmq_send(impl_->pipe_out.handle(), "", 0, ZMQ_DONTWAIT);
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->pipe_out.close();
}

result<std::size_t> zap_authenticator::reload() { return impl_->load(); }

bool zap_authenticator::allows(std::string_view public_key) const { return impl_->allows(public_key); }

std::size_t zap_authenticator::size() const {
  std::lock_guard lock(impl_->mu);
  return impl_->keys.size();
}

const zap_stats& zap_authenticator::stats() const noexcept { return impl_->stats; }

} // namespace shoal::transport
