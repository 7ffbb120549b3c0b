// Client-side checks of container names, blob names, metadata and block ids (nothing is sent).

#include "storage/blob_client.hpp"
#include "storage/encoding.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace shoal::storage {
namespace {

TEST(BlobValidationTest, ContainerNames) {
  for (const char* ok : {"abc", "shoal", "a-b-c", "0abc", "$root", "$logs", "$web",
                         "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij123"})
    EXPECT_TRUE(validate_container_name(ok)) << ok;
  for (const char* bad : {"ab", "Abc", "a_b", "-abc", "abc-", "a--b", "a.b", "a b", "$other",
                          "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234"}) {
    auto r = validate_container_name(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
    EXPECT_NE(r.error().message.find("container name"), std::string::npos) << r.error().message;
  }
  EXPECT_NE(validate_container_name("ab").error().message.find("3-63"), std::string::npos);
}

TEST(BlobValidationTest, BlobNames) {
  for (std::string ok : std::vector<std::string>{"a", "dir/sub/file.json", "x y+z%", "\xC3\xA9t\xC3\xA9", "a..b", ".hidden",
                         std::string(1024, 'x')})
    EXPECT_TRUE(validate_blob_name(ok)) << ok;
  std::string deep;
  for (int i = 0; i < 255; ++i)
    deep += "d/";
  deep += "f"; // 256 segments
  for (std::string bad : std::vector<std::string>{std::string(), std::string(1025, 'x'), std::string("ends."),
                          std::string("dir/"), std::string("back\\"), std::string("a/./b"),
                          std::string("../up"), std::string("tab\tname"), std::string("bad\xC3"),
                          deep}) {
    auto r = validate_blob_name(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::invalid_argument);
  }
  EXPECT_NE(validate_blob_name(std::string(1025, 'x')).error().message.find("1024"),
            std::string::npos);
  // The limit counts characters, not bytes: 1024 two-byte characters are fine.
  std::string wide;
  for (int i = 0; i < 1024; ++i)
    wide += "\xC3\xA9";
  EXPECT_TRUE(validate_blob_name(wide));
}

TEST(BlobValidationTest, MetadataNamesValuesAndTotalSize) {
  EXPECT_TRUE(validate_metadata({}));
  EXPECT_TRUE(validate_metadata({{"count", "3"}, {"_first", "x y"}, {"Owner2", ""}}));
  for (metadata_map bad : std::vector<metadata_map>{metadata_map{{"2count", "x"}}, metadata_map{{"has-dash", "x"}},
                           metadata_map{{"", "x"}}, metadata_map{{"caf\xC3\xA9", "x"}},
                           metadata_map{{"a", "line\nbreak"}}, metadata_map{{"a", " padded"}},
                           metadata_map{{"a", "\xC3\xA9"}}, metadata_map{{"Name", "1"}, {"name", "2"}}}) {
    auto r = validate_metadata(bad);
    ASSERT_FALSE(r) << bad.begin()->first;
    EXPECT_EQ(r.error().code, errc::invalid_argument) << r.error().message;
  }
  auto big = validate_metadata({{"a", std::string(8190, 'v')}, {"b", "v"}}); // 8193 bytes
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code, errc::limit_exceeded);
  EXPECT_NE(big.error().message.find("8192"), std::string::npos);
  EXPECT_TRUE(validate_metadata({{"a", std::string(8189, 'v')}, {"b", "v"}})); // 8192 bytes
}

TEST(BlobValidationTest, BlockIdsHaveEqualLengthAndValidBase64) {
  auto id0 = make_block_id(0);
  auto id7 = make_block_id(49'999);
  ASSERT_TRUE(id0 && id7);
  EXPECT_EQ(id0->size(), id7->size());
  EXPECT_EQ(*base64_decode(*id0), "shoal-blk-00000000");
  EXPECT_TRUE(validate_block_ids({*id0, *id7}));
  EXPECT_FALSE(make_block_id(100'000'000));

  auto unequal = validate_block_ids({base64_encode("a"), base64_encode("bbbb")});
  ASSERT_FALSE(unequal);
  EXPECT_NE(unequal.error().message.find("same length"), std::string::npos);
  EXPECT_FALSE(validate_block_ids({}));
  EXPECT_FALSE(validate_block_ids({"not base64!"}));
  EXPECT_FALSE(validate_block_ids({base64_encode(std::string(65, 'x'))}));
  EXPECT_TRUE(validate_block_ids({base64_encode(std::string(64, 'x'))}));

  std::vector<std::string> too_many(max_blob_blocks + 1, *id0);
  auto many = validate_block_ids(too_many);
  ASSERT_FALSE(many);
  EXPECT_EQ(many.error().code, errc::limit_exceeded);
  EXPECT_NE(many.error().message.find("50000"), std::string::npos);
}

TEST(BlobValidationTest, BlobTypeNames) {
  EXPECT_EQ(to_string(blob_type::block), "BlockBlob");
  EXPECT_EQ(to_string(blob_type::append), "AppendBlob");
  EXPECT_EQ(to_string(blob_type::unknown), "Unknown");
}

} // namespace
} // namespace shoal::storage
