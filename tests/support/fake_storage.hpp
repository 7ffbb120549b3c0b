#pragma once
// Storage clients over a fake_transport, for unit tests of what the clients send and how they
// read answers: the fixture the blob and queue client tests share, and a header lookup.

#include "storage/blob_client.hpp"
#include "storage/http.hpp"
#include "storage/queue_client.hpp"
#include "tests/support/fake_transport.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace shoal::tests {

/// The value of header `name` in `r` (names compared case-insensitively), or nullopt.
std::optional<std::string> header_of(const storage::http_request& r, std::string_view name);

/// A pipeline for UseDevelopmentStorage=true over `fake` (no sleeps between retries, jitter
/// fixed at 0.5), with a blob and a queue client on it.
class fake_storage_test : public ::testing::Test {
protected:
  void SetUp() override;

  std::shared_ptr<fake_transport> fake = std::make_shared<fake_transport>();
  std::optional<storage::blob_client> blobs;
  std::optional<storage::queue_client> queues;
};

} // namespace shoal::tests
