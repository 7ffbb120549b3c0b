// The catalog's queries: one partition scan per page, further conditions evaluated by the service.

#include "storage/catalog.hpp"

#include "storage/catalog_internal.hpp"

#include <algorithm>

namespace shoal::storage {

using namespace catalog_detail;

// -- queries --------------------------------------------------------------------------------------

result<catalog_page> catalog::query_page(const catalog_query& q, const std::optional<std::string>& continuation) const {
  if (q.where.empty())
    return std::unexpected(error::invalid("a catalog query needs at least one index key condition"));
  if (q.where.size() > max_conditions)
    return std::unexpected(error::invalid("a catalog query takes at most 8 conditions"));
  if (q.page_size < 1 || q.page_size > table_limits::max_page_size)
    return std::unexpected(error::invalid("page_size must be between 1 and 1000"));
  for (const auto& [k, v] : q.where)
    if (std::find(schema_.index_keys.begin(), schema_.index_keys.end(), k) == schema_.index_keys.end())
      return std::unexpected(error::invalid("'" + k + "' is not an index key of catalog '" + name_ + "' (" +
                                            schema_.describe() + ")"));
  std::optional<table_continuation> from;
  if (continuation) {
    from = decode_continuation(*continuation);
    if (!from)
      return std::unexpected(error::invalid("not a catalog continuation token: '" + *continuation + "'"));
  }
  // One partition scan (the first condition's); the other conditions and the tombstone check
  // run in the service against the record copy each index entity carries.
  table_filter f = table_filter::partition(partition_key(q.where[0].first, q.where[0].second));
  if (q.row_key_ge)
    f = f && table_filter::ge("RowKey", escape_key(*q.row_key_ge));
  if (q.row_key_lt)
    f = f && table_filter::lt("RowKey", escape_key(*q.row_key_lt));
  if (q.row_key_prefix && !q.row_key_prefix->empty())
    f = f && table_filter::starts_with("RowKey", escape_key(*q.row_key_prefix));
  for (std::size_t i = 1; i < q.where.size(); ++i)
    f = f && table_filter::eq(q.where[i].first, q.where[i].second);
  f = f && table_filter::eq(del_prop, false);
  table_query tq;
  tq.filter = f;
  tq.page_size = q.page_size;
  for (;;) {
    auto page = index_.query_page(tq, from);
    if (!page)
      return std::unexpected(page.error());
    catalog_page out;
    for (const auto& e : page->entities)
      out.records.push_back(record_from_index(e));
    if (page->continuation)
      out.continuation = encode_continuation(*page->continuation);
    if (!out.records.empty() || !page->continuation)
      return out;
    from = page->continuation; // an empty page with a continuation: keep going
  }
}

result<std::vector<catalog_record>> catalog::query(const catalog_query& q) const {
  std::vector<catalog_record> out;
  std::optional<std::string> cont;
  do {
    auto page = query_page(q, cont);
    if (!page)
      return std::unexpected(page.error());
    for (auto& r : page->records) {
      if (q.limit && out.size() >= *q.limit)
        return out;
      out.push_back(std::move(r));
    }
    cont = page->continuation;
  } while (cont && !(q.limit && out.size() >= *q.limit));
  return out;
}

} // namespace shoal::storage
