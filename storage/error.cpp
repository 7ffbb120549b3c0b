#include "storage/error.hpp"

namespace shoal::storage {

std::string_view to_string(errc c) noexcept {
  switch (c) {
  case errc::invalid_argument: return "invalid_argument";
  case errc::timeout: return "timeout";
  case errc::transport: return "transport";
  case errc::not_found: return "not_found";
  case errc::conflict: return "conflict";
  case errc::precondition_failed: return "precondition_failed";
  case errc::throttled: return "throttled";
  case errc::server: return "server";
  case errc::auth: return "auth";
  case errc::limit_exceeded: return "limit_exceeded";
  case errc::bad_request: return "bad_request";
  case errc::bad_response: return "bad_response";
  }
  return "unknown";
}

std::string error::describe() const {
  std::string out(to_string(code));
  if (http_status != 0 || !service_code.empty()) {
    out += " (";
    if (http_status != 0)
      out += std::to_string(http_status);
    if (!service_code.empty()) {
      if (http_status != 0)
        out += ' ';
      out += service_code;
    }
    out += ')';
  }
  if (!message.empty()) {
    out += ": ";
    out += message;
  }
  if (attempts > 1) {
    out += " [after ";
    out += std::to_string(attempts);
    out += " attempts]";
  }
  if (!request_id.empty()) {
    out += " [request ";
    out += request_id;
    out += ']';
  }
  return out;
}

error with_context(error e, std::string_view what) {
  std::string m(what);
  if (!e.message.empty())
    m += ": " + e.message;
  e.message = std::move(m);
  return e;
}

errc errc_from_http(int status, std::string_view service_code) noexcept {
  if (status == 408 || service_code == "OperationTimedOut")
    return errc::timeout;
  if (service_code == "EntityTooLarge" || service_code == "RequestBodyTooLarge" ||
      service_code == "PropertyValueTooLarge" || service_code == "TooManyProperties" ||
      service_code == "BlockCountExceedsLimit" || status == 413)
    return errc::limit_exceeded;
  switch (status) {
  case 401:
  case 403: return errc::auth;
  case 404: return errc::not_found;
  case 409: return errc::conflict;
  case 412: return errc::precondition_failed;
  case 429:
  case 503: return errc::throttled;
  default: break;
  }
  if (status >= 500)
    return errc::server;
  return errc::bad_request;
}

} // namespace shoal::storage
