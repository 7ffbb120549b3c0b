// The signed request pipeline against the real Azurite (fixtures `azurite` and `azurite_tls`).

#include "storage/connection_string.hpp"
#include "storage/encoding.hpp"
#include "storage/pipeline.hpp"

#include "tests/support/azurite.hpp"
#include "tests/support/eventually.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace shoal::storage {
namespace {

storage_request create_table_request(const std::string& name) {
  storage_request req;
  req.method = http_method::post;
  req.path = "/Tables";
  req.headers = {{"Accept", "application/json;odata=nometadata"},
                 {"Content-Type", "application/json"},
                 {"DataServiceVersion", "3.0;NetFx"},
                 {"MaxDataServiceVersion", "3.0;NetFx"},
                 {"Prefer", "return-no-content"}};
  req.body = R"({"TableName":")" + name + R"("})";
  return req;
}

storage_request create_container_request(const std::string& name) {
  storage_request req;
  req.method = http_method::put;
  req.path = "/" + name;
  req.query = {{"restype", "container"}};
  return req;
}

storage_request create_queue_request(const std::string& name) {
  storage_request req;
  req.method = http_method::put;
  req.path = "/" + name;
  return req;
}

// This process's TCP connections to loopback port `port`: socket inode -> state, from
// /proc/self/net/tcp and tcp6 (state 01 = ESTABLISHED, 08 = CLOSE_WAIT: the peer has closed it,
// this side has not yet).
std::map<std::string, std::string> connections_to(int port) {
  std::set<std::string> ours; // inodes of this process's sockets
  std::error_code ec;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    const std::string target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (!ec && target.starts_with("socket:[") && target.ends_with("]"))
      ours.insert(target.substr(8, target.size() - 9));
  }
  char want[8];
  std::snprintf(want, sizeof want, ":%04X", static_cast<unsigned>(port));
  std::map<std::string, std::string> out;
  for (const char* table : {"/proc/self/net/tcp", "/proc/self/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line); // the column names
    while (std::getline(in, line)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      std::istringstream fields(line);
      std::string sl, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> sl >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      if (remote.ends_with(want) && ours.contains(inode))
        out[inode] = state;
    }
  }
  return out;
}

class PipelineIt : public ::testing::Test {
protected:
  void SetUp() override {
    auto acct = parse_connection_string(tests::azurite_connection_string());
    ASSERT_TRUE(acct) << acct.error().describe();
    account = *acct;
  }

  pipeline make(pipeline_options opts = {}) {
    auto p = pipeline::make(account, std::move(opts));
    EXPECT_TRUE(p) << p.error().describe();
    return std::move(*p);
  }

  storage_account account;
};

TEST_F(PipelineIt, CreatesTableWithSharedKey) {
  const pipeline p = make();
  const std::string name = tests::unique_name("PipeSk");
  auto r = p.send(service::table, create_table_request(name));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, 204);
  EXPECT_TRUE(r->header("x-ms-request-id"));

  // Creating it again is a 409 TableAlreadyExists, carried as a value-level error.
  auto again = p.send(service::table, create_table_request(name));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, errc::conflict);
  EXPECT_EQ(again.error().http_status, 409);
  EXPECT_EQ(again.error().service_code, "TableAlreadyExists");
  EXPECT_FALSE(again.error().request_id.empty());
  EXPECT_FALSE(again.error().message.empty());
  EXPECT_FALSE(again.error().retryable);
  EXPECT_EQ(again.error().attempts, 1);
}

TEST_F(PipelineIt, CreatesTableWithSharedKeyLite) {
  pipeline_options opts;
  opts.table_auth = table_auth_scheme::shared_key_lite;
  const pipeline p = make(opts);
  auto r = p.send(service::table, create_table_request(tests::unique_name("PipeLite")));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, 204);
  // A second table, so that a one-per-page listing has a continuation whatever else exists.
  auto r2 = p.send(service::table, create_table_request(tests::unique_name("PipeLite")));
  ASSERT_TRUE(r2) << r2.error().describe();

  storage_request list;
  list.path = "/Tables";
  list.query = {{"$top", "1"}}; // excluded from the table canonicalized resource
  list.headers = {{"Accept", "application/json;odata=nometadata"}};
  auto l = p.send(service::table, list);
  ASSERT_TRUE(l) << l.error().describe();
  EXPECT_EQ(l->status, 200);
  EXPECT_NE(l->body.find("\"value\""), std::string::npos) << l->body;
  // $top was understood: one table per page, and a continuation header for the rest.
  EXPECT_EQ(l->body.find("TableName", l->body.find("TableName") + 1), std::string::npos) << l->body;
  EXPECT_TRUE(l->header("x-ms-continuation-nexttablename")) << l->body;
}

TEST_F(PipelineIt, CreatesContainerAndBlobWithSharedKey) {
  const pipeline p = make();
  const std::string container = ascii_lower(tests::unique_name("pipe"));
  auto r = p.send(service::blob, create_container_request(container));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, 201);
  EXPECT_TRUE(r->header("etag"));

  // A body, a content type, a condition and metadata are all part of the signature.
  storage_request put;
  put.method = http_method::put;
  put.path = "/" + container + "/dir/a%20b.txt";
  put.headers = {{"Content-Type", "text/plain"},
                 {"If-None-Match", "*"},
                 {"x-ms-blob-type", "BlockBlob"},
                 {"x-ms-meta-owner", "me"}};
  put.body = "hello";
  auto pr = p.send(service::blob, put);
  ASSERT_TRUE(pr) << pr.error().describe();
  EXPECT_EQ(pr->status, 201);

  storage_request get;
  get.path = put.path;
  auto gr = p.send(service::blob, get);
  ASSERT_TRUE(gr) << gr.error().describe();
  EXPECT_EQ(gr->status, 200);
  EXPECT_EQ(gr->body, "hello");
  EXPECT_EQ(gr->header("x-ms-meta-owner").value_or(""), "me");

  storage_request head;
  head.method = http_method::head;
  head.path = put.path;
  auto hr = p.send(service::blob, head);
  ASSERT_TRUE(hr) << hr.error().describe();
  EXPECT_EQ(hr->status, 200);
  EXPECT_EQ(hr->header("content-length").value_or(""), "5");
  EXPECT_TRUE(hr->body.empty());

  // If-None-Match: * on an existing blob: 409 BlobAlreadyExists, not retried.
  auto dup = p.send(service::blob, put);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().http_status, 409);
  EXPECT_EQ(dup.error().service_code, "BlobAlreadyExists");
  EXPECT_EQ(dup.error().attempts, 1);

  // A missing blob: 404 with the XML <Message> of the service.
  storage_request missing;
  missing.path = "/" + container + "/nope";
  auto mr = p.send(service::blob, missing);
  ASSERT_FALSE(mr);
  EXPECT_EQ(mr.error().code, errc::not_found);
  EXPECT_EQ(mr.error().service_code, "BlobNotFound");

  // A list with several query parameters (signed decoded and sorted).
  storage_request list;
  list.path = "/" + container;
  list.query = {{"restype", "container"}, {"comp", "list"}, {"prefix", "dir/"}};
  auto lr = p.send(service::blob, list);
  ASSERT_TRUE(lr) << lr.error().describe();
  EXPECT_NE(lr->body.find("<Name>dir/a b.txt</Name>"), std::string::npos) << lr->body;

  storage_request del;
  del.method = http_method::del;
  del.path = "/" + container;
  del.query = {{"restype", "container"}};
  auto dr = p.send(service::blob, del);
  ASSERT_TRUE(dr) << dr.error().describe();
  EXPECT_EQ(dr->status, 202);
}

TEST_F(PipelineIt, CreatesQueueAndPutsMessageWithSharedKey) {
  const pipeline p = make();
  const std::string queue = ascii_lower(tests::unique_name("pipeq"));
  auto r = p.send(service::queue, create_queue_request(queue));
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_EQ(r->status, 201);

  storage_request put;
  put.method = http_method::post;
  put.path = "/" + queue + "/messages";
  put.headers = {{"Content-Type", "application/xml"}};
  put.body = "<QueueMessage><MessageText>aGVsbG8=</MessageText></QueueMessage>";
  auto pr = p.send(service::queue, put);
  ASSERT_TRUE(pr) << pr.error().describe();
  EXPECT_EQ(pr->status, 201);

  storage_request get;
  get.path = "/" + queue + "/messages";
  get.query = {{"numofmessages", "1"}, {"visibilitytimeout", "5"}};
  auto gr = p.send(service::queue, get);
  ASSERT_TRUE(gr) << gr.error().describe();
  EXPECT_NE(gr->body.find("aGVsbG8="), std::string::npos) << gr->body;
}

TEST_F(PipelineIt, WrongKeyIsAuthError403) {
  storage_account wrong = account;
  wrong.key = std::string(64, 'x');
  auto p = pipeline::make(wrong);
  ASSERT_TRUE(p) << p.error().describe();
  for (service svc : {service::table, service::blob, service::queue}) {
    auto r = svc == service::table  ? p->send(svc, create_table_request(tests::unique_name("Bad")))
             : svc == service::blob ? p->send(svc, create_container_request(ascii_lower(tests::unique_name("bad"))))
                                    : p->send(svc, create_queue_request(ascii_lower(tests::unique_name("bad"))));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::auth) << r.error().describe();
    EXPECT_EQ(r.error().http_status, 403);
    // Azurite: AuthorizationFailure (table), AuthenticationFailed (blob, queue).
    EXPECT_TRUE(r.error().service_code == "AuthorizationFailure" ||
                r.error().service_code == "AuthenticationFailed")
        << r.error().describe();
    EXPECT_FALSE(r.error().retryable);
    EXPECT_EQ(r.error().attempts, 1);
  }
}

TEST_F(PipelineIt, ManyThreadsShareOnePipeline) {
  const pipeline p = make();
  const std::string queue = ascii_lower(tests::unique_name("pipemt"));
  ASSERT_TRUE(p.send(service::queue, create_queue_request(queue)));
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        storage_request put;
        put.method = http_method::post;
        put.path = "/" + queue + "/messages";
        put.headers = {{"Content-Type", "application/xml"}};
        put.body = "<QueueMessage><MessageText>eA==</MessageText></QueueMessage>";
        good += p.send(service::queue, put).has_value();
      }
    });
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(good.load(), 100);
  storage_request meta;
  meta.path = "/" + queue;
  meta.query = {{"comp", "metadata"}};
  auto m = p.send(service::queue, meta);
  ASSERT_TRUE(m) << m.error().describe();
  EXPECT_EQ(m->header("x-ms-approximate-messages-count").value_or(""), "100");
}

TEST_F(PipelineIt, PooledConnectionSurvivesAzuriteKeepAliveTimeout) {
  // Azurite closes idle keep-alive connections after 5 s (reference §8). The pooled handle
  // must notice and reconnect by itself: with one attempt allowed, no retry can hide it.
  pipeline_options opts;
  opts.retry.max_attempts = 1;
  const pipeline p = make(opts);
  storage_request list;
  list.path = "/Tables";
  list.headers = {{"Accept", "application/json;odata=nometadata"}};
  const auto at = account.table_endpoint.find(':', account.table_endpoint.find("://") + 3);
  ASSERT_NE(at, std::string::npos) << account.table_endpoint;
  const int port = std::stoi(account.table_endpoint.substr(at + 1));
  const auto before = connections_to(port);
  auto first = p.send(service::table, list);
  ASSERT_TRUE(first) << first.error().describe();
  std::set<std::string> pooled; // the connection `first` left in the pool
  for (const auto& [inode, state] : connections_to(port))
    if (!before.contains(inode))
      pooled.insert(inode);
  ASSERT_FALSE(pooled.empty()) << "no new connection to port " << port;
  // Until Azurite has closed it (CLOSE_WAIT here), or the pool has noticed and closed it too.
  ASSERT_TRUE(tests::eventually(
      [&] {
        const auto now = connections_to(port);
        return std::any_of(pooled.begin(), pooled.end(), [&](const std::string& inode) {
          const auto it = now.find(inode);
          return it == now.end() || it->second == "08";
        });
      },
      std::chrono::seconds(30), std::chrono::milliseconds(100)))
      << "Azurite kept the idle connection open";
  auto second = p.send(service::table, list);
  ASSERT_TRUE(second) << second.error().describe();
  EXPECT_EQ(second->status, 200);
}

// -- account SAS ----------------------------------------------------------------------------------

// An account SAS (REST "Create an account SAS", version 2019-02-02 string to sign), made with
// the account key the way a deployment tool would hand one out.
std::string make_account_sas(const storage_account& a, std::string_view permissions) {
  const std::string version = "2019-02-02";
  const std::string services = "bqt";
  const std::string types = "sco";
  const std::string expiry = "2099-01-01T00:00:00Z";
  const std::string to_sign = a.name + "\n" + std::string(permissions) + "\n" + services + "\n" +
                              types + "\n" + "\n" + expiry + "\n" + "\n" + "http,https\n" +
                              version + "\n";
  const std::string sig = base64_encode(hmac_sha256(a.key, to_sign));
  return "sv=" + version + "&ss=" + services + "&srt=" + types + "&sp=" +
         std::string(permissions) + "&se=" + url_encode(expiry) + "&spr=" +
         url_encode("http,https") + "&sig=" + url_encode(sig);
}

TEST_F(PipelineIt, AccountSasAuthorizesWithoutSharedKey) {
  storage_account sas_only = account;
  sas_only.sas = make_account_sas(account, "rwdlacup");
  sas_only.key.clear();
  auto p = pipeline::make(sas_only);
  ASSERT_TRUE(p) << p.error().describe();
  const std::string container = ascii_lower(tests::unique_name("pipesas"));
  auto c = p->send(service::blob, create_container_request(container));
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->status, 201);
  auto t = p->send(service::table, create_table_request(tests::unique_name("PipeSas")));
  ASSERT_TRUE(t) << t.error().describe();

  // A read-only SAS cannot create: 403, not retried.
  storage_account read_only = sas_only;
  read_only.sas = make_account_sas(account, "rl");
  auto ro = pipeline::make(read_only);
  ASSERT_TRUE(ro) << ro.error().describe();
  auto denied = ro->send(service::blob, create_container_request(ascii_lower(tests::unique_name("pipesas"))));
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().code, errc::auth) << denied.error().describe();
  EXPECT_EQ(denied.error().attempts, 1);
}

// -- HTTPS (fixture azurite_tls, self-signed certificate for 127.0.0.1) ---------------------------

class PipelineTlsIt : public ::testing::Test {
protected:
  void SetUp() override {
    auto acct = parse_connection_string(tests::azurite_tls_connection_string());
    ASSERT_TRUE(acct) << acct.error().describe();
    account = *acct;
    ASSERT_TRUE(account.table_endpoint.starts_with("https://")) << account.describe();
  }
  storage_account account;
};

TEST_F(PipelineTlsIt, TrustsTheSelfSignedCertificateAsCaFile) {
  pipeline_options opts;
  opts.http.ca_file = tests::azurite_tls_ca_file();
  auto p = pipeline::make(account, opts);
  ASSERT_TRUE(p) << p.error().describe();
  auto t = p->send(service::table, create_table_request(tests::unique_name("PipeTls")));
  ASSERT_TRUE(t) << t.error().describe();
  EXPECT_EQ(t->status, 204);
  auto c = p->send(service::blob, create_container_request(ascii_lower(tests::unique_name("pipetls"))));
  ASSERT_TRUE(c) << c.error().describe();
  auto q = p->send(service::queue, create_queue_request(ascii_lower(tests::unique_name("pipetls"))));
  ASSERT_TRUE(q) << q.error().describe();
}

TEST_F(PipelineTlsIt, FailsVerificationWithoutTheCaFile) {
  auto p = pipeline::make(account); // verify_peer on, system CA bundle only
  ASSERT_TRUE(p) << p.error().describe();
  auto t = p->send(service::table, create_table_request(tests::unique_name("PipeTls")));
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, errc::transport) << t.error().describe();
  EXPECT_EQ(t.error().http_status, 0);
  EXPECT_FALSE(t.error().retryable); // a certificate problem does not heal by retrying
  EXPECT_EQ(t.error().attempts, 1);
}

TEST_F(PipelineTlsIt, VerificationCanBeTurnedOffForTests) {
  pipeline_options opts;
  opts.http.verify_peer = false;
  auto p = pipeline::make(account, opts);
  ASSERT_TRUE(p) << p.error().describe();
  auto t = p->send(service::table, create_table_request(tests::unique_name("PipeNoVerify")));
  ASSERT_TRUE(t) << t.error().describe();
}

} // namespace
} // namespace shoal::storage
