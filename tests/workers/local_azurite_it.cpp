// workers/local_azurite.hpp with its data in memory (azurite_options::in_memory, what
// `shoal run --emulator-data memory|auto` starts): it serves blobs like the disk mode, writes
// nothing under its workspace but its log, and keeps nothing once stopped.

#include "storage/blob_client.hpp"
#include "storage/connection_string.hpp"
#include "storage/pipeline.hpp"
#include "tests/support/azurite.hpp"
#include "workers/local_azurite.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <unistd.h>

namespace shoal::workers {
namespace {

namespace fs = std::filesystem;

struct scratch_dir {
  fs::path path = fs::temp_directory_path() / ("shoal-azurite-mem-" + std::to_string(::getpid()));
  scratch_dir() { fs::remove_all(path); }
  ~scratch_dir() { fs::remove_all(path); }
};

result<storage::blob_client> blobs_of(const azurite_process& p) {
  auto account = storage::parse_connection_string(p.connection_string());
  if (!account)
    return fail(errc::invalid_argument, account.error().describe());
  auto pipe = storage::pipeline::make(*account);
  if (!pipe)
    return fail(errc::io, pipe.error().describe());
  return storage::blob_client(*pipe);
}

TEST(LocalAzuriteIt, InMemoryServesBlobsWritesNoDataFilesAndKeepsNothingAfterAStop) {
  scratch_dir ws;
  azurite_options o;
  o.executable = fs::path(tests::source_dir()) / "deploy/local/node_modules/.bin/azurite";
  o.workspace = ws.path;
  o.in_memory = true;
  {
    auto p = azurite_process::start(o);
    ASSERT_TRUE(p) << p.error().describe();
    auto b = blobs_of(*p);
    ASSERT_TRUE(b) << b.error().describe();
    ASSERT_TRUE(b->create_container("mem"));
    auto put = b->put_blob("mem", "2025/01/01/a.json", std::string("{\"id\":1}\n"));
    ASSERT_TRUE(put) << put.error().describe();
    auto got = b->get_blob("mem", "2025/01/01/a.json");
    ASSERT_TRUE(got) << got.error().describe();
    EXPECT_EQ(got->body, "{\"id\":1}\n");
    p->stop();
  }
  // Its workspace holds the log only: no __blobstorage__ extents, no LokiJS database files.
  std::vector<std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(ws.path))
    if (e.is_regular_file())
      files.push_back(e.path().filename().string());
  EXPECT_EQ(files, std::vector<std::string>{"azurite.log"});
  // Started again on the same workspace: the blob is gone with the process that held it.
  auto again = azurite_process::start(o);
  ASSERT_TRUE(again) << again.error().describe();
  auto b = blobs_of(*again);
  ASSERT_TRUE(b) << b.error().describe();
  auto gone = b->get_blob("mem", "2025/01/01/a.json");
  ASSERT_FALSE(gone);
}

} // namespace
} // namespace shoal::workers
