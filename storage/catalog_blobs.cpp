#include "storage/catalog_blobs.hpp"

#include <charconv>

namespace shoal::storage {
namespace {

bool is_date(std::string_view d) {
  if (d.size() != 10 || d[4] != '-' || d[7] != '-')
    return false;
  for (std::size_t i : {0, 1, 2, 3, 5, 6, 8, 9})
    if (d[i] < '0' || d[i] > '9')
      return false;
  int month = (d[5] - '0') * 10 + (d[6] - '0');
  int day = (d[8] - '0') * 10 + (d[9] - '0');
  return month >= 1 && month <= 12 && day >= 1 && day <= 31;
}

} // namespace

catalog_schema blob_catalog::schema() { return catalog_schema{{"dest", "date", "host"}, "blob"}; }

result<blob_catalog> blob_catalog::open(const table_service_client& svc, std::string name, catalog_options opts) {
  auto c = catalog::create(svc, std::move(name), schema(), std::move(opts));
  if (!c)
    return std::unexpected(c.error());
  return blob_catalog(std::move(*c));
}

result<blob_catalog> blob_catalog::open_existing(const table_service_client& svc, std::string name,
                                                 catalog_options opts) {
  auto c = catalog::open(svc, std::move(name), schema(), std::move(opts));
  if (!c)
    return std::unexpected(c.error());
  return blob_catalog(std::move(*c));
}

result<void> blob_catalog::validate(const blob_catalog_entry& e) {
  if (e.blob.empty())
    return std::unexpected(error::invalid("blob catalog entry: empty blob name"));
  if (e.dest.empty())
    return std::unexpected(error::invalid("blob catalog entry " + e.blob + ": empty dest"));
  if (e.host.empty())
    return std::unexpected(error::invalid("blob catalog entry " + e.blob + ": empty host"));
  if (!is_date(e.date))
    return std::unexpected(error::invalid("blob catalog entry " + e.blob + ": date '" + e.date +
                                          "' is not YYYY-MM-DD"));
  return {};
}

catalog_fields blob_catalog::to_fields(const blob_catalog_entry& e) {
  catalog_fields f{{"blob", e.blob},
                   {"dest", e.dest},
                   {"date", e.date},
                   {"host", e.host},
                   {"format", e.format},
                   {"record_count", std::to_string(e.record_count)}};
  if (!e.container.empty())
    f.emplace("container", e.container);
  return f;
}

result<blob_catalog_entry> blob_catalog::from_fields(const catalog_fields& f) {
  blob_catalog_entry e;
  auto get = [&f](std::string_view k) -> std::string {
    auto it = f.find(k);
    return it == f.end() ? std::string{} : it->second;
  };
  e.blob = get("blob");
  e.dest = get("dest");
  e.date = get("date");
  e.host = get("host");
  e.format = get("format");
  e.container = get("container");
  const std::string n = get("record_count");
  if (!n.empty()) {
    auto [p, ec] = std::from_chars(n.data(), n.data() + n.size(), e.record_count);
    if (ec != std::errc{} || p != n.data() + n.size())
      return std::unexpected(error{errc::bad_response, 0, {}, {}, false, 0,
                                   "blob catalog entry " + e.blob + ": record_count '" + n + "' is not a number"});
  }
  if (e.blob.empty())
    return std::unexpected(error{errc::bad_response, 0, {}, {}, false, 0, "blob catalog entry without a blob name"});
  return e;
}

result<catalog_query> blob_catalog::to_query(const blob_catalog_query& q) {
  catalog_query out;
  if (q.dest)
    out.where.emplace_back("dest", *q.dest);
  if (q.date)
    out.where.emplace_back("date", *q.date);
  if (q.host)
    out.where.emplace_back("host", *q.host);
  if (out.where.empty())
    return std::unexpected(error::invalid("a blob catalog query needs --dest, --date or --host"));
  out.row_key_prefix = q.blob_prefix;
  out.row_key_ge = q.blob_ge;
  out.row_key_lt = q.blob_lt;
  out.limit = q.limit;
  return out;
}

result<catalog_write_result> blob_catalog::register_blob(const blob_catalog_entry& e) const {
  if (auto ok = validate(e); !ok)
    return std::unexpected(ok.error());
  return catalog_.insert(to_fields(e));
}

result<std::vector<catalog_write_result>>
blob_catalog::register_blobs(std::span<const blob_catalog_entry> entries) const {
  std::vector<catalog_fields> fields;
  fields.reserve(entries.size());
  for (const auto& e : entries) {
    if (auto ok = validate(e); !ok)
      return std::unexpected(ok.error());
    fields.push_back(to_fields(e));
  }
  return catalog_.insert_many(fields);
}

result<catalog_write_result> blob_catalog::unregister_blob(const blob_catalog_entry& e) const {
  if (auto ok = validate(e); !ok)
    return std::unexpected(ok.error());
  return catalog_.remove(to_fields(e));
}

result<std::vector<blob_catalog_entry>> blob_catalog::find(const blob_catalog_query& q) const {
  auto cq = to_query(q);
  if (!cq)
    return std::unexpected(cq.error());
  auto recs = catalog_.query(*cq);
  if (!recs)
    return std::unexpected(recs.error());
  std::vector<blob_catalog_entry> out;
  out.reserve(recs->size());
  for (const auto& r : *recs) {
    auto e = from_fields(r.fields);
    if (!e)
      return std::unexpected(e.error());
    e->seq = r.seq;
    out.push_back(std::move(*e));
  }
  return out;
}

} // namespace shoal::storage
