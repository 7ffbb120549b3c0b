// `shoal records`: the work table from the command line (workers/claim/SCHEMA.md).
//
//   shoal records enqueue [ID...] [--file F [--format auto|json|ndjson|csv]] [--payload P] [--delay-ms N]
//   shoal records list [--status S] [--limit N]        counts per status and per shard, then records
//   shoal records show ID
//   shoal records requeue [ID...] [--status dead|claimed|...] [--stuck]
//   shoal records purge [ID...] [--status done|dead|...] [--all]
//   shoal records sweep [--retention-ms N]             remove done records past [work] done_retention_ms
//   shoal records migrate                               give layout-1 records their tickets (SCHEMA.md)
//   shoal records check                                 verify record rows, tickets and meta rows agree
//   common: --queue Q (default "default"), --table T (default [work] table)
//
// Human tables by default; the global --json prints one JSON document for scripts.
// Files: JSON (an array of ids or of {"id": ..., "payload": ...}), NDJSON (one id string or
// object per line), CSV (a header row with an `id` column and optionally `payload`).

#include "workers/cmd/cli.hpp"

#include "storage/blob_client.hpp"
#include "storage/encoding.hpp"
#include "storage/table_client.hpp"
#include "workers/cmd/input_reader.hpp"
#include "workers/json_limits.hpp"
#include "workers/claim/work_table.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace shoal::cmd {
namespace {

using workers::record_status;

struct records_args {
  std::string queue = "default";
  std::string table;
  std::vector<std::string> ids;
  std::string file;
  std::string format = "auto";
  std::string payload;
  std::uint64_t delay_ms = 0;
  std::vector<std::string> statuses;
  std::size_t limit = 100;
  bool stuck = false;
  bool all = false;
  std::optional<std::uint64_t> retention_ms;
};

std::optional<workers::work_table> open(const workers::config& c, const records_args& a) {
  auto p = make_pipeline(c, "records");
  if (!p)
    return std::nullopt;
  auto t = storage::table_client::make(*p, a.table.empty() ? c.work.table : a.table);
  if (!t) {
    std::fprintf(stderr, "shoal records: %s\n", t.error().describe().c_str());
    return std::nullopt;
  }
  workers::work_table_options wo;
  wo.work = c.work;
  auto w = workers::work_table::make(*t, storage::blob_client(*p), wo);
  if (!w) {
    std::fprintf(stderr, "shoal records: %s\n", w.error().describe().c_str());
    return std::nullopt;
  }
  return *w;
}

nlohmann::json to_json(const workers::record_view& v, bool with_payload) {
  nlohmann::json j = {{"id", v.id},           {"queue", v.queue},       {"shard", v.shard},
                      {"status", std::string(to_string(v.status))}, {"owner", v.owner},
                      {"gen", v.gen},         {"attempts", v.attempts}, {"not_before", cli_time(v.not_before)},
                      {"lease_until", cli_time(v.lease_until)}, {"last_error", v.last_error},
                      {"payload_bytes", v.payload_bytes}, {"payload_blob", v.payload_blob},
                      {"created", cli_time(v.created)}, {"updated", cli_time(v.updated)}};
  if (with_payload) j["payload"] = v.payload;
  return j;
}

// -- input files ------------------------------------------------------------------------------------

workers::result<workers::new_record> from_json_item(const nlohmann::json& j, std::size_t where) {
  if (j.is_string()) return workers::new_record{j.get<std::string>(), {}, {}};
  if (j.is_object() && j.contains("id")) {
    workers::new_record r;
    r.id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
    if (j.contains("payload")) r.payload = j["payload"].is_string() ? j["payload"].get<std::string>() : j["payload"].dump();
    return r;
  }
  return workers::fail(workers::errc::parse, "item " + std::to_string(where) + ": expected an id string or an object with \"id\"");
}

// Reads the records of an input file through workers::input_reader: JSON and NDJSON items are
// id strings or {"id": ..., "payload": ...}; CSV has an "id" column and may have "payload".
workers::result<std::vector<workers::new_record>> read_file(const std::string& path, const std::string& format) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return workers::fail(workers::errc::io, "cannot read " + path);
  auto fmt = workers::choose_input_format(format, path, in);
  if (!fmt) return std::unexpected(fmt.error());
  auto reader = workers::input_reader::open(in, *fmt, path);
  if (!reader) return std::unexpected(reader.error());
  std::vector<workers::new_record> out;
  int id_col = -1, payload_col = -1;
  if (*fmt == workers::input_format::csv) {
    const auto& header = reader->header();
    for (std::size_t i = 0; i < header.size(); ++i) {
      if (header[i] == "id") id_col = static_cast<int>(i);
      if (header[i] == "payload") payload_col = static_cast<int>(i);
    }
    if (id_col < 0) return workers::fail(workers::errc::parse, path + ": the CSV header has no 'id' column");
  }
  while (auto item = reader->next()) {
    const std::string where = path + " line " + std::to_string(item->number);
    if (*fmt == workers::input_format::csv) {
      if (!item->problem.empty()) return workers::fail(workers::errc::parse, path + " " + item->problem);
      const auto& f = item->fields;
      if (static_cast<int>(f.size()) <= id_col) return workers::fail(workers::errc::parse, where + ": no id");
      workers::new_record r;
      r.id = f[static_cast<std::size_t>(id_col)];
      if (payload_col >= 0 && static_cast<int>(f.size()) > payload_col) r.payload = f[static_cast<std::size_t>(payload_col)];
      out.push_back(std::move(r));
      continue;
    }
    // Items are re-serialized with nlohmann's recursive dump: bound the nesting first (a JSON
    // array's elements were bounded when it was opened).
    if (*fmt == workers::input_format::ndjson)
      if (auto deep = workers::check_json_depth(item->text, where); !deep) return std::unexpected(deep.error());
    auto j = nlohmann::json::parse(item->text, nullptr, false);
    if (j.is_discarded()) return workers::fail(workers::errc::parse, where + ": not JSON");
    auto r = from_json_item(j, *fmt == workers::input_format::json ? item->number - 1 : item->number);
    if (!r) {
      if (*fmt == workers::input_format::json) return std::unexpected(r.error());
      return workers::fail(workers::errc::parse, where + ": " + r.error().message);
    }
    out.push_back(std::move(*r));
  }
  return out;
}

workers::result<workers::record_selector> selector(const records_args& a) {
  workers::record_selector s;
  s.ids = a.ids;
  s.stuck = a.stuck;
  for (const auto& name : a.statuses) {
    auto st = workers::parse_record_status(name);
    if (!st) return std::unexpected(st.error());
    s.statuses.insert(*st);
  }
  return s;
}

// -- subcommands ------------------------------------------------------------------------------------

int run_enqueue(const workers::config& c, const records_args& a, bool json) {
  std::vector<workers::new_record> recs;
  for (const auto& id : a.ids) recs.push_back({id, a.payload, std::chrono::milliseconds(a.delay_ms)});
  if (!a.file.empty()) {
    auto more = read_file(a.file, a.format);
    if (!more) return report_failure("records", "enqueue", more.error());
    for (auto& r : *more) {
      r.delay = std::chrono::milliseconds(a.delay_ms);
      recs.push_back(std::move(r));
    }
  }
  if (recs.empty()) {
    std::fprintf(stderr, "shoal records enqueue: give ids or --file\n");
    return 2;
  }
  auto w = open(c, a);
  if (!w) return 1;
  if (auto ok = w->create_if_missing(); !ok) return report_failure("records", "enqueue", ok.error());
  auto r = w->enqueue(a.queue, recs);
  if (!r) return report_failure("records", "enqueue", r.error());
  if (json) std::cout << nlohmann::json{{"queue", a.queue}, {"inserted", r->inserted}, {"already_present", r->already_present}}.dump() << "\n";
  else std::printf("queue %s: %zu enqueued, %zu already present (left unchanged)\n", a.queue.c_str(), r->inserted, r->already_present);
  return 0;
}

int run_list(const workers::config& c, const records_args& a, bool json) {
  auto w = open(c, a);
  if (!w) return 1;
  std::optional<record_status> status;
  if (!a.statuses.empty()) {
    auto s = workers::parse_record_status(a.statuses.front());
    if (!s) return report_failure("records", "list", s.error());
    status = *s;
  }
  auto counts = w->counts(a.queue);
  if (!counts) return report_failure("records", "list", counts.error());
  auto recs = w->list(a.queue, status, a.limit);
  if (!recs) return report_failure("records", "list", recs.error());
  const record_status all[] = {record_status::pending, record_status::claimed, record_status::done, record_status::dead};
  if (json) {
    nlohmann::json j;
    j["queue"] = a.queue;
    j["total"] = counts->total;
    for (auto s : all) j["counts"][std::string(to_string(s))] = counts->by_status[s];
    for (auto& [shard, m] : counts->by_shard)
      for (auto s : all) j["shards"][std::to_string(shard)][std::string(to_string(s))] = m[s];
    j["records"] = nlohmann::json::array();
    for (const auto& v : *recs) j["records"].push_back(to_json(v, false));
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  std::printf("queue %s: %zu records\n\n%-8s %9s %9s %9s %9s\n", a.queue.c_str(), counts->total, "shard", "pending", "claimed", "done", "dead");
  for (auto& [shard, m] : counts->by_shard)
    std::printf("%-8u %9zu %9zu %9zu %9zu\n", shard, m[all[0]], m[all[1]], m[all[2]], m[all[3]]);
  std::printf("%-8s %9zu %9zu %9zu %9zu\n\n", "total", counts->by_status[all[0]], counts->by_status[all[1]],
              counts->by_status[all[2]], counts->by_status[all[3]]);
  std::printf("%-32s %-8s %5s %4s %4s %-24s %-20s %s\n", "ID", "STATUS", "SHARD", "GEN", "ATT", "OWNER", "LEASE_UNTIL", "LAST_ERROR");
  // Ids, owners and errors (a job's stderr) are shown with control characters escaped.
  for (const auto& v : *recs)
    std::printf("%-32s %-8s %5u %4lld %4d %-24s %-20s %s\n", terminal_safe(v.id).c_str(),
                std::string(to_string(v.status)).c_str(), v.shard, static_cast<long long>(v.gen), v.attempts,
                v.owner.empty() ? "-" : terminal_safe(v.owner).c_str(),
                v.status == record_status::claimed ? cli_time(v.lease_until).c_str() : "-",
                terminal_safe(v.last_error).substr(0, 60).c_str());
  if (recs->size() == a.limit) std::printf("(first %zu shown; --limit N for more)\n", a.limit);
  return 0;
}

int run_show(const workers::config& c, const records_args& a, bool json) {
  if (a.ids.size() != 1) {
    std::fprintf(stderr, "shoal records show: give exactly one ID\n");
    return 2;
  }
  auto w = open(c, a);
  if (!w) return 1;
  auto v = w->get(a.queue, a.ids.front(), true);
  if (!v) return report_failure("records", "show", v.error());
  auto j = to_json(*v, true);
  // JSON escapes control characters itself; bytes that are not UTF-8 become U+FFFD instead of
  // an exception. The table escapes them (payloads and job errors are anyone's bytes).
  if (json) {
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  for (auto& [k, val] : j.items())
    std::printf("%-14s %s\n", k.c_str(),
                terminal_safe(val.is_string() ? val.get<std::string>()
                                              : val.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))
                    .c_str());
  return 0;
}

int run_change(const workers::config& c, const records_args& a, bool json, bool purge) {
  const char* what = purge ? "purge" : "requeue";
  auto sel = selector(a);
  if (!sel) return report_failure("records", what, sel.error());
  if (purge && a.all) sel->statuses = {record_status::pending, record_status::claimed, record_status::done, record_status::dead};
  if (sel->ids.empty() && sel->statuses.empty() && !sel->stuck) {
    std::fprintf(stderr, "shoal records %s: give ids, --status%s\n", what, purge ? " or --all" : " or --stuck");
    return 2;
  }
  auto w = open(c, a);
  if (!w) return 1;
  auto n = purge ? w->purge(a.queue, *sel) : w->requeue(a.queue, *sel);
  if (!n) return report_failure("records", what, n.error());
  if (json) std::cout << nlohmann::json{{"queue", a.queue}, {purge ? "purged" : "requeued", *n}}.dump() << "\n";
  else std::printf("queue %s: %zu records %s\n", a.queue.c_str(), *n, purge ? "purged" : "requeued");
  return 0;
}

int run_sweep(const workers::config& c, const records_args& a, bool json) {
  auto w = open(c, a);
  if (!w) return 1;
  std::optional<std::chrono::milliseconds> retention;
  if (a.retention_ms) retention = std::chrono::milliseconds(*a.retention_ms);
  auto r = w->sweep(a.queue, {}, retention);
  if (!r) return report_failure("records", "sweep", r.error());
  if (json) std::cout << nlohmann::json{{"queue", a.queue}, {"removed", r->removed}, {"archived", r->archived}, {"partitions", r->partitions}}.dump() << "\n";
  else std::printf("queue %s: %zu done records removed (%zu copied to the history table) from %zu partitions\n", a.queue.c_str(),
                   r->removed, r->archived, r->partitions);
  return 0;
}

int run_migrate(const workers::config& c, const records_args& a, bool json) {
  auto w = open(c, a);
  if (!w) return 1;
  auto r = w->migrate(a.queue);
  if (!r) return report_failure("records", "migrate", r.error());
  if (json) {
    std::cout << nlohmann::json{{"queue", a.queue}, {"partitions", r->partitions}, {"migrated", r->migrated},
                                {"already_layout_2", r->already}, {"skipped", r->skipped}}.dump() << "\n";
  } else {
    std::printf("queue %s: %zu records given a ticket in %zu partitions (%zu already on layout 2)\n", a.queue.c_str(),
                r->migrated, r->partitions, r->already);
    for (const auto& s : r->skipped) std::printf("  skipped: %s\n", s.c_str());
  }
  return r->skipped.empty() ? 0 : 1;
}

int run_check(const workers::config& c, const records_args& a, bool json) {
  auto w = open(c, a);
  if (!w) return 1;
  auto r = w->check(a.queue);
  if (!r) return report_failure("records", "check", r.error());
  if (json) {
    std::cout << nlohmann::json{{"queue", a.queue}, {"records", r->records}, {"tickets", r->tickets}, {"open", r->open},
                                {"problems", r->problems}}.dump() << "\n";
  } else {
    std::printf("queue %s: %zu records (%zu open), %zu tickets: %s\n", a.queue.c_str(), r->records, r->open, r->tickets,
                r->problems.empty() ? "consistent" : (std::to_string(r->problems.size()) + " problem(s)").c_str());
    for (const auto& p : r->problems) std::printf("  %s\n", p.c_str());
  }
  return r->problems.empty() ? 0 : 1;
}

} // namespace

void add_records_command(CLI::App& app, global_options& g, command_fn& run) {
  auto a = std::make_shared<records_args>();
  auto* cmd = app.add_subcommand("records", "Work-table records: enqueue, list, show, requeue, purge, sweep, migrate, check");
  cmd->require_subcommand(1);
  auto common = [&](CLI::App* sub) {
    sub->add_option("--queue,-q", a->queue, "queue name (letters, digits, _)")->capture_default_str();
    sub->add_option("--table", a->table, "work table (default: [work] table)");
  };
  auto* enq = cmd->add_subcommand("enqueue", "Add records (ids and/or a JSON/NDJSON/CSV file); idempotent");
  common(enq);
  enq->add_option("ids", a->ids, "record ids");
  enq->add_option("--file,-f", a->file, "file of records");
  enq->add_option("--format", a->format, "auto|json|ndjson|csv")->capture_default_str();
  enq->add_option("--payload", a->payload, "payload for ids given on the command line");
  enq->add_option("--delay-ms", a->delay_ms, "not claimable before now + this");
  auto* list = cmd->add_subcommand("list", "Counts per status and shard, then records");
  common(list);
  list->add_option("--status", a->statuses, "pending|claimed|done|dead")->expected(1);
  list->add_option("--limit", a->limit, "records to show")->capture_default_str();
  auto* show = cmd->add_subcommand("show", "One record with its payload");
  common(show);
  show->add_option("id", a->ids, "record id")->required()->expected(1);
  auto* req = cmd->add_subcommand("requeue", "Put dead or stuck records back to pending (attempts 0)");
  common(req);
  req->add_option("ids", a->ids, "record ids");
  req->add_option("--status", a->statuses, "every record in this status (repeatable)");
  req->add_flag("--stuck", a->stuck, "claimed records whose lease expired");
  auto* pur = cmd->add_subcommand("purge", "Delete records (and their payload blobs)");
  common(pur);
  pur->add_option("ids", a->ids, "record ids");
  pur->add_option("--status", a->statuses, "every record in this status (repeatable)");
  pur->add_flag("--all", a->all, "every record of the queue");
  auto* swp = cmd->add_subcommand("sweep", "Remove done records older than [work] done_retention_ms (counts are kept)");
  common(swp);
  swp->add_option("--retention-ms", a->retention_ms, "remove done records older than this instead");
  auto* mig = cmd->add_subcommand("migrate", "Give records written by layout 1 their tickets (stop layout-1 processes first)");
  common(mig);
  auto* chk = cmd->add_subcommand("check", "Verify that record rows, tickets and meta rows agree (read-only)");
  common(chk);

  auto bind = [&g, &run, a](CLI::App* sub, int (*fn)(const workers::config&, const records_args&, bool)) {
    sub->callback([&g, &run, a, fn] {
      run = [&g, a, fn] {
        auto c = load(g);
        if (!c) return 2;
        init_logging(*c);
        return fn(*c, *a, g.json);
      };
    });
  };
  bind(enq, run_enqueue);
  bind(list, run_list);
  bind(show, run_show);
  bind(req, [](const workers::config& c, const records_args& x, bool j) { return run_change(c, x, j, false); });
  bind(pur, [](const workers::config& c, const records_args& x, bool j) { return run_change(c, x, j, true); });
  bind(swp, run_sweep);
  bind(mig, run_migrate);
  bind(chk, run_check);
}

} // namespace shoal::cmd
