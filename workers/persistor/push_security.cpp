#include "workers/persistor/push_security.hpp"

#include "transport/endpoint.hpp"

#include <spdlog/spdlog.h>

namespace shoal::workers::persistor {

result<std::optional<transport::curve_key_pair>>
push_server_keys(std::string_view endpoint, const push_curve_files& files) {
  auto ep = transport::endpoint::parse(endpoint, transport::endpoint_use::bind);
  if (!ep)
    return fail(errc::invalid_argument, "persistor.endpoint " + std::string(endpoint) + ": " + ep.error().message);
  const bool keyed = !files.secret_key.empty();
  if (!keyed) {
    if (ep->host_local())
      return std::optional<transport::curve_key_pair>{};
    return fail(errc::invalid_argument,
                "persistor.endpoint " + std::string(endpoint) +
                    " is not loopback: producers reach it from other hosts, so the persistor must be a "
                    "CURVE server; set [persistor] curve_secret_key and curve_allow_dir (`shoal keys "
                    "generate --out DIR --name persistor`; `shoal init` writes both), or bind 127.0.0.1");
  }
  if (ep->scheme != transport::endpoint_scheme::tcp)
    return fail(errc::invalid_argument, "persistor.curve_secret_key is set but persistor.endpoint " +
                                            std::string(endpoint) + " is not tcp: CURVE is for tcp links");
  if (files.allow_dir.empty())
    return fail(errc::invalid_argument,
                "persistor.curve_allow_dir must name the folder of the producers' *.pub files");
  auto keys = transport::load_curve_secret_key(files.secret_key);
  if (!keys)
    return fail(errc::invalid_argument, "persistor.curve_secret_key " + files.secret_key + ": " +
                                            keys.error().describe());
  if (!files.public_key.empty()) {
    auto pub = transport::load_curve_public_key(files.public_key);
    if (!pub)
      return fail(errc::invalid_argument, "persistor.curve_public_key " + files.public_key + ": " +
                                              pub.error().describe());
    if (*pub != keys->public_key)
      return fail(errc::invalid_argument, "persistor.curve_public_key " + files.public_key +
                                              " is not the public half of persistor.curve_secret_key " +
                                              files.secret_key);
  }
  return std::optional<transport::curve_key_pair>(std::move(*keys));
}

result<std::unique_ptr<transport::zap_authenticator>> start_producer_zap(zmq::context_t& ctx,
                                                                         const push_curve_files& files) {
  transport::zap_options zo;
  zo.allow_dir = files.allow_dir;
  zo.check_interval = std::chrono::milliseconds(1000);
  zo.on_refusal = [](const transport::zap_refusal& r) {
    spdlog::warn("persistor: refused a producer from {} with key '{}' ({}): add its .pub to "
                 "persistor.curve_allow_dir to admit it",
                 r.address, r.public_key, r.reason);
  };
  auto zap = transport::zap_authenticator::start(ctx, std::move(zo));
  if (!zap)
    return fail(zap.error().code == transport::errc::io ? errc::io : errc::invalid_argument,
                "persistor.curve_allow_dir " + files.allow_dir + ": " + zap.error().describe());
  return std::move(*zap);
}

} // namespace shoal::workers::persistor
