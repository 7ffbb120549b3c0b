#pragma once
// Which input `shoal run` sends: the named datasets (vega-datasets' flights and Seattle weather,
// mapped to SQL by deploy/datasets/) or a file of the user's, and how many records it holds.
// Only workers/cmd/run*.cpp use this.

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>

namespace shoal::cmd::run_detail {

/// A dataset to send: the file, its dest (first blob-name segment), its event-time field and
/// the folder of dataset definitions that maps it to SQL (empty = the generic mapping).
struct dataset_spec {
  std::filesystem::path file;
  std::string dest;
  std::string event_time_field;
  std::string partition; ///< "" = [persistor] partition (day by default)
  std::filesystem::path datasets_dir;
  std::string table = "shoal_etl_records";
};

/// `dataset`: flights-2k, flights-5k, flights-10k, flights-20k, flights-200k, seattle-weather
/// (files of deploy/local/node_modules/vega-datasets) or a path (dest from its stem, the generic
/// mapping). A non-empty `event_time_field` or `partition` overrides the dataset's. nullopt,
/// with the reason on stderr, when the file is not there.
std::optional<dataset_spec> resolve_dataset(const std::string& dataset, const std::string& event_time_field,
                                            const std::string& partition);

/// The records in `file`, counted as `shoal send` reads it (workers::input_reader, format by
/// extension or first byte): JSON array elements, non-blank NDJSON lines, CSV records after the
/// header. nullopt when the file cannot be opened or read in its format.
std::optional<std::size_t> count_records(const std::filesystem::path& file);

} // namespace shoal::cmd::run_detail
