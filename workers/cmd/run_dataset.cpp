// Which input `shoal run` sends, and how many records it holds.
#include "workers/cmd/run_dataset.hpp"

#include "workers/dev_storage.hpp"
#include "workers/cmd/input_reader.hpp"

#include <cctype>
#include <cstdio>
#include <fstream>
#include <map>

namespace shoal::cmd::run_detail {

namespace fs = std::filesystem;

std::optional<dataset_spec> resolve_dataset(const std::string& dataset, const std::string& event_time_field,
                                            const std::string& partition) {
  const fs::path data = workers::source_dir() / "deploy/local/node_modules/vega-datasets/data";
  const fs::path shipped = workers::source_dir() / "deploy/datasets";
  // The dated flight files share one schema (date, delay, distance, origin, destination) and
  // the shipped `flights` dataset; flights-200k has its own (delay, distance, time: no date,
  // so its event time is the ingest time); seattle-weather is a CSV with a date.
  static const std::map<std::string, std::string> flights{
      {"flights-2k", "flights-2k.json"},
      {"flights-5k", "flights-5k.json"},
      {"flights-10k", "flights-10k.json"},
      {"flights-20k", "flights-20k.json"}};
  dataset_spec d;
  if (dataset == "flights-200k") {
    d.file = data / "flights-200k.json";
    d.dest = "flights-200k";
    d.datasets_dir = shipped;
    d.table = "flights_200k";
  } else if (auto it = flights.find(dataset); it != flights.end()) {
    d.file = data / it->second;
    d.dest = "flights";
    d.event_time_field = "date";
    d.datasets_dir = shipped;
    d.table = "flights";
  } else if (dataset == "seattle-weather") {
    d.file = data / "seattle-weather.csv";
    d.dest = "seattle-weather";
    d.event_time_field = "date";
    d.partition = "month"; // one record per day: by day every blob would hold one record
    d.datasets_dir = shipped;
    d.table = "seattle_weather";
  } else {
    d.file = dataset;
    std::string stem = d.file.stem().string();
    for (char c : stem)
      if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')
        d.dest += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (d.dest.empty())
      d.dest = "records";
  }
  if (!event_time_field.empty())
    d.event_time_field = event_time_field;
  if (!partition.empty())
    d.partition = partition;
  std::error_code ec;
  if (!fs::is_regular_file(d.file, ec)) {
    std::fprintf(stderr,
                 "shoal run: dataset '%s': %s is not a file (names: flights-2k, flights-5k, "
                 "flights-10k, flights-20k, flights-200k, seattle-weather, or a path to a JSON "
                 "array, NDJSON or CSV file; the named ones need deploy/setup.sh)\n",
                 dataset.c_str(), d.file.c_str());
    return std::nullopt;
  }
  return d;
}

std::optional<std::size_t> count_records(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in)
    return std::nullopt;
  auto format = workers::choose_input_format("auto", file.string(), in);
  if (!format)
    return std::nullopt;
  auto reader = workers::input_reader::open(in, *format, file.string());
  if (!reader)
    return std::nullopt;
  std::size_t n = 0;
  while (reader->next())
    ++n;
  if (in.bad())
    return std::nullopt;
  return n;
}

} // namespace shoal::cmd::run_detail
