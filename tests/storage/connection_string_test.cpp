#include "storage/connection_string.hpp"

#include "storage/encoding.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace shoal::storage {
namespace {

// A syntactically valid, made-up key: its text (and every long piece of it) must never show up
// in an error message or describe().
constexpr const char* secret_b64 =
    "c2VjcmV0S2V5VmFsdWVUaGF0TXVzdE5ldmVyTGVha0ludG9Mb2dzT3JFcnJvcnMxMjM0NTY3ODkw";

void expect_no_secret(std::string_view text) {
  const std::string secret = secret_b64;
  for (std::size_t i = 0; i + 8 <= secret.size(); i += 4)
    EXPECT_EQ(text.find(secret.substr(i, 8)), std::string_view::npos)
        << "leaked part of the key: " << text;
  const std::string decoded = *base64_decode(secret_b64);
  EXPECT_EQ(text.find(decoded.substr(0, 8)), std::string_view::npos) << text;
}

TEST(ConnectionStringTest, ParsesAccountKeyAndBuildsEndpoints) {
  auto a = parse_connection_string(std::string("DefaultEndpointsProtocol=https;AccountName=acct1;"
                                               "AccountKey=") +
                                   secret_b64 + ";EndpointSuffix=core.chinacloudapi.cn;");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->name, "acct1");
  EXPECT_EQ(a->key, *base64_decode(secret_b64)); // decoded bytes, ready for HMAC
  EXPECT_TRUE(a->sas.empty());
  EXPECT_FALSE(a->development);
  EXPECT_EQ(a->blob_endpoint, "https://acct1.blob.core.chinacloudapi.cn");
  EXPECT_EQ(a->queue_endpoint, "https://acct1.queue.core.chinacloudapi.cn");
  EXPECT_EQ(a->table_endpoint, "https://acct1.table.core.chinacloudapi.cn");
  EXPECT_EQ(a->file_endpoint, "https://acct1.file.core.chinacloudapi.cn");
  EXPECT_EQ(a->blob_secondary_endpoint, "https://acct1-secondary.blob.core.chinacloudapi.cn");
  EXPECT_EQ(a->table_secondary_endpoint, "https://acct1-secondary.table.core.chinacloudapi.cn");
}

TEST(ConnectionStringTest, DefaultsToHttpsAndCoreWindowsNet) {
  auto a = parse_connection_string(std::string("AccountName=acct2;AccountKey=") + secret_b64);
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->blob_endpoint, "https://acct2.blob.core.windows.net");
  EXPECT_EQ(a->table_endpoint, "https://acct2.table.core.windows.net");
  auto h = parse_connection_string(std::string("DefaultEndpointsProtocol=http;AccountName=acct2;"
                                               "AccountKey=") + secret_b64);
  ASSERT_TRUE(h) << h.error().describe();
  EXPECT_EQ(h->queue_endpoint, "http://acct2.queue.core.windows.net");
}

TEST(ConnectionStringTest, ExplicitEndpointsOverrideAndLoseTrailingSlash) {
  auto a = parse_connection_string(
      std::string("AccountName=devstoreaccount1;AccountKey=") + secret_b64 +
      ";BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/"
      ";QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1"
      ";TableEndpoint=https://127.0.0.1:10002/devstoreaccount1"
      ";FileEndpoint=http://127.0.0.1:10003/devstoreaccount1"
      ";BlobSecondaryEndpoint=http://127.0.0.1:10000/devstoreaccount1-secondary"
      ";QueueSecondaryEndpoint=http://127.0.0.1:10001/devstoreaccount1-secondary"
      ";TableSecondaryEndpoint=http://127.0.0.1:10002/devstoreaccount1-secondary"
      ";FileSecondaryEndpoint=http://127.0.0.1:10003/devstoreaccount1-secondary");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->blob_endpoint, "http://127.0.0.1:10000/devstoreaccount1");
  EXPECT_EQ(a->queue_endpoint, "http://127.0.0.1:10001/devstoreaccount1");
  EXPECT_EQ(a->table_endpoint, "https://127.0.0.1:10002/devstoreaccount1");
  EXPECT_EQ(a->file_endpoint, "http://127.0.0.1:10003/devstoreaccount1");
  EXPECT_EQ(a->blob_secondary_endpoint, "http://127.0.0.1:10000/devstoreaccount1-secondary");
  EXPECT_EQ(a->queue_secondary_endpoint, "http://127.0.0.1:10001/devstoreaccount1-secondary");
  EXPECT_EQ(a->table_secondary_endpoint, "http://127.0.0.1:10002/devstoreaccount1-secondary");
  EXPECT_EQ(a->file_secondary_endpoint, "http://127.0.0.1:10003/devstoreaccount1-secondary");
}

TEST(ConnectionStringTest, DevelopmentStorageExpandsToTheEmulatorAccount) {
  auto a = parse_connection_string("UseDevelopmentStorage=true");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_TRUE(a->development);
  EXPECT_EQ(a->name, "devstoreaccount1");
  EXPECT_EQ(a->key, *base64_decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
                                   "K1SZFPTOtr/KBHBeksoGMGw=="));
  EXPECT_EQ(a->blob_endpoint, "http://127.0.0.1:10000/devstoreaccount1");
  EXPECT_EQ(a->queue_endpoint, "http://127.0.0.1:10001/devstoreaccount1");
  EXPECT_EQ(a->table_endpoint, "http://127.0.0.1:10002/devstoreaccount1");
  EXPECT_TRUE(a->sas.empty());
  EXPECT_TRUE(parse_connection_string("UseDevelopmentStorage=true;"));
}

TEST(ConnectionStringTest, DevelopmentStorageProxyReplacesHost) {
  auto a = parse_connection_string(
      "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://myproxy:8080/ignored");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->blob_endpoint, "http://myproxy:10000/devstoreaccount1");
  EXPECT_EQ(a->queue_endpoint, "http://myproxy:10001/devstoreaccount1");
  EXPECT_EQ(a->table_endpoint, "http://myproxy:10002/devstoreaccount1");
  auto v6 = parse_connection_string(
      "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://[::1]");
  ASSERT_TRUE(v6) << v6.error().describe();
  EXPECT_EQ(v6->table_endpoint, "http://[::1]:10002/devstoreaccount1");
}

TEST(ConnectionStringTest, SharedAccessSignatureKeepsEveryEqualsAndAmpersand) {
  auto a = parse_connection_string(
      "BlobEndpoint=https://acct.blob.core.windows.net;"
      "SharedAccessSignature=?sv=2022-11-02&ss=bt&srt=sco&sp=rwdl&se=2030-01-01T00:00:00Z"
      "&sig=abc%2Bdef%3D");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->sas,
            "sv=2022-11-02&ss=bt&srt=sco&sp=rwdl&se=2030-01-01T00:00:00Z&sig=abc%2Bdef%3D");
  EXPECT_TRUE(a->key.empty());
  EXPECT_EQ(a->blob_endpoint, "https://acct.blob.core.windows.net");
  EXPECT_TRUE(a->table_endpoint.empty());
  const std::string d = a->describe();
  EXPECT_NE(d.find("(SAS)"), std::string::npos) << d;
  EXPECT_EQ(d.find("sig="), std::string::npos) << d; // the signature is a secret too
}

TEST(ConnectionStringTest, DescribeNamesAccountButNeverTheKey) {
  auto a = parse_connection_string(std::string("AccountName=acct3;AccountKey=") + secret_b64);
  ASSERT_TRUE(a) << a.error().describe();
  const std::string d = a->describe();
  EXPECT_NE(d.find("acct3"), std::string::npos);
  EXPECT_NE(d.find("SharedKey"), std::string::npos);
  expect_no_secret(d);
}

TEST(ConnectionStringTest, RejectsUnknownKeyByName) {
  auto a = parse_connection_string(std::string("AccountName=a;AcountKey=") + secret_b64);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, errc::invalid_argument);
  EXPECT_NE(a.error().message.find("'AcountKey'"), std::string::npos) << a.error().message;
  expect_no_secret(a.error().message);
}

TEST(ConnectionStringTest, RejectsMalformedInputNamingTheKey) {
  const std::pair<std::string, std::string> cases[] = {
      {"DefaultEndpointsProtocol=ftp;AccountName=a", "DefaultEndpointsProtocol"},
      {"AccountName=a;AccountName=b", "AccountName"},
      {"AccountName=", "AccountName"},
      {"BlobEndpoint=127.0.0.1:10000", "BlobEndpoint"},
      {"AccountName=a;QueueEndpoint=ftp://x", "QueueEndpoint"},
      {"AccountName=a;TableSecondaryEndpoint=nope", "TableSecondaryEndpoint"},
      {"UseDevelopmentStorage=false", "UseDevelopmentStorage"},
      {"UseDevelopmentStorage=true;AccountName=x", "AccountName"},
      {"UseDevelopmentStorage=true;DevelopmentStorageProxyUri=myproxy", "DevelopmentStorageProxyUri"},
      {"AccountName=a;DevelopmentStorageProxyUri=http://p", "DevelopmentStorageProxyUri"},
      {"AccountName=a;SharedAccessSignature=?", "SharedAccessSignature"},
      {"AccountKey=Zm9v", "AccountKey"},
  };
  for (const auto& [text, key] : cases) {
    auto a = parse_connection_string(text);
    ASSERT_FALSE(a) << text;
    EXPECT_EQ(a.error().code, errc::invalid_argument);
    EXPECT_NE(a.error().message.find(key), std::string::npos)
        << text << " -> " << a.error().message;
  }
  EXPECT_FALSE(parse_connection_string(""));
  EXPECT_FALSE(parse_connection_string("EndpointSuffix=core.windows.net")); // no endpoint at all
  auto seg = parse_connection_string("AccountName=a;justtext");
  ASSERT_FALSE(seg);
  EXPECT_NE(seg.error().message.find("segment 2"), std::string::npos) << seg.error().message;
}

TEST(ConnectionStringTest, NeverLeaksTheKeyInErrors) {
  const std::string key = secret_b64;
  const std::string bad_b64 = key.substr(0, key.size() - 3) + "!!!"; // invalid character
  const std::string cases[] = {
      "AccountName=a;AccountKey=" + bad_b64,
      "AccountName=a;AccountKey=" + key.substr(0, key.size() - 1), // bad length
      "AccountName=a;" + key + "==",      // key pasted without its name: splits on '='
      "AccountName=a;" + key,             // no '=' at all
      "AccountName=a;AccountKey=" + key + ";AccountKey=" + key, // duplicate
      "AccountKey=" + key,                                      // no AccountName
      "AccountName=a;AccountKey=" + key + ";DefaultEndpointsProtocol=" + key,
      "AccountName=a;AccountKey=" + key + ";BlobEndpoint=" + key,
      "UseDevelopmentStorage=true;AccountKey=" + key,
  };
  for (const std::string& text : cases) {
    auto a = parse_connection_string(text);
    ASSERT_FALSE(a) << "should fail: case " << (&text - cases);
    expect_no_secret(a.error().message);
    expect_no_secret(a.error().describe());
  }
}

TEST(ConnectionStringTest, ToleratesSpacesAndEmptySegments) {
  auto a = parse_connection_string(" AccountName = acct4 ;; AccountKey=" + std::string(secret_b64) +
                                   " ; ");
  ASSERT_TRUE(a) << a.error().describe();
  EXPECT_EQ(a->name, "acct4");
}

TEST(ConnectionStringTest, ReadsTheEnvironmentVariable) {
  const char* saved = std::getenv("AZURE_STORAGE_CONNECTION_STRING");
  const std::string restore = saved ? saved : "";

  ::unsetenv("AZURE_STORAGE_CONNECTION_STRING");
  auto none = account_from_environment();
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message.find("AZURE_STORAGE_CONNECTION_STRING"), std::string::npos);

  ::setenv("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true", 1);
  auto dev = account_from_environment();
  ASSERT_TRUE(dev) << dev.error().describe();
  EXPECT_EQ(dev->table_endpoint, "http://127.0.0.1:10002/devstoreaccount1");

  ::setenv("AZURE_STORAGE_CONNECTION_STRING", ("AccountName=a;AccountKey=" + std::string(secret_b64) + "%").c_str(), 1);
  auto bad = account_from_environment();
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("AZURE_STORAGE_CONNECTION_STRING"), std::string::npos);
  EXPECT_NE(bad.error().message.find("AccountKey"), std::string::npos);
  expect_no_secret(bad.error().message);

  if (saved)
    ::setenv("AZURE_STORAGE_CONNECTION_STRING", restore.c_str(), 1);
  else
    ::unsetenv("AZURE_STORAGE_CONNECTION_STRING");
}

} // namespace
} // namespace shoal::storage
