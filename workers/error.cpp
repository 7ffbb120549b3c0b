#include "workers/error.hpp"

namespace shoal::workers {

std::string_view to_string(errc c) noexcept {
  switch (c) {
  case errc::invalid_argument: return "invalid_argument";
  case errc::storage: return "storage";
  case errc::lease_lost: return "lease_lost";
  case errc::not_found: return "not_found";
  case errc::conflict: return "conflict";
  case errc::io: return "io";
  case errc::timeout: return "timeout";
  case errc::parse: return "parse";
  case errc::cancelled: return "cancelled";
  case errc::limit_exceeded: return "limit_exceeded";
  case errc::unavailable: return "unavailable";
  }
  return "unknown";
}

error error::from_storage(const storage::error& e, std::string_view what) {
  error out;
  out.code = errc::storage;
  out.storage_code = e.code;
  out.http_status = e.http_status;
  out.message = std::string(what) + ": " + e.describe();
  return out;
}

std::string error::describe() const {
  std::string out(to_string(code));
  out += ": ";
  out += message;
  return out;
}

} // namespace shoal::workers
