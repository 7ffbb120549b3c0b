// The catalog's schema, key helpers and open/create/drop (catalog.hpp has the layout and the
// write/recovery protocol, CATALOG.md the reasoning; the other pieces are storage/catalog_*.cpp).

#include "storage/catalog.hpp"

#include "storage/catalog_internal.hpp"
#include "storage/key_escape.hpp"

#include <cstdio>
#include <set>
#include <utility>

namespace shoal::storage {

using namespace catalog_detail;

// -- schema ---------------------------------------------------------------------------------------

result<void> catalog_schema::validate() const {
  auto field_ok = [](const std::string& f, std::string_view what) -> result<void> {
    if (auto ok = validate_property_name(f); !ok)
      return std::unexpected(error::invalid(std::string(what) + " '" + f + "': " + ok.error().message));
    if (f[0] == '_')
      return std::unexpected(error::invalid(std::string(what) + " '" + f +
                                            "' starts with '_', which the catalog reserves"));
    if (f.find(',') != std::string::npos)
      return std::unexpected(error::invalid(std::string(what) + " '" + f + "' holds a comma"));
    return {};
  };
  if (index_keys.empty() || index_keys.size() > max_index_keys)
    return std::unexpected(error::invalid("a catalog schema needs 1 to 16 index keys"));
  std::set<std::string, std::less<>> seen;
  for (const auto& k : index_keys) {
    if (auto ok = field_ok(k, "index key"); !ok)
      return ok;
    if (!seen.insert(k).second)
      return std::unexpected(error::invalid("index key '" + k + "' is listed twice"));
  }
  if (auto ok = field_ok(row_key, "row key"); !ok)
    return ok;
  if (seen.contains(row_key))
    return std::unexpected(error::invalid("row key '" + row_key + "' must not also be an index key"));
  return {};
}

std::string catalog_schema::describe() const {
  return "index keys [" + join(index_keys, ", ") + "], row key '" + row_key + "'";
}

// -- key helpers ----------------------------------------------------------------------------------

std::string catalog::escape_key(std::string_view raw) { return escape_table_key(raw); }

std::string catalog::partition_key(std::string_view field, std::string_view value) {
  return std::to_string(field.size()) + "_" + std::string(field) + escape_key(value);
}

std::string catalog::fingerprint(const catalog_schema& schema, const catalog_fields& record) {
  // FNV-1a 64 over "len:value;" per index key in schema order (length-prefixed, so
  // ("a;", "b") and ("a", ";b") differ).
  std::uint64_t h = 14695981039346656037ull;
  auto feed = [&h](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  for (const auto& k : schema.index_keys) {
    auto it = record.find(k);
    std::string_view v = it == record.end() ? std::string_view{} : std::string_view(it->second);
    feed(std::to_string(v.size()));
    feed(":");
    feed(v);
    feed(";");
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string catalog::row_key(const catalog_schema& schema, const catalog_fields& record) {
  auto it = record.find(schema.row_key);
  return escape_key(it == record.end() ? std::string_view{} : std::string_view(it->second)) + ":" +
         fingerprint(schema, record);
}

// -- open / create / drop -------------------------------------------------------------------------

catalog::catalog(std::string name, catalog_schema schema, catalog_options opts, table_client index,
                 table_client wal)
    : name_(std::move(name)), schema_(std::move(schema)), opts_(std::move(opts)), index_(std::move(index)),
      wal_(std::move(wal)) {
  if (opts_.writer_id.empty())
    opts_.writer_id = default_writer_id();
}

result<catalog> catalog::create(const table_service_client& svc, std::string name, catalog_schema schema,
                                catalog_options opts) {
  if (!valid_catalog_name(name))
    return std::unexpected(error::invalid("catalog name '" + name +
                                          "' must be 3 to 60 letters or digits starting with a letter"));
  if (auto ok = schema.validate(); !ok)
    return std::unexpected(ok.error());
  auto index = svc.table(index_table_name(name));
  auto wal = svc.table(wal_table_name(name));
  if (!index)
    return std::unexpected(index.error());
  if (!wal)
    return std::unexpected(wal.error());
  if (auto r = index->create_table_if_not_exists(); !r)
    return std::unexpected(with_context(r.error(), "creating table " + index->name()));
  if (auto r = wal->create_table_if_not_exists(); !r)
    return std::unexpected(with_context(r.error(), "creating table " + wal->name()));
  // Counter and checkpoint first, the schema row last: a catalog whose schema row exists is
  // complete, so a concurrent open never sees a half-created one.
  for (auto rk : {counter_rk, checkpoint_rk})
    if (auto r = wal->insert(seq_row(rk, 0)); !r && r.error().code != errc::conflict)
      return std::unexpected(with_context(r.error(), "creating the " + std::string(rk) + " row"));
  table_entity s;
  s.partition_key = meta_pk;
  s.row_key = schema_rk;
  s.set("index_keys", join(schema.index_keys, ","));
  s.set("row_key", schema.row_key);
  s.set("layout", layout_version);
  if (auto r = index->insert(s); !r && r.error().code != errc::conflict)
    return std::unexpected(with_context(r.error(), "storing the catalog schema"));
  return open(svc, std::move(name), std::move(schema), std::move(opts));
}

result<catalog> catalog::open(const table_service_client& svc, std::string name,
                              std::optional<catalog_schema> expected, catalog_options opts) {
  if (!valid_catalog_name(name))
    return std::unexpected(error::invalid("catalog name '" + name +
                                          "' must be 3 to 60 letters or digits starting with a letter"));
  if (expected)
    if (auto ok = expected->validate(); !ok)
      return std::unexpected(ok.error());
  auto index = svc.table(index_table_name(name));
  auto wal = svc.table(wal_table_name(name));
  if (!index)
    return std::unexpected(index.error());
  if (!wal)
    return std::unexpected(wal.error());
  auto row = index->get(meta_pk, schema_rk);
  if (!row) {
    if (row.error().code == errc::not_found)
      return std::unexpected(make_error(errc::not_found, "catalog '" + name +
                                                             "' does not exist (no schema row in table " +
                                                             index->name() + "); create it first"));
    return std::unexpected(with_context(row.error(), "reading the schema of catalog '" + name + "'"));
  }
  const auto* keys = row->get<std::string>("index_keys");
  const auto* rk = row->get<std::string>("row_key");
  if (!keys || !rk)
    return std::unexpected(make_error(errc::bad_response, "the schema row of catalog '" + name + "' is damaged"));
  if (auto layout = int_prop(*row, "layout"); layout != static_cast<std::uint64_t>(layout_version))
    return std::unexpected(make_error(errc::conflict,
                                      "catalog '" + name + "' has layout version " + std::to_string(layout) +
                                          "; this client understands version " + std::to_string(layout_version),
                                      std::string(catalog_schema_mismatch)));
  catalog_schema stored{split(*keys, ','), *rk};
  if (expected && *expected != stored)
    return std::unexpected(make_error(errc::conflict,
                                      "catalog '" + name + "' was created with " + stored.describe() +
                                          ", but this client is configured with " + expected->describe() +
                                          "; refusing to open it (writes would corrupt the index)",
                                      std::string(catalog_schema_mismatch)));
  catalog c(std::move(name), std::move(stored), std::move(opts), std::move(*index), std::move(*wal));
  if (c.opts_.recover_on_open)
    if (auto r = c.recover(); !r)
      return std::unexpected(with_context(r.error(), "recovering catalog '" + c.name_ + "' on open"));
  return c;
}

result<void> catalog::drop(const table_service_client& svc, std::string_view name) {
  if (!valid_catalog_name(name))
    return std::unexpected(error::invalid("catalog name '" + std::string(name) + "' is not valid"));
  for (const auto& t : {index_table_name(name), wal_table_name(name)})
    if (auto r = svc.delete_table(t); !r && r.error().code != errc::not_found)
      return std::unexpected(r.error());
  return {};
}

} // namespace shoal::storage
