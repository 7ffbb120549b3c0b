#pragma once
// Who may change the work table from the dashboard. Requeue and purge are POST requests that
// must carry the token of `[web] token_file` in an `Authorization: Bearer …` header, with a JSON
// body, from the dashboard's own origin. A page of another site cannot send them: a browser
// sends a cross-site request with a custom header or a JSON content type only after a CORS
// preflight, which the dashboard never approves, and it names the page's origin in `Origin`
// (and `Sec-Fetch-Site`), which must match. Cookies are never used, so there is no ambient
// credential to ride on (OWASP CSRF cheat sheet: custom request headers, origin verification).

#include "workers/error.hpp"

#include <filesystem>
#include <optional>
#include <string>

namespace shoal::workers::web {

/// The request headers the check looks at ("" = header absent).
struct action_headers {
  std::string method;         ///< "POST" expected
  std::string authorization;  ///< "Bearer <token>"
  std::string content_type;   ///< "application/json" (parameters allowed)
  std::string origin;         ///< sent by browsers on POST; must be the dashboard's own
  std::string host;           ///< the Host header: the origin must be http(s)://{host}
  std::string sec_fetch_site; ///< "same-origin" or "none" when present
};

/// Why an action was refused: the HTTP status to answer and a sentence for the page.
struct refusal {
  int status = 403;
  std::string why;
};

/// Checks an action request against `token` (nullopt: no token file, actions are off).
/// Returns nullopt when allowed. Thread-safe (pure); compares tokens in constant time.
std::optional<refusal> check_action(const action_headers& h, const std::optional<std::string>& token);

/// Reads the token from `path`: the first line, surrounding whitespace removed. Errors: io
/// (unreadable), invalid_argument (shorter than 16 characters, or holds whitespace or control
/// characters). Warns in the log when the file can be read by group or others.
[[nodiscard]] result<std::string> read_token_file(const std::filesystem::path& path);

} // namespace shoal::workers::web
