#include "storage/http.hpp"

namespace shoal::storage {

std::string_view to_string(http_method m) noexcept {
  switch (m) {
  case http_method::get: return "GET";
  case http_method::head: return "HEAD";
  case http_method::put: return "PUT";
  case http_method::post: return "POST";
  case http_method::merge: return "MERGE";
  case http_method::del: return "DELETE";
  }
  return "GET";
}

} // namespace shoal::storage
