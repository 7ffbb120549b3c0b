#pragma once
// Reading back what a test's persistor wrote: every data blob of a container, whole.

#include "storage/blob_client.hpp"

#include <gtest/gtest.h>

#include <string>

namespace shoal::tests {

/// Calls `fn(name, blob)` (a storage::blob_download: body and properties) for each blob of
/// `container` outside "_shoal/" (shoal's own bookkeeping), in list order. A failed listing or
/// read is a test failure (that blob is skipped). Owner only.
template <class F> void for_each_data_blob(const storage::blob_client& bc, const std::string& container, F&& fn) {
  auto pager = bc.list_blobs_pager(container);
  while (true) {
    auto page = pager.next();
    EXPECT_TRUE(page) << page.error().describe();
    if (!page || !*page)
      break;
    for (const auto& item : (*page)->blobs) {
      if (item.name.starts_with("_shoal/"))
        continue;
      auto got = bc.get_blob(container, item.name);
      EXPECT_TRUE(got) << item.name << ": " << got.error().describe();
      if (got)
        fn(item.name, *got);
    }
  }
}

} // namespace shoal::tests
