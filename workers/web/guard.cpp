#include "workers/web/guard.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <fstream>

namespace shoal::workers::web {
namespace {

// Equal strings, in time that depends only on their lengths (no early exit on the first byte).
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::min(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i)
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string lower(std::string s) {
  for (char& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string s) {
  auto sp = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && sp(static_cast<unsigned char>(s.back())))
    s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && sp(static_cast<unsigned char>(s[i])))
    ++i;
  return s.substr(i);
}

} // namespace

std::optional<refusal> check_action(const action_headers& h, const std::optional<std::string>& token) {
  if (h.method != "POST")
    return refusal{405, "actions are POST requests"};
  if (!token)
    return refusal{403, "actions are disabled: the supervisor has no [web] token_file"};
  // Origin first: a cross-site page learns nothing about the token from the answer.
  if (!h.origin.empty()) {
    const std::string o = lower(h.origin);
    const std::string host = lower(h.host);
    if (host.empty() || (o != "http://" + host && o != "https://" + host))
      return refusal{403, "refused: the request comes from another origin (" + h.origin + ")"};
  }
  if (!h.sec_fetch_site.empty() && h.sec_fetch_site != "same-origin" && h.sec_fetch_site != "none")
    return refusal{403, "refused: a " + h.sec_fetch_site + " request"};
  if (lower(h.content_type).rfind("application/json", 0) != 0)
    return refusal{415, "actions take a JSON body (Content-Type: application/json)"};
  const std::string prefix = "bearer ";
  if (h.authorization.size() <= prefix.size() || lower(h.authorization.substr(0, prefix.size())) != prefix)
    return refusal{401, "refused: no token (Authorization: Bearer …)"};
  if (!same_secret(trim(h.authorization.substr(prefix.size())), *token))
    return refusal{403, "refused: wrong token"};
  return std::nullopt;
}

result<std::string> read_token_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in)
    return fail(errc::io, "web.token_file " + path.string() + " cannot be read");
  std::string line;
  std::getline(in, line);
  line = trim(line);
  if (line.size() < 16)
    return fail(errc::invalid_argument,
                "web.token_file " + path.string() + " must hold a token of at least 16 characters "
                "(e.g. `openssl rand -hex 32 > " + path.string() + "`)");
  for (char c : line)
    if (std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)))
      return fail(errc::invalid_argument, "web.token_file " + path.string() + ": the token holds whitespace or control characters");
  std::error_code ec;
  const auto perms = std::filesystem::status(path, ec).permissions();
  using p = std::filesystem::perms;
  if (!ec && (perms & (p::group_read | p::others_read)) != p::none)
    spdlog::warn("dashboard: {} can be read by other users; chmod 600 it", path.string());
  return line;
}

} // namespace shoal::workers::web
