// XML bodies of the Blob service and service error bodies: build, parse, and survive bad input.

#include "storage/encoding.hpp"
#include "storage/xml_codec.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace shoal::storage {
namespace {

// A List Blobs answer shaped like Azure's (BOM, unquoted ETags, a BlobPrefix, metadata).
const std::string list_body =
    "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?>"
    "<EnumerationResults ServiceEndpoint=\"http://127.0.0.1:10000/devstoreaccount1\" "
    "ContainerName=\"c1\"><Prefix>logs/</Prefix><MaxResults>2</MaxResults><Delimiter>/</Delimiter>"
    "<Blobs>"
    "<Blob><Name>logs/a.json</Name><Properties>"
    "<Creation-Time>Sat, 21 Nov 2026 11:58:31 GMT</Creation-Time>"
    "<Last-Modified>Sat, 21 Nov 2026 11:58:31 GMT</Last-Modified>"
    "<Etag>0x8DC1234567890AB</Etag><Content-Length>42</Content-Length>"
    "<Content-Type>application/json</Content-Type><Content-MD5>1B2M2Y8AsgTpgAmY7PhCfg==</Content-MD5>"
    "<BlobType>BlockBlob</BlobType><LeaseStatus>unlocked</LeaseStatus></Properties>"
    "<Metadata><Count>3</Count><first_ts>2026</first_ts></Metadata></Blob>"
    "<BlobPrefix><Name>logs/2026/</Name></BlobPrefix>"
    "<Blob><Name Encoded=\"true\">logs/b%20c.log</Name><Properties>"
    "<Etag>\"0x8DC0000000000001\"</Etag><Content-Length>0</Content-Length>"
    "<BlobType>AppendBlob</BlobType></Properties></Blob>"
    "</Blobs><NextMarker>logs/b c.log</NextMarker></EnumerationResults>";

TEST(BlobXmlTest, ParsesBlobsPrefixesMetadataAndMarker) {
  auto page = xml::parse_blob_list(list_body);
  ASSERT_TRUE(page) << page.error().describe();
  ASSERT_EQ(page->blobs.size(), 2u);
  const blob_item& a = page->blobs[0];
  EXPECT_EQ(a.name, "logs/a.json");
  EXPECT_EQ(a.properties.etag, "\"0x8DC1234567890AB\""); // quoted, ready for If-Match
  EXPECT_EQ(a.properties.content_length, 42u);
  EXPECT_EQ(a.properties.content_type, "application/json");
  EXPECT_EQ(a.properties.content_md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
  EXPECT_EQ(a.properties.type, blob_type::block);
  ASSERT_TRUE(a.properties.last_modified.has_value());
  EXPECT_EQ(format_http_date(*a.properties.last_modified), "Sat, 21 Nov 2026 11:58:31 GMT");
  EXPECT_EQ(a.properties.metadata.at("count"), "3"); // names lower-cased
  EXPECT_EQ(a.properties.metadata.at("first_ts"), "2026");
  EXPECT_EQ(page->blobs[1].name, "logs/b c.log"); // Encoded="true" names are decoded
  EXPECT_EQ(page->blobs[1].properties.etag, "\"0x8DC0000000000001\"");
  EXPECT_EQ(page->blobs[1].properties.type, blob_type::append);
  ASSERT_EQ(page->prefixes, std::vector<std::string>{"logs/2026/"});
  EXPECT_EQ(page->next_marker, "logs/b c.log");
}

TEST(BlobXmlTest, EmptyListingHasNoMarker) {
  auto page = xml::parse_blob_list(
      "<?xml version=\"1.0\"?><EnumerationResults><Blobs/><NextMarker/></EnumerationResults>");
  ASSERT_TRUE(page) << page.error().describe();
  EXPECT_TRUE(page->blobs.empty());
  EXPECT_TRUE(page->prefixes.empty());
  EXPECT_TRUE(page->next_marker.empty());
}

TEST(BlobXmlTest, MalformedListingsAreBadResponses) {
  const std::vector<std::string> bad = {
      "",
      "not xml at all",
      "<EnumerationResults><Blobs><Blob><Name>x</Name>",            // truncated
      "<Error><Code>X</Code></Error>",                              // wrong root
      "<EnumerationResults><Blobs><Blob><Properties/></Blob></Blobs></EnumerationResults>",
      "<EnumerationResults><Blobs><Blob><Name>a</Name><Properties><Content-Length>12x"
      "</Content-Length></Properties></Blob></Blobs></EnumerationResults>",
      "<EnumerationResults><Blobs><Blob><Name>a</Name><Properties><Last-Modified>yesterday"
      "</Last-Modified></Properties></Blob></Blobs></EnumerationResults>",
      "<EnumerationResults><Blobs><BlobPrefix/></Blobs></EnumerationResults>",
      std::string("<EnumerationResults>\0</EnumerationResults>", 41),
  };
  for (const std::string& body : bad) {
    auto page = xml::parse_blob_list(body);
    ASSERT_FALSE(page) << "accepted: " << body;
    EXPECT_EQ(page.error().code, errc::bad_response) << body;
  }
}

TEST(BlobXmlTest, TruncationAtEveryOffsetNeverCrashes) {
  for (std::size_t n = 0; n < list_body.size(); ++n) {
    auto page = xml::parse_blob_list(std::string_view(list_body).substr(0, n));
    if (!page) {
      EXPECT_EQ(page.error().code, errc::bad_response);
    }
  }
}

TEST(BlobXmlTest, BuildsBlockList) {
  EXPECT_EQ(xml::build_block_list({"QUFB", "QkJC"}),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><Latest>QUFB</Latest>"
            "<Latest>QkJC</Latest></BlockList>");
}

TEST(BlobXmlTest, EscapesText) {
  EXPECT_EQ(xml::escape("a<b>&\"c'\r\n\t"), "a&lt;b&gt;&amp;&quot;c&apos;&#13;\n\t");
}

TEST(BlobXmlTest, ParsesErrorBodies) {
  auto e = xml::parse_error(
      "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>RequestBodyTooLarge</Code>"
      "<Message>The request body is too large.\nRequestId:abc\nTime:2026-11-21T11:58:31Z</Message>"
      "<MaxLimit>65536</MaxLimit></Error>");
  ASSERT_TRUE(e) << e.error().describe();
  EXPECT_EQ(e->code, "RequestBodyTooLarge");
  EXPECT_EQ(e->message, "The request body is too large.");
  EXPECT_EQ(e->detail, "MaxLimit=65536");
  for (const char* bad : {"", "<Error>", "<NotError/>", "{\"odata.error\":{}}"}) {
    auto r = xml::parse_error(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::bad_response);
  }
}

TEST(BlobXmlTest, CountsUtf8CodePointsAndRejectsInvalidUtf8) {
  EXPECT_EQ(xml::utf8_code_points("abc"), 3u);
  EXPECT_EQ(xml::utf8_code_points("\xC3\xA9t\xC3\xA9"), 3u);       // été
  EXPECT_EQ(xml::utf8_code_points("\xF0\x9F\x90\x9F"), 1u);         // a fish
  EXPECT_FALSE(xml::utf8_code_points("\xC3"));                      // truncated
  EXPECT_FALSE(xml::utf8_code_points("\xC0\xAF"));                  // overlong '/'
  EXPECT_FALSE(xml::utf8_code_points("\xED\xA0\x80"));              // surrogate
  EXPECT_TRUE(xml::is_xml_text("line\ttab\r\n"));
  EXPECT_FALSE(xml::is_xml_text(std::string_view("nul\0", 4)));
  EXPECT_FALSE(xml::is_xml_text("bell\x07"));
}

} // namespace
} // namespace shoal::storage
