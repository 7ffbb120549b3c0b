#pragma once
// Azure Storage connection strings (see shared/reference/azure-storage-rest.md §1).

#include "storage/error.hpp"

#include <string>
#include <string_view>

namespace shoal::storage {

/// A storage account as a connection string describes it.
/// `key` is secret: it never appears in a log line, an error message or describe().
struct storage_account {
  std::string name;           ///< AccountName, e.g. "devstoreaccount1"
  std::string key;            ///< AccountKey, base64-DECODED bytes; empty when using a SAS
  std::string sas;            ///< SharedAccessSignature without the leading '?'; empty if none
  std::string blob_endpoint;  ///< e.g. "http://127.0.0.1:10000/devstoreaccount1", no trailing '/'
  std::string queue_endpoint; ///< likewise
  std::string table_endpoint; ///< likewise
  bool development = false;   ///< came from UseDevelopmentStorage=true
  std::string file_endpoint;  ///< FileEndpoint or constructed; parsed for completeness, unused
  std::string blob_secondary_endpoint;  ///< BlobSecondaryEndpoint, or "{name}-secondary" host; may be empty
  std::string queue_secondary_endpoint; ///< likewise
  std::string table_secondary_endpoint; ///< likewise
  std::string file_secondary_endpoint;  ///< likewise

  /// "account devstoreaccount1 (SharedKey) blob=http://…" — safe to log, no secrets.
  std::string describe() const;
};

/// Parses `Key=Value;...` (keys: DefaultEndpointsProtocol, AccountName, AccountKey,
/// EndpointSuffix, BlobEndpoint, QueueEndpoint, TableEndpoint, FileEndpoint, *SecondaryEndpoint,
/// SharedAccessSignature, UseDevelopmentStorage, DevelopmentStorageProxyUri).
/// Errors: invalid_argument, naming the bad key (never echoing the AccountKey value).
/// Thread-safe (pure).
[[nodiscard]] result<storage_account> parse_connection_string(std::string_view s);

/// Parses $AZURE_STORAGE_CONNECTION_STRING, like the Azure SDKs.
/// Errors: invalid_argument if it is unset or malformed.
[[nodiscard]] result<storage_account> account_from_environment();

} // namespace shoal::storage
