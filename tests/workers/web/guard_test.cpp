// Who may requeue and purge from the dashboard (workers/web/guard.hpp), the fleet view handoff
// (fleet_feed.hpp) and the embedded files (assets.hpp): pure parts, no server.

#include "workers/web/assets.hpp"
#include "workers/fleet/fleet_feed.hpp"
#include "workers/web/guard.hpp"

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

namespace shoal::workers::web {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

const std::string token = "0123456789abcdef0123456789abcdef";

action_headers good() {
  return {"POST", "Bearer " + token, "application/json", "http://127.0.0.1:8080", "127.0.0.1:8080", "same-origin"};
}

TEST(CheckAction, AllowsAPostWithTheTokenAJsonBodyFromItsOwnOrigin) {
  EXPECT_FALSE(check_action(good(), token));
  auto h = good();
  h.origin.clear(); // curl, scripts: no Origin, no Sec-Fetch-Site
  h.sec_fetch_site.clear();
  h.content_type = "application/json; charset=utf-8";
  EXPECT_FALSE(check_action(h, token));
  h.origin = "https://shoal.example.org"; // behind a TLS reverse proxy that keeps the Host
  h.host = "shoal.example.org";
  EXPECT_FALSE(check_action(h, token));
}

TEST(CheckAction, RefusesEverythingWithoutATokenFile) {
  auto r = check_action(good(), std::nullopt);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  EXPECT_NE(r->why.find("token_file"), std::string::npos) << r->why;
}

TEST(CheckAction, RefusesAMissingOrWrongToken) {
  auto h = good();
  h.authorization.clear();
  ASSERT_TRUE(check_action(h, token));
  EXPECT_EQ(check_action(h, token)->status, 401);
  h.authorization = "Bearer ";
  EXPECT_EQ(check_action(h, token)->status, 401);
  h.authorization = "Basic " + token;
  EXPECT_EQ(check_action(h, token)->status, 401);
  h.authorization = "Bearer " + token.substr(0, token.size() - 1) + "0"; // last byte differs
  EXPECT_EQ(check_action(h, token)->status, 403);
  h.authorization = "Bearer " + token + "0"; // longer
  EXPECT_EQ(check_action(h, token)->status, 403);
  h.authorization = "bearer " + token; // the scheme is case-insensitive (RFC 7235)
  EXPECT_FALSE(check_action(h, token));
}

TEST(CheckAction, RefusesCrossSiteRequestsEvenWithTheToken) {
  auto h = good();
  h.origin = "http://evil.example";
  EXPECT_EQ(check_action(h, token)->status, 403);
  h = good();
  h.origin = "http://127.0.0.1:8081"; // another port is another origin
  EXPECT_EQ(check_action(h, token)->status, 403);
  h = good();
  h.origin = "null"; // sandboxed frames, file: pages
  EXPECT_EQ(check_action(h, token)->status, 403);
  h = good();
  h.sec_fetch_site = "cross-site";
  EXPECT_EQ(check_action(h, token)->status, 403);
  h = good();
  h.sec_fetch_site = "same-site"; // a sibling subdomain is not the dashboard
  EXPECT_EQ(check_action(h, token)->status, 403);
}

TEST(CheckAction, RefusesFormBodiesAndOtherMethods) {
  auto h = good();
  for (const char* type : {"application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain", ""}) {
    h.content_type = type;
    ASSERT_TRUE(check_action(h, token)) << type;
    EXPECT_EQ(check_action(h, token)->status, 415) << type;
  }
  h = good();
  h.method = "GET";
  EXPECT_EQ(check_action(h, token)->status, 405);
}

class TokenFileTest : public ::testing::Test {
protected:
  fs::path dir = fs::temp_directory_path() / ("shoal-token-" + std::to_string(::getpid()));
  void SetUp() override { fs::create_directories(dir); }
  void TearDown() override { fs::remove_all(dir); }
  fs::path write(const std::string& text) {
    auto p = dir / "token";
    std::ofstream(p) << text;
    ::chmod(p.c_str(), 0600);
    return p;
  }
};

TEST_F(TokenFileTest, ReadsTheFirstLineTrimmed) {
  auto t = read_token_file(write("  " + token + "  \nsecond line\n"));
  ASSERT_TRUE(t) << t.error().describe();
  EXPECT_EQ(*t, token);
}

TEST_F(TokenFileTest, RefusesShortTokensAndMissingFiles) {
  auto t = read_token_file(write("short\n"));
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, errc::invalid_argument);
  EXPECT_NE(t.error().message.find("16"), std::string::npos) << t.error().message;
  auto spaced = read_token_file(write("0123456789 abcdef0123\n"));
  ASSERT_FALSE(spaced);
  auto none = read_token_file(dir / "absent");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, errc::io);
}

TEST(FleetFeed, ReaderWaitsForTheOwnerToPublishAFreshView) {
  fleet::fleet_feed feed;
  EXPECT_FALSE(feed.wanted());
  // Nobody publishes: the reader gets nothing after its wait, and the owner sees the request.
  EXPECT_FALSE(feed.get(milliseconds(1000), milliseconds(10)));
  EXPECT_TRUE(feed.wanted());
  std::jthread owner([&](std::stop_token stop) {
    while (!stop.stop_requested()) {
      if (feed.wanted()) {
        fleet::fleet_status s;
        s.host = "h1";
        feed.publish(s);
      }
      std::this_thread::sleep_for(milliseconds(1));
    }
  });
  auto got = feed.get(milliseconds(0), milliseconds(10'000));
  ASSERT_TRUE(got);
  EXPECT_EQ(got->host, "h1");
  owner.request_stop();
  owner.join();
  EXPECT_FALSE(feed.wanted());
  // A view younger than max_age is returned without asking the owner.
  EXPECT_TRUE(feed.get(milliseconds(60'000), milliseconds(0)));
  EXPECT_FALSE(feed.wanted());
}

TEST(Assets, TheShellScriptAndStylesAreCompiledIn) {
  for (const char* path : {"/static/index.html", "/static/app.js", "/static/style.css"}) {
    const asset* a = find_asset(path);
    ASSERT_NE(a, nullptr) << path;
    EXPECT_GT(a->size, 100u) << path;
  }
  EXPECT_EQ(find_asset("/static/none.js"), nullptr);
  const asset* js = find_asset("/static/app.js");
  const std::string_view text(reinterpret_cast<const char*>(js->data), js->size);
  EXPECT_EQ(js->content_type, "text/javascript; charset=utf-8");
  // Data reaches the page as text only: the script never parses markup.
  for (const char* sink : {"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("})
    EXPECT_EQ(text.find(sink), std::string_view::npos) << sink;
  // Nothing is loaded from another site.
  const asset* html = find_asset("/static/index.html");
  const std::string_view page(reinterpret_cast<const char*>(html->data), html->size);
  EXPECT_EQ(page.find("http"), std::string_view::npos);
}

} // namespace
} // namespace shoal::workers::web
