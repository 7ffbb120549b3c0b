// Unit tests of the catalog: key layout, schema checks and validation, against a scripted
// transport (no Azurite). The behaviour against the real service is in catalog_it.cpp.

#include "storage/catalog.hpp"
#include "storage/catalog_blobs.hpp"

#include "tests/support/fake_transport.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace shoal::storage {
namespace {

catalog_schema blob_schema() { return catalog_schema{{"dest", "date", "host"}, "blob"}; }

// A table service over a scripted transport.
struct fake_service {
  std::shared_ptr<tests::fake_transport> transport = std::make_shared<tests::fake_transport>();
  table_service_client svc = make(transport);

  static table_service_client make(std::shared_ptr<tests::fake_transport> t) {
    auto acct = parse_connection_string("UseDevelopmentStorage=true");
    EXPECT_TRUE(acct) << acct.error().describe();
    pipeline_options opts;
    opts.retry.max_attempts = 1;
    auto p = pipeline::make(*acct, opts, t);
    EXPECT_TRUE(p) << p.error().describe();
    return table_service_client(*p);
  }

  // Scripts the GET of the schema row.
  void schema_row(std::string_view index_keys, std::string_view row_key, int layout = 1) {
    std::string body = R"({"odata.etag":"W/\"datetime'2026-11-21T11%3A57%3A51.1914632Z'\"",)"
                       R"("PartitionKey":"meta","RowKey":"schema","index_keys":")" +
                       std::string(index_keys) + R"(","row_key":")" + std::string(row_key) +
                       R"(","layout":)" + std::to_string(layout) + "}";
    transport->respond(200,
                       {{"content-type", "application/json;odata=minimalmetadata"},
                        {"etag", "W/\"datetime'2026-11-21T11%3A57%3A51.1914632Z'\""}},
                       body);
  }
};

catalog_options no_recovery() {
  catalog_options o;
  o.recover_on_open = false;
  return o;
}

// -- keys -----------------------------------------------------------------------------------------

TEST(CatalogKeysTest, PartitionKeyIsLengthFieldValue) {
  EXPECT_EQ(catalog::partition_key("dest", "flights"), "4_destflights");
  EXPECT_EQ(catalog::partition_key("date", "2001-01-05"), "4_date2001-01-05");
  // The length prefix keeps ("ab", "c") and ("a", "bc") apart.
  EXPECT_NE(catalog::partition_key("ab", "c"), catalog::partition_key("a", "bc"));
}

TEST(CatalogKeysTest, EscapesCharactersKeysCannotHold) {
  EXPECT_EQ(catalog::escape_key("flights/2001/01/05/x.json"), "flights%2F2001%2F01%2F05%2Fx.json");
  EXPECT_EQ(catalog::escape_key("a%b#c?d\\e"), "a%25b%23c%3Fd%5Ce");
  EXPECT_EQ(catalog::escape_key(std::string("t\x01\x7f", 3)), "t%01%7F");
  EXPECT_EQ(catalog::escape_key("\xC2\x85"), "%C2%85"); // U+0085 (NEL)
  EXPECT_EQ(catalog::escape_key("caf\xC3\xA9 ok"), "caf\xC3\xA9 ok");
  EXPECT_TRUE(validate_key(catalog::escape_key("a/b\\c#d?e\n"), "RowKey"));
}

TEST(CatalogKeysTest, FingerprintIsStableAndCoversIndexValuesOnly) {
  auto s = blob_schema();
  catalog_fields a{{"blob", "b1"}, {"dest", "flights"}, {"date", "2001-01-05"}, {"host", "h1"}, {"format", "x"}};
  catalog_fields b = a;
  b["format"] = "y"; // not an index key
  b["blob"] = "other";
  EXPECT_EQ(catalog::fingerprint(s, a), catalog::fingerprint(s, b));
  EXPECT_EQ(catalog::fingerprint(s, a).size(), 16u);
  // Pinned value: the fingerprint is part of the stored layout and must never change.
  EXPECT_EQ(catalog::fingerprint(s, a), "96535a7b4a21f253");
  catalog_fields c = a;
  c["host"] = "h2";
  EXPECT_NE(catalog::fingerprint(s, a), catalog::fingerprint(s, c));
  // Length-prefixed: moving a character between values changes it.
  catalog_fields d = a, e = a;
  d["dest"] = "ab";
  d["date"] = "c";
  e["dest"] = "a";
  e["date"] = "bc";
  EXPECT_NE(catalog::fingerprint(s, d), catalog::fingerprint(s, e));
  EXPECT_EQ(catalog::row_key(s, a), "b1:" + catalog::fingerprint(s, a));
}

TEST(CatalogKeysTest, FingerprintIsFnv1a64OfLengthPrefixedValues) {
  // FNV-1a 64 of "1:a;" computed by hand.
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char ch : std::string("1:a;")) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  char want[24];
  std::snprintf(want, sizeof want, "%016llx", static_cast<unsigned long long>(h));
  EXPECT_EQ(catalog::fingerprint(catalog_schema{{"k"}, "id"}, {{"k", "a"}}), want);
}

// -- schema ---------------------------------------------------------------------------------------

TEST(CatalogSchemaTest, ValidatesNames) {
  EXPECT_TRUE(blob_schema().validate());
  EXPECT_FALSE((catalog_schema{{}, "blob"}.validate()));
  EXPECT_FALSE((catalog_schema{{"dest", "dest"}, "blob"}.validate()));
  EXPECT_FALSE((catalog_schema{{"dest"}, "dest"}.validate()));
  EXPECT_FALSE((catalog_schema{{"_seq"}, "blob"}.validate()));
  EXPECT_FALSE((catalog_schema{{"has-dash"}, "blob"}.validate()));
  EXPECT_FALSE((catalog_schema{{"dest"}, ""}.validate()));
  EXPECT_EQ(blob_schema().describe(), "index keys [dest, date, host], row key 'blob'");
}

TEST(CatalogSchemaTest, OpenRefusesADifferentSchemaWithAClearError) {
  fake_service f;
  f.schema_row("dest,date,host", "blob");
  auto c = catalog::open(f.svc, "shoalcatalog", catalog_schema{{"dest", "date"}, "blob"}, no_recovery());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::conflict);
  EXPECT_EQ(c.error().service_code, catalog_schema_mismatch);
  EXPECT_NE(c.error().message.find("index keys [dest, date, host]"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("index keys [dest, date]"), std::string::npos) << c.error().message;
}

TEST(CatalogSchemaTest, OpenRefusesAnotherKeyOrderOrRowKey) {
  {
    fake_service f;
    f.schema_row("dest,date,host", "blob");
    auto c = catalog::open(f.svc, "shoalcatalog", catalog_schema{{"date", "dest", "host"}, "blob"}, no_recovery());
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().service_code, catalog_schema_mismatch);
  }
  {
    fake_service f;
    f.schema_row("dest,date,host", "blob");
    auto c = catalog::open(f.svc, "shoalcatalog", catalog_schema{{"dest", "date", "host"}, "name"}, no_recovery());
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().service_code, catalog_schema_mismatch);
  }
  {
    fake_service f;
    f.schema_row("dest,date,host", "blob", 2);
    auto c = catalog::open(f.svc, "shoalcatalog", blob_schema(), no_recovery());
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().service_code, catalog_schema_mismatch);
  }
}

TEST(CatalogSchemaTest, OpenAdoptsTheStoredSchemaWhenNoneIsExpected) {
  fake_service f;
  f.schema_row("dest,date,host", "blob");
  auto c = catalog::open(f.svc, "shoalcatalog", std::nullopt, no_recovery());
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_EQ(c->schema(), blob_schema());
  EXPECT_EQ(f.transport->request_count(), 1u);
}

TEST(CatalogSchemaTest, OpenOfAMissingCatalogIsNotFound) {
  fake_service f;
  f.transport->respond(404, {{"x-ms-error-code", "TableNotFound"}},
                       R"({"odata.error":{"code":"TableNotFound","message":{"value":"no"}}})");
  auto c = catalog::open(f.svc, "shoalcatalog", blob_schema(), no_recovery());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::not_found);
  EXPECT_NE(c.error().message.find("does not exist"), std::string::npos);
}

TEST(CatalogSchemaTest, RejectsBadCatalogNamesWithoutARequest) {
  fake_service f;
  for (const char* n : {"ab", "1abc", "with-dash", "x234567890123456789012345678901234567890123456789012345678901"}) {
    auto c = catalog::open(f.svc, n, blob_schema(), no_recovery());
    ASSERT_FALSE(c) << n;
    EXPECT_EQ(c.error().code, errc::invalid_argument);
  }
  EXPECT_EQ(f.transport->request_count(), 0u);
  EXPECT_EQ(catalog::wal_table_name("shoalcatalog"), "shoalcatalogwal");
}

// -- write validation -----------------------------------------------------------------------------

TEST(CatalogWriteTest, InvalidRecordsAreRejectedBeforeAnythingIsWritten) {
  fake_service f;
  f.schema_row("dest,date,host", "blob");
  auto c = catalog::open(f.svc, "shoalcatalog", blob_schema(), no_recovery());
  ASSERT_TRUE(c) << c.error().describe();
  const auto before = f.transport->request_count();
  catalog_fields ok{{"blob", "b"}, {"dest", "d"}, {"date", "2001-01-05"}, {"host", "h"}};
  auto missing_index = ok;
  missing_index.erase("host");
  auto missing_row = ok;
  missing_row.erase("blob");
  auto reserved = ok;
  reserved["_seq"] = "1";
  auto bad_name = ok;
  bad_name["not-a-name"] = "x";
  auto too_long = ok;
  too_long["dest"] = std::string(600, 'x'); // PartitionKey over 512 characters
  for (const auto* r : {&missing_index, &missing_row, &reserved, &bad_name, &too_long}) {
    auto w = c->insert(*r);
    ASSERT_FALSE(w);
    EXPECT_TRUE(w.error().code == errc::invalid_argument || w.error().code == errc::limit_exceeded)
        << w.error().describe();
  }
  EXPECT_EQ(f.transport->request_count(), before);
}

TEST(CatalogWriteTest, QueryNeedsAnIndexKeyCondition) {
  fake_service f;
  f.schema_row("dest,date,host", "blob");
  auto c = catalog::open(f.svc, "shoalcatalog", blob_schema(), no_recovery());
  ASSERT_TRUE(c) << c.error().describe();
  EXPECT_FALSE(c->query({}));
  catalog_query q;
  q.where = {{"format", "ndjson"}};
  auto r = c->query(q);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_NE(r.error().message.find("not an index key"), std::string::npos);
  q.where = {{"dest", "x"}};
  EXPECT_FALSE(c->query_page(q, std::string("garbage")));
}

TEST(CatalogWriteTest, IntersectionIsOnePartitionScanWithServiceSideConditions) {
  fake_service f;
  f.schema_row("dest,date,host", "blob");
  auto c = catalog::open(f.svc, "shoalcatalog", blob_schema(), no_recovery());
  ASSERT_TRUE(c) << c.error().describe();
  f.transport->respond(200, {{"content-type", "application/json"}}, R"({"value":[]})");
  catalog_query q;
  q.where = {{"dest", "flights"}, {"date", "2001-01-05"}};
  q.row_key_prefix = "flights/";
  auto r = c->query(q);
  ASSERT_TRUE(r) << r.error().describe();
  EXPECT_TRUE(r->empty());
  auto reqs = f.transport->requests();
  ASSERT_EQ(reqs.size(), 2u); // the schema read and ONE query
  const std::string& url = reqs.back().url;
  EXPECT_NE(url.find("4_destflights"), std::string::npos) << url;
  EXPECT_NE(url.find("2001-01-05"), std::string::npos) << url;
  EXPECT_NE(url.find("flights%252F"), std::string::npos) << url; // escaped '/' then URL-encoded
  EXPECT_NE(url.find("_del"), std::string::npos) << url;
}

// -- blob catalog ---------------------------------------------------------------------------------

TEST(BlobCatalogTest, EntryRoundTripsThroughFields) {
  blob_catalog_entry e{"flights/2001/01/05/00/h1-p1-00000001.json", "flights", "2001-01-05", "h1", "ndjson", 1234,
                       "shoal", 0};
  auto f = blob_catalog::to_fields(e);
  EXPECT_EQ(f.at("record_count"), "1234");
  auto back = blob_catalog::from_fields(f);
  ASSERT_TRUE(back) << back.error().describe();
  EXPECT_EQ(*back, e);
  EXPECT_TRUE(blob_catalog::validate(e));
  e.date = "2001-13-05";
  EXPECT_FALSE(blob_catalog::validate(e));
  e.date = "20010105";
  EXPECT_FALSE(blob_catalog::validate(e));
}

TEST(BlobCatalogTest, QueryMapsToIndexConditions) {
  auto q = blob_catalog::to_query({.dest = "flights", .date = "2001-01-05", .blob_prefix = "flights/2001"});
  ASSERT_TRUE(q) << q.error().describe();
  ASSERT_EQ(q->where.size(), 2u);
  EXPECT_EQ(q->where[0], (std::pair<std::string, std::string>{"dest", "flights"}));
  EXPECT_EQ(q->where[1], (std::pair<std::string, std::string>{"date", "2001-01-05"}));
  EXPECT_EQ(q->row_key_prefix, "flights/2001");
  EXPECT_FALSE(blob_catalog::to_query({}));
  EXPECT_EQ(blob_catalog::schema(), blob_schema());
}

} // namespace
} // namespace shoal::storage
