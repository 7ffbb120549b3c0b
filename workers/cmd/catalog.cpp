// `shoal catalog`: the blob catalog (storage/catalog_blobs.hpp) from the command line.
//
//   shoal catalog query --dest flights --date 2001-01-05 [--host h] [--prefix p] [--from a --to b]
//   shoal catalog recover | stats | compact [--retention-ms n]
//   shoal catalog insert|delete --blob b --dest d --date YYYY-MM-DD --host h [--format f --records n]
//   shoal catalog insert --input file.ndjson   (one JSON object per line; "op":"delete" deletes)
//
// Test hook: SHOAL_TEST_CLOCK_SKEW_MS (signed milliseconds) shifts this process's storage clock
// (the x-ms-date the pipeline stamps), so tests can run writers whose clocks disagree. The
// catalog never reads a local clock; the hook exists to prove it.

#include "workers/cmd/cli.hpp"

#include "storage/catalog_blobs.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

namespace shoal::cmd {
namespace {

namespace st = shoal::storage;

struct catalog_args {
  std::string table;         // --table; empty = [catalog] table
  st::blob_catalog_entry entry;
  std::string input;         // --input for insert/delete
  std::optional<std::string> dest, date, host, prefix, from, to;
  std::size_t limit = 0;     // 0 = all
  std::uint64_t retention_ms = 0;
  bool retention_set = false;
};

std::optional<st::table_service_client> service(const workers::config& c) {
  st::pipeline_options opts = pipeline_options_for(c);
#if defined(SHOAL_TEST_HOOKS) // test builds only (workers/cmd/CMakeLists.txt)
  if (const char* skew = std::getenv("SHOAL_TEST_CLOCK_SKEW_MS"); skew && *skew) {
    char* end = nullptr;
    long long ms = std::strtoll(skew, &end, 10);
    if (*end != '\0') {
      std::fprintf(stderr, "shoal catalog: SHOAL_TEST_CLOCK_SKEW_MS is not an integer\n");
      return std::nullopt;
    }
    opts.hooks.now = [ms] { return std::chrono::system_clock::now() + std::chrono::milliseconds(ms); };
  }
#endif
  auto svc = st::table_service_client::from_connection_string(c.storage.connection_string, opts);
  if (!svc) {
    std::fprintf(stderr, "shoal catalog: storage: %s\n", svc.error().describe().c_str());
    return std::nullopt;
  }
  return *svc;
}

st::catalog_options catalog_opts(const workers::config& c, bool recover_on_open) {
  st::catalog_options o;
  o.recover_on_open = recover_on_open;
  o.stall_timeout = std::chrono::milliseconds(c.catalog.stall_timeout_ms);
  return o;
}

nlohmann::json to_json(const st::blob_catalog_entry& e) {
  return {{"blob", e.blob},     {"dest", e.dest},     {"date", e.date},
          {"host", e.host},     {"format", e.format}, {"record_count", e.record_count},
          {"container", e.container}, {"seq", e.seq}};
}

// One NDJSON line → (is_delete, entry). Values may be strings or numbers.
std::optional<std::pair<bool, st::blob_catalog_entry>> parse_line(const std::string& line, bool default_delete,
                                                                  std::string& why) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const std::exception& ex) {
    why = ex.what();
    return std::nullopt;
  }
  if (!j.is_object()) {
    why = "not a JSON object";
    return std::nullopt;
  }
  bool del = default_delete;
  st::catalog_fields f;
  for (const auto& [k, v] : j.items()) {
    std::string s;
    if (v.is_string())
      s = v.get<std::string>();
    else if (v.is_number_unsigned() || v.is_number_integer())
      s = v.dump();
    else {
      why = "field '" + k + "' must be a string or an integer";
      return std::nullopt;
    }
    if (k == "op") {
      if (s != "insert" && s != "delete") {
        why = "op must be insert or delete";
        return std::nullopt;
      }
      del = s == "delete";
    } else {
      f[k] = s;
    }
  }
  auto e = st::blob_catalog::from_fields(f);
  if (!e) {
    why = e.error().message;
    return std::nullopt;
  }
  return std::pair{del, *e};
}

int write_command(const global_options& g, const catalog_args& a, bool is_delete) {
  auto cfg = load(g);
  if (!cfg)
    return 2;
  init_logging(*cfg);
  auto svc = service(*cfg);
  if (!svc)
    return 2;
  auto bc = st::blob_catalog::open(*svc, a.table.empty() ? cfg->catalog.table : a.table, catalog_opts(*cfg, true));
  if (!bc)
    return report_failure("catalog", "open", bc.error());
  std::vector<std::pair<bool, st::blob_catalog_entry>> work;
  if (!a.input.empty()) {
    std::ifstream file;
    std::istream* in = &std::cin;
    if (a.input != "-") {
      file.open(a.input);
      if (!file) {
        std::fprintf(stderr, "shoal catalog: cannot read %s\n", a.input.c_str());
        return 2;
      }
      in = &file;
    }
    std::string line;
    std::size_t n = 0;
    while (std::getline(*in, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos)
        continue;
      std::string why;
      auto item = parse_line(line, is_delete, why);
      if (!item) {
        std::fprintf(stderr, "shoal catalog: %s:%zu: %s\n", a.input.c_str(), n, why.c_str());
        return 2;
      }
      work.push_back(std::move(*item));
    }
  } else {
    work.emplace_back(is_delete, a.entry);
  }
  nlohmann::json results = nlohmann::json::array();
  for (const auto& [del, e] : work) {
    auto r = del ? bc->unregister_blob(e) : bc->register_blob(e);
    if (!r)
      return report_failure("catalog", del ? "delete" : "insert", r.error());
    if (g.json)
      results.push_back({{"op", del ? "delete" : "insert"}, {"blob", e.blob}, {"seq", r->seq},
                         {"checkpoint", r->checkpoint}});
    else
      std::printf("%s %s seq %llu\n", del ? "deleted" : "inserted", e.blob.c_str(),
                  static_cast<unsigned long long>(r->seq));
  }
  if (g.json)
    std::printf("%s\n", results.dump().c_str());
  return 0;
}

int query_command(const global_options& g, const catalog_args& a) {
  auto cfg = load(g);
  if (!cfg)
    return 2;
  init_logging(*cfg);
  auto svc = service(*cfg);
  if (!svc)
    return 2;
  st::blob_catalog_query q{a.dest, a.date, a.host, a.prefix, a.from, a.to, std::nullopt};
  if (a.limit)
    q.limit = a.limit;
  if (auto ok = st::blob_catalog::to_query(q); !ok) {
    std::fprintf(stderr, "shoal catalog query: %s\n", ok.error().message.c_str());
    return 2;
  }
  // Queries do not write: open without recovery (run `shoal catalog recover` for that).
  auto bc = st::blob_catalog::open_existing(*svc, a.table.empty() ? cfg->catalog.table : a.table,
                                            catalog_opts(*cfg, false));
  if (!bc)
    return report_failure("catalog", "open", bc.error());
  auto found = bc->find(q);
  if (!found)
    return report_failure("catalog", "query", found.error());
  if (g.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : *found)
      out.push_back(to_json(e));
    std::printf("%s\n", out.dump().c_str());
  } else {
    for (const auto& e : *found)
      std::printf("%s\t%s\t%s\t%s\t%s\t%llu\n", e.blob.c_str(), e.dest.c_str(), e.date.c_str(), e.host.c_str(),
                  e.format.c_str(), static_cast<unsigned long long>(e.record_count));
    std::fprintf(stderr, "%zu blob(s)\n", found->size());
  }
  return 0;
}

int maintenance_command(const global_options& g, const catalog_args& a, const std::string& which) {
  auto cfg = load(g);
  if (!cfg)
    return 2;
  init_logging(*cfg);
  auto svc = service(*cfg);
  if (!svc)
    return 2;
  const std::string name = a.table.empty() ? cfg->catalog.table : a.table;
  auto bc = st::blob_catalog::open_existing(*svc, name, catalog_opts(*cfg, false));
  if (!bc)
    return report_failure("catalog", "open", bc.error());
  const st::catalog& c = bc->generic();
  if (which == "recover") {
    auto r = c.recover();
    if (!r)
      return report_failure("catalog", "recover", r.error());
    if (g.json)
      std::printf("%s\n", nlohmann::json{{"catalog", name},
                                         {"checkpoint_before", r->checkpoint_before},
                                         {"checkpoint_after", r->checkpoint_after},
                                         {"last_seq", r->last_seq},
                                         {"replayed", r->replayed},
                                         {"skipped", r->skipped}}
                                          .dump()
                                          .c_str());
    else
      std::printf("catalog %s: replayed %zu WAL entries, stepped over %zu missing; checkpoint %llu -> %llu "
                  "(last seq %llu)\n",
                  name.c_str(), r->replayed, r->skipped, static_cast<unsigned long long>(r->checkpoint_before),
                  static_cast<unsigned long long>(r->checkpoint_after), static_cast<unsigned long long>(r->last_seq));
    return 0;
  }
  if (which == "compact") {
    const auto retention = std::chrono::milliseconds(a.retention_set ? a.retention_ms : cfg->catalog.wal_retention_ms);
    auto r = c.compact(retention);
    if (!r)
      return report_failure("catalog", "compact", r.error());
    if (g.json)
      std::printf("%s\n", nlohmann::json{{"catalog", name},
                                         {"checkpoint", r->checkpoint},
                                         {"wal_deleted", r->wal_deleted},
                                         {"tombstones_deleted", r->tombstones_deleted}}
                                          .dump()
                                          .c_str());
    else
      std::printf("catalog %s: deleted %zu WAL entries and %zu tombstones (checkpoint %llu)\n", name.c_str(),
                  r->wal_deleted, r->tombstones_deleted, static_cast<unsigned long long>(r->checkpoint));
    return 0;
  }
  auto s = c.stats();
  if (!s)
    return report_failure("catalog", "stats", s.error());
  if (g.json) {
    nlohmann::json j{{"catalog", s->name},
                     {"index_keys", s->schema.index_keys},
                     {"row_key", s->schema.row_key},
                     {"last_seq", s->last_seq},
                     {"checkpoint", s->checkpoint},
                     {"wal_entries", s->wal_entries},
                     {"unapplied", s->unapplied},
                     {"index_entities", s->index_entities},
                     {"tombstones", s->tombstones},
                     {"partitions_per_key", s->partitions_per_key}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("catalog %s (%s)\n", s->name.c_str(), s->schema.describe().c_str());
    std::printf("  last seq %llu, checkpoint %llu\n", static_cast<unsigned long long>(s->last_seq),
                static_cast<unsigned long long>(s->checkpoint));
    std::printf("  WAL entries %zu (%zu unapplied)\n", s->wal_entries, s->unapplied);
    std::printf("  index entities %zu, tombstones %zu\n", s->index_entities, s->tombstones);
    for (const auto& [k, n] : s->partitions_per_key)
      std::printf("  distinct %s: %zu\n", k.c_str(), n);
  }
  return 0;
}

void add_entry_options(CLI::App* sub, catalog_args& a) {
  sub->add_option("--blob", a.entry.blob, "blob name (the row key)");
  sub->add_option("--dest", a.entry.dest, "destination");
  sub->add_option("--date", a.entry.date, "event date YYYY-MM-DD");
  sub->add_option("--host", a.entry.host, "host that wrote the blob");
  sub->add_option("--format", a.entry.format, "persistor-v1 | ndjson");
  sub->add_option("--records", a.entry.record_count, "records in the blob");
  sub->add_option("--container", a.entry.container, "container name");
  sub->add_option("--input", a.input,
                  "NDJSON file ('-' = stdin): one entry per line, fields as above "
                  "(record_count for --records), optional \"op\":\"insert\"|\"delete\"");
}

} // namespace

void add_catalog_command(CLI::App& app, global_options& g, command_fn& run) {
  auto args = std::make_shared<catalog_args>();
  CLI::App* cat = app.add_subcommand("catalog", "Blob catalog: query, recover, stats, compact, insert, delete");
  cat->add_option("--table", args->table, "catalog name (default: [catalog] table, \"shoalcatalog\")");
  cat->require_subcommand(1);

  CLI::App* query = cat->add_subcommand("query", "List blobs by dest, date and/or host (intersected)");
  query->add_option("--dest", args->dest, "destination");
  query->add_option("--date", args->date, "event date YYYY-MM-DD");
  query->add_option("--host", args->host, "host");
  query->add_option("--prefix", args->prefix, "blob names starting with this");
  query->add_option("--from", args->from, "blob names >= this");
  query->add_option("--to", args->to, "blob names < this");
  query->add_option("--limit", args->limit, "at most this many (0 = all)");
  query->callback([&g, &run, args] { run = [&g, args] { return query_command(g, *args); }; });

  CLI::App* recover = cat->add_subcommand("recover", "Replay unapplied WAL entries and advance the checkpoint");
  recover->callback([&g, &run, args] { run = [&g, args] { return maintenance_command(g, *args, "recover"); }; });

  CLI::App* stats = cat->add_subcommand("stats", "Sequence, checkpoint, WAL and index counts");
  stats->callback([&g, &run, args] { run = [&g, args] { return maintenance_command(g, *args, "stats"); }; });

  CLI::App* compact = cat->add_subcommand("compact", "Delete checkpointed WAL entries and tombstones older than the retention");
  compact->add_option_function<std::uint64_t>(
      "--retention-ms",
      [args](const std::uint64_t& v) {
        args->retention_ms = v;
        args->retention_set = true;
      },
      "keep entries younger than this (default: [catalog] wal_retention_ms)");
  compact->callback([&g, &run, args] { run = [&g, args] { return maintenance_command(g, *args, "compact"); }; });

  CLI::App* insert = cat->add_subcommand("insert", "Register blobs (flags for one, --input for many)");
  add_entry_options(insert, *args);
  insert->callback([&g, &run, args] { run = [&g, args] { return write_command(g, *args, false); }; });

  CLI::App* del = cat->add_subcommand("delete", "Remove blob registrations (flags for one, --input for many)");
  add_entry_options(del, *args);
  del->callback([&g, &run, args] { run = [&g, args] { return write_command(g, *args, true); }; });
}

} // namespace shoal::cmd
