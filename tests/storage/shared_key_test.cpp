// Shared Key strings to sign, checked against the strings Azurite 3.35.0 accepted
// (shared/reference/azure-storage-rest.md §2a/§2b) and signatures computed independently
// (Python hmac/hashlib over the same strings with the devstoreaccount1 key).

#include "storage/shared_key.hpp"

#include "storage/encoding.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace shoal::storage::shared_key {
namespace {

using kv = std::vector<std::pair<std::string, std::string>>;

constexpr const char* dev_key_b64 =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

std::string dev_key() { return *base64_decode(dev_key_b64); }

TEST(SharedKeyTest, CreateContainerStringToSignMatchesAzurite) {
  const kv query = {{"restype", "container"}};
  const kv headers = {{"x-ms-date", "Sat, 21 Nov 2026 11:58:31 GMT"},
                      {"x-ms-version", "2021-10-04"}};
  const signing_input in{.method = http_method::put,
                         .account = "devstoreaccount1",
                         .path = "/devstoreaccount1/cont1",
                         .query = query,
                         .headers = headers,
                         .content_length = 0};
  const std::string s = blob_queue_string_to_sign(in);
  EXPECT_EQ(s, "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Sat, 21 Nov 2026 11:58:31 GMT\n"
               "x-ms-version:2021-10-04\n/devstoreaccount1/devstoreaccount1/cont1\n"
               "restype:container");
  EXPECT_EQ(signature(dev_key(), s), "KAC4J0YpV1Y/Xxav3Rx47xWCUyGiWIUT0eOzBvrzZwk=");
  EXPECT_EQ(authorization("devstoreaccount1", "abc="), "SharedKey devstoreaccount1:abc=");
}

TEST(SharedKeyTest, PutBlobStringToSignMatchesAzurite) {
  // Header names in mixed case and unsorted: canonicalization lower-cases and sorts them.
  const kv headers = {{"Content-Type", "text/plain"},
                      {"If-None-Match", "*"},
                      {"x-ms-version", "2021-10-04"},
                      {"X-MS-Meta-Owner", " me "},
                      {"x-ms-date", "Sat, 21 Nov 2026 11:58:31 GMT"},
                      {"x-ms-blob-type", "BlockBlob"}};
  const signing_input in{.method = http_method::put,
                         .account = "devstoreaccount1",
                         .path = "/devstoreaccount1/cont1/dir/a.txt",
                         .query = {},
                         .headers = headers,
                         .content_length = 5};
  EXPECT_EQ(blob_queue_string_to_sign(in),
            "PUT\n\n\n5\n\ntext/plain\n\n\n\n*\n\n\nx-ms-blob-type:BlockBlob\n"
            "x-ms-date:Sat, 21 Nov 2026 11:58:31 GMT\nx-ms-meta-owner:me\n"
            "x-ms-version:2021-10-04\n/devstoreaccount1/devstoreaccount1/cont1/dir/a.txt");
}

TEST(SharedKeyTest, BlobStandardHeadersFillTheirSlots) {
  const kv headers = {{"Content-Encoding", "gzip"},   {"Content-Language", "en"},
                      {"Content-MD5", "md5=="},       {"Content-Type", "application/xml"},
                      {"If-Modified-Since", "ims"},   {"If-Match", "\"0x1\""},
                      {"If-Unmodified-Since", "ius"}, {"Range", "bytes=0-9"},
                      {"x-ms-date", "D"}};
  const signing_input in{.method = http_method::get,
                         .account = "acct",
                         .path = "/c/b",
                         .query = {},
                         .headers = headers,
                         .content_length = 12};
  EXPECT_EQ(blob_queue_string_to_sign(in),
            "GET\ngzip\nen\n12\nmd5==\napplication/xml\n\nims\n\"0x1\"\n\nius\nbytes=0-9\n"
            "x-ms-date:D\n/acct/c/b");
}

TEST(SharedKeyTest, CanonicalizedResourceSortsLowersAndJoinsQuery) {
  // Values are the DECODED ones; repeated names become sorted values joined by commas.
  const kv query = {{"restype", "container"}, {"comp", "list"}, {"Prefix", "dir/a b"},
                    {"include", "snapshots"}, {"include", "metadata"}};
  EXPECT_EQ(canonicalized_resource("acct", "/acct/c", query),
            "/acct/acct/c\ncomp:list\ninclude:metadata,snapshots\nprefix:dir/a b\n"
            "restype:container");
  EXPECT_EQ(canonicalized_resource("acct", "", {}), "/acct/");
}

TEST(SharedKeyTest, CanonicalizedHeadersKeepOnlyXmsSortedAndTrimmed) {
  const kv headers = {{"x-ms-version", "v"}, {"Accept", "a"}, {"X-Ms-Client-Request-Id", " id "},
                      {"x-ms-date", "d"}};
  EXPECT_EQ(canonicalized_headers(headers), "x-ms-client-request-id:id\nx-ms-date:d\nx-ms-version:v\n");
}

TEST(SharedKeyTest, TableSharedKeyStringToSignMatchesAzurite) {
  const kv headers = {{"Accept", "application/json;odata=nometadata"},
                      {"Content-Type", "application/json"},
                      {"x-ms-date", "Sat, 21 Nov 2026 11:57:51 GMT"},
                      {"x-ms-version", "2019-02-02"}};
  const signing_input in{.method = http_method::post,
                         .account = "devstoreaccount1",
                         .path = "/devstoreaccount1/Tables",
                         .query = {},
                         .headers = headers,
                         .content_length = 24};
  const std::string s = table_string_to_sign(in);
  EXPECT_EQ(s, "POST\n\napplication/json\nSat, 21 Nov 2026 11:57:51 GMT\n"
               "/devstoreaccount1/devstoreaccount1/Tables");
  EXPECT_EQ(signature(dev_key(), s), "XAyTNbHwQDIgFVD5Y8sWm9nujXMCiW8bzMChxJDPJRg=");
}

TEST(SharedKeyTest, TableSharedKeyLiteStringToSignMatchesAzurite) {
  const kv headers = {{"x-ms-date", "Sat, 21 Nov 2026 11:57:51 GMT"}};
  const signing_input in{.method = http_method::get,
                         .account = "devstoreaccount1",
                         .path = "/devstoreaccount1/Tables",
                         .query = {},
                         .headers = headers,
                         .content_length = 0};
  const std::string s = table_lite_string_to_sign(in);
  EXPECT_EQ(s, "Sat, 21 Nov 2026 11:57:51 GMT\n/devstoreaccount1/devstoreaccount1/Tables");
  EXPECT_EQ(signature(dev_key(), s), "iHNWtK1ibcaS58Qet4wXqGZO+Lc+LnhU+yfjMf7akgM=");
  EXPECT_EQ(authorization("devstoreaccount1", "x", /*lite=*/true),
            "SharedKeyLite devstoreaccount1:x");
}

TEST(SharedKeyTest, TableResourceKeepsOnlyComp) {
  const kv query = {{"$filter", "PartitionKey eq 'a'"}, {"$top", "5"}, {"comp", "acl"},
                    {"NextPartitionKey", "x"}, {"timeout", "30"}};
  EXPECT_EQ(table_canonicalized_resource("a", "/a/t", query), "/a/a/t?comp=acl");
  const kv no_comp = {{"$filter", "x"}};
  EXPECT_EQ(table_canonicalized_resource("a", "/a/t()", no_comp), "/a/a/t()");
}

TEST(SharedKeyTest, TableDateSlotPrefersDateHeader) {
  const kv headers = {{"Date", "real"}, {"x-ms-date", "ms"}};
  const signing_input in{.method = http_method::get,
                         .account = "a",
                         .path = "/t",
                         .query = {},
                         .headers = headers,
                         .content_length = 0};
  EXPECT_EQ(table_lite_string_to_sign(in), "real\n/a/t");
}

TEST(SharedKeyTest, FindHeaderIsCaseInsensitive) {
  const kv headers = {{"Content-Type", "x"}};
  EXPECT_EQ(find_header(headers, "content-type"), "x");
  EXPECT_EQ(find_header(headers, "CONTENT-TYPE"), "x");
  EXPECT_EQ(find_header(headers, "content-md5"), "");
}

} // namespace
} // namespace shoal::storage::shared_key
