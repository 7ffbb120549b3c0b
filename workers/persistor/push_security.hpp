#pragma once
// CURVE on the producers' link to a push persistor (issue 15; transport/ENVELOPE.md "Third-party
// producers"). A persistor whose ROUTER is on a tcp endpoint that is not loopback is a CURVE
// server (RFC 26) with a ZAP handler (RFC 27) admitting only the producers' public keys in
// `curve_allow_dir` (one *.pub per producer, re-read every second, as the fleet's allow folder);
// it refuses to start there without them. Loopback, ipc and inproc stay plain unless keys are
// configured. The admitted key reaches each received frame as its ZMQ "User-Id" and every
// stored record names it (METADATA.producer_key, workers/etl/BLOBS.md).

#include "transport/curve.hpp"
#include "workers/error.hpp"

#include <zmq.hpp>

#include <memory>
#include <optional>
#include <string>

namespace shoal::workers::persistor {

/// ZAP domain of the persistor's ROUTER (distinct from the fleet's "shoal").
inline constexpr std::string_view producer_zap_domain = "shoal-persistor";

/// Key files of a push persistor ([persistor] curve_*), paths as configured.
struct push_curve_files {
  std::string secret_key; ///< this persistor's CURVE secret key file; empty = none
  std::string public_key; ///< optional: its public key file, checked against the secret
  std::string allow_dir;  ///< folder of the admitted producers' *.pub files
};

/// What the ROUTER bound on `endpoint` must be: nullopt = plain (no keys configured and the
/// endpoint keeps traffic on this host: transport::endpoint::host_local), else the server key
/// pair to configure (transport::configure_curve_server with producer_zap_domain). Loads and
/// checks the key files (read_secret_file's rules: symlinks followed, owner and mode checked).
/// Errors: invalid_argument — a tcp endpoint that is not loopback without curve_secret_key and
/// curve_allow_dir (naming what to set), keys on an ipc or inproc endpoint, an unreadable or
/// mismatched key file, an allow folder that does not load. Thread-safe.
[[nodiscard]] result<std::optional<transport::curve_key_pair>>
push_server_keys(std::string_view endpoint, const push_curve_files& files);

/// Starts the ZAP handler of `ctx` admitting the producers' keys in `files.allow_dir` (re-read
/// every second), logging every refusal with the peer's address and key. Call before binding.
/// Errors: invalid_argument (allow folder), io (handler). Owner only.
[[nodiscard]] result<std::unique_ptr<transport::zap_authenticator>>
start_producer_zap(zmq::context_t& ctx, const push_curve_files& files);

} // namespace shoal::workers::persistor
