#pragma once
// The dashboard's static files (workers/web/assets/), compiled into the binary at build time by
// workers/web/embed.cmake: the dashboard needs no file at run time and loads nothing from
// another site (it must work on a host without internet).

#include <cstddef>
#include <span>
#include <string_view>

namespace shoal::workers::web {

/// One embedded file.
struct asset {
  std::string_view path;         ///< URL path, e.g. "/static/app.js"
  std::string_view content_type; ///< e.g. "text/javascript; charset=utf-8"
  const unsigned char* data;     ///< the file's bytes (static storage)
  std::size_t size;              ///< bytes
};

/// Every embedded file. Thread-safe (static data).
std::span<const asset> assets();

/// The file served at `path`, or nullptr. Thread-safe.
const asset* find_asset(std::string_view path);

} // namespace shoal::workers::web
