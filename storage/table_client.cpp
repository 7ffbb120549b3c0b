// The Table service client (see table_client.hpp for the contract and the REST pages followed).

#include "storage/table_client.hpp"

#include "storage/encoding.hpp"
#include "storage/table_batch.hpp"
#include "storage/table_detail.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <random>
#include <set>

namespace shoal::storage {

namespace {

using json = nlohmann::json;
using clock_type = std::chrono::system_clock;

constexpr std::string_view accept_minimal = "application/json;odata=minimalmetadata";

// Headers every Table request carries (reference §2d). x-ms-date, x-ms-version and
// Authorization are the pipeline's.
void add_common_headers(storage_request& req) {
  req.headers.reserve(req.headers.size() + 4);
  req.headers.emplace_back("Accept", std::string(accept_minimal));
  req.headers.emplace_back("DataServiceVersion", "3.0;NetFx");
  req.headers.emplace_back("MaxDataServiceVersion", "3.0;NetFx");
}

storage_request make_request(http_method m, std::string path) {
  storage_request req;
  req.method = m;
  req.path = std::move(path);
  add_common_headers(req);
  return req;
}

void set_json_body(storage_request& req, std::string body) {
  req.headers.emplace_back("Content-Type", "application/json");
  req.body = std::move(body);
}

// The response `Date` (the storage server's clock); the epoch if it is missing or malformed.
clock_type::time_point server_time_of(const http_response& r) {
  if (auto d = r.header("date"))
    if (auto t = parse_http_date(*d))
      return *t;
  return {};
}

table_write_result write_result_of(const http_response& r) {
  table_write_result out;
  if (auto e = r.header("etag"))
    out.etag = std::string(*e);
  out.server_time = server_time_of(r);
  return out;
}

std::string random_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(32, '0');
  std::uint64_t a = rng(), b = rng();
  for (int i = 0; i < 16; ++i) {
    out[i] = hex[(a >> (i * 4)) & 0xF];
    out[16 + i] = hex[(b >> (i * 4)) & 0xF];
  }
  return out;
}

std::string join_select(const std::vector<std::string>& select) {
  std::string out;
  for (const auto& s : select) {
    if (!out.empty())
      out += ',';
    out += s;
  }
  return out;
}

result<void> validate_select(const std::vector<std::string>& select) {
  for (const auto& s : select)
    if (s != "PartitionKey" && s != "RowKey" && s != "Timestamp")
      if (auto r = validate_property_name(s); !r)
        return std::unexpected(error::invalid("$select: " + r.error().message));
  return {};
}

// GET of entity (pk, rk) of `table` (`select` empty = all properties), with the response Date.
result<std::pair<table_entity, clock_type::time_point>> read_entity(const pipeline& p, std::string_view table,
                                                                    std::string_view pk, std::string_view rk,
                                                                    const std::vector<std::string>& select) {
  if (auto v = validate_key(pk, "PartitionKey"); !v)
    return std::unexpected(v.error());
  if (auto v = validate_key(rk, "RowKey"); !v)
    return std::unexpected(v.error());
  if (auto v = validate_select(select); !v)
    return std::unexpected(v.error());
  storage_request req = make_request(http_method::get, detail::entity_path(table, pk, rk));
  if (!select.empty())
    req.query.emplace_back("$select", join_select(select));
  auto r = p.send(service::table, req);
  if (!r)
    return std::unexpected(r.error());
  auto e = entity_from_json(r->body);
  if (!e)
    return std::unexpected(e.error());
  if (auto tag = r->header("etag"))
    e->etag = std::string(*tag);
  return std::pair{std::move(*e), server_time_of(*r)};
}

} // namespace

// -- table_client ---------------------------------------------------------------------------------

table_client::table_client(pipeline p, std::string name) : pipeline_(std::move(p)), name_(std::move(name)) {}

result<table_client> table_client::make(pipeline p, std::string table_name) {
  if (auto r = validate_table_name(table_name); !r)
    return std::unexpected(r.error());
  return table_client(std::move(p), std::move(table_name));
}

std::string table_client::entity_path(std::string_view pk, std::string_view rk) const {
  return detail::entity_path(name_, pk, rk);
}

result<void> table_client::create_table() const {
  storage_request req = make_request(http_method::post, "/Tables");
  req.headers.emplace_back("Prefer", "return-no-content");
  json body = {{"TableName", name_}};
  set_json_body(req, body.dump());
  auto r = pipeline_.send(service::table, req);
  if (!r)
    return std::unexpected(r.error());
  return {};
}

result<bool> table_client::create_table_if_not_exists() const {
  auto r = create_table();
  if (r)
    return true;
  if (r.error().code == errc::conflict &&
      (r.error().service_code == "TableAlreadyExists" || r.error().service_code.empty()))
    return false;
  return std::unexpected(r.error());
}

result<void> table_client::delete_table() const {
  storage_request req = make_request(http_method::del, "/Tables('" + name_ + "')");
  auto r = pipeline_.send(service::table, req);
  if (!r)
    return std::unexpected(r.error());
  return {};
}

// -- single entities ------------------------------------------------------------------------------

result<table_write_result> table_client::insert(const table_entity& e) const {
  if (auto v = validate_entity(e); !v)
    return std::unexpected(v.error());
  storage_request req = make_request(http_method::post, "/" + name_);
  req.headers.emplace_back("Prefer", "return-no-content");
  set_json_body(req, entity_to_json(e));
  auto r = pipeline_.send(service::table, req);
  if (r)
    return write_result_of(*r);
  const error& err = r.error();
  if (err.code != errc::conflict || err.attempts <= 1 ||
      !(err.service_code == "EntityAlreadyExists" || err.service_code.empty()))
    return std::unexpected(err);
  // An earlier attempt of this insert may have landed: the entity is ours if it holds our content.
  auto stored = get_with_server_time(e.partition_key, e.row_key);
  if (stored && same_content(stored->first, e))
    return table_write_result{stored->first.etag, stored->second};
  error out = err;
  out.message = stored ? "the entity already exists and differs from this insert (checked after a retried "
                         "insert got 409: an earlier attempt did not write it)"
                       : "the entity already exists (409 after a retried insert); reading it back to compare "
                         "failed: " + stored.error().describe();
  return std::unexpected(out);
}

result<std::pair<table_entity, std::chrono::system_clock::time_point>>
table_client::get_with_server_time(std::string_view pk, std::string_view rk) const {
  return read_entity(pipeline_, name_, pk, rk, {});
}

result<table_entity> table_client::get(std::string_view pk, std::string_view rk,
                                       const std::vector<std::string>& select) const {
  auto r = read_entity(pipeline_, name_, pk, rk, select);
  if (!r)
    return std::unexpected(r.error());
  return std::move(r->first);
}

result<table_write_result> table_client::write_entity(http_method method, const table_entity& e,
                                                      std::string_view if_match) const {
  if (auto v = validate_entity(e); !v)
    return std::unexpected(v.error());
  storage_request req = make_request(method, entity_path(e.partition_key, e.row_key));
  if (!if_match.empty())
    req.headers.emplace_back("If-Match", std::string(if_match));
  set_json_body(req, entity_to_json(e));
  auto r = pipeline_.send(service::table, req);
  if (r)
    return write_result_of(*r);
  const error& err = r.error();
  if (if_match.empty() || err.code != errc::precondition_failed || err.attempts <= 1)
    return std::unexpected(err);
  // A retried conditional write got 412: maybe because our own earlier attempt changed the ETag.
  auto stored = get_with_server_time(e.partition_key, e.row_key);
  bool ours = stored && (method == http_method::put ? same_content(stored->first, e)
                                                    : contains_content(stored->first, e));
  if (ours)
    return table_write_result{stored->first.etag, stored->second};
  error out = err;
  out.message = stored ? "the ETag no longer matches and the stored entity does not hold this write's "
                         "content (checked after a retried conditional write got 412)"
                       : "412 after a retried conditional write; reading the entity back to compare failed: " +
                             stored.error().describe();
  return std::unexpected(out);
}

result<table_write_result> table_client::insert_or_replace(const table_entity& e) const {
  return write_entity(http_method::put, e, {});
}

result<table_write_result> table_client::insert_or_merge(const table_entity& e) const {
  return write_entity(http_method::merge, e, {});
}

result<table_write_result> table_client::update(const table_entity& e, std::string_view if_match) const {
  if (if_match.empty())
    return std::unexpected(error::invalid("update needs an If-Match ETag (or \"*\"); use insert_or_replace "
                                          "for an unconditional write"));
  return write_entity(http_method::put, e, if_match);
}

result<table_write_result> table_client::merge(const table_entity& e, std::string_view if_match) const {
  if (if_match.empty())
    return std::unexpected(error::invalid("merge needs an If-Match ETag (or \"*\"); use insert_or_merge "
                                          "for an unconditional write"));
  return write_entity(http_method::merge, e, if_match);
}

result<table_write_result> table_client::delete_entity(std::string_view pk, std::string_view rk,
                                                       std::string_view if_match) const {
  if (auto v = validate_key(pk, "PartitionKey"); !v)
    return std::unexpected(v.error());
  if (auto v = validate_key(rk, "RowKey"); !v)
    return std::unexpected(v.error());
  if (if_match.empty())
    return std::unexpected(error::invalid("delete_entity needs an If-Match ETag (or \"*\")"));
  storage_request req = make_request(http_method::del, entity_path(pk, rk));
  req.headers.emplace_back("If-Match", std::string(if_match));
  auto r = pipeline_.send(service::table, req);
  if (r)
    return table_write_result{{}, server_time_of(*r)};
  // 404 on a retry: the earlier attempt deleted it. The Date of that attempt is gone; the
  // error carries none, so the time is unknown (epoch).
  if (r.error().code == errc::not_found && r.error().attempts > 1)
    return table_write_result{};
  return std::unexpected(r.error());
}

// -- queries --------------------------------------------------------------------------------------

result<table_query_page> table_client::query_page(const table_query& q,
                                                  const std::optional<table_continuation>& from) const {
  if (auto v = q.filter.validate(); !v)
    return std::unexpected(v.error());
  if (q.page_size < 1 || q.page_size > table_limits::max_page_size)
    return std::unexpected(error::invalid("page_size " + std::to_string(q.page_size) +
                                          " is outside 1..1000 (the service's per-page maximum)"));
  if (auto v = validate_select(q.select); !v)
    return std::unexpected(v.error());
  storage_request req = make_request(http_method::get, "/" + name_ + "()");
  if (!q.filter.empty())
    req.query.emplace_back("$filter", q.filter.str());
  if (!q.select.empty())
    req.query.emplace_back("$select", join_select(q.select));
  req.query.emplace_back("$top", std::to_string(q.page_size));
  if (from) {
    req.query.emplace_back("NextPartitionKey", from->next_partition_key);
    if (!from->next_row_key.empty())
      req.query.emplace_back("NextRowKey", from->next_row_key);
  }
  auto r = pipeline_.send(service::table, req);
  if (!r)
    return std::unexpected(r.error());
  table_query_page page;
  page.server_time = server_time_of(*r);
  try {
    json j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return std::unexpected(error::malformed_response("query response is not a JSON object"));
    auto value = j.find("value");
    if (value == j.end() || !value->is_array())
      return std::unexpected(error::malformed_response("query response has no \"value\" array"));
    page.entities.reserve(value->size());
    for (const json& item : *value) {
      auto e = detail::entity_from_json_object(item);
      if (!e)
        return std::unexpected(e.error());
      page.entities.push_back(std::move(*e));
    }
  } catch (const std::exception& ex) {
    return std::unexpected(error::malformed_response(std::string("query response: ") + ex.what()));
  }
  auto npk = r->header("x-ms-continuation-nextpartitionkey");
  auto nrk = r->header("x-ms-continuation-nextrowkey");
  if ((npk && !npk->empty()) || (nrk && !nrk->empty()))
    page.continuation = table_continuation{std::string(npk.value_or("")), std::string(nrk.value_or(""))};
  return page;
}

table_pager::table_pager(const table_client& client, table_query query)
    : client_(std::make_shared<const table_client>(client)), query_(std::move(query)) {}

result<std::optional<table_query_page>> table_pager::next() {
  while (!done_) {
    if (query_.max_entities && returned_ >= *query_.max_entities) {
      done_ = true;
      break;
    }
    table_query q = query_;
    if (q.max_entities)
      q.page_size = static_cast<int>(std::min<std::size_t>(q.page_size, *q.max_entities - returned_));
    auto page = client_->query_page(q, next_);
    if (!page)
      return std::unexpected(page.error());
    next_ = page->continuation;
    if (!next_)
      done_ = true;
    if (page->entities.empty())
      continue; // an empty page with a continuation: keep going
    returned_ += page->entities.size();
    return std::optional<table_query_page>(std::move(*page));
  }
  return std::optional<table_query_page>{};
}

table_pager table_client::query(table_query q) const { return table_pager(*this, std::move(q)); }

result<std::size_t> table_client::for_each(const table_query& q,
                                           const std::function<bool(const table_entity&)>& fn) const {
  table_pager pager = query(q);
  std::size_t seen = 0;
  for (;;) {
    auto page = pager.next();
    if (!page)
      return std::unexpected(page.error());
    if (!*page)
      return seen;
    for (const table_entity& e : (*page)->entities) {
      ++seen;
      if (!fn(e))
        return seen;
    }
  }
}

result<std::vector<table_entity>> table_client::query_all(const table_query& q) const {
  std::vector<table_entity> out;
  table_pager pager = query(q);
  for (;;) {
    auto page = pager.next();
    if (!page)
      return std::unexpected(page.error());
    if (!*page)
      return out;
    if (out.empty())
      out = std::move((*page)->entities);
    else
      std::move((*page)->entities.begin(), (*page)->entities.end(), std::back_inserter(out));
  }
}

// -- transactions ---------------------------------------------------------------------------------

table_transaction& table_transaction::add(table_operation_kind kind, table_entity e, std::string if_match) {
  ops_.push_back(table_operation{kind, std::move(e), std::move(if_match)});
  return *this;
}

table_transaction& table_transaction::delete_entity(std::string partition_key, std::string row_key,
                                                    std::string if_match) {
  table_entity e;
  e.partition_key = std::move(partition_key);
  e.row_key = std::move(row_key);
  return add(table_operation_kind::delete_entity, std::move(e), std::move(if_match));
}

namespace {

table_transaction_error tx_error(error e, std::optional<std::size_t> index = std::nullopt) {
  table_transaction_error out;
  static_cast<error&>(out) = std::move(e);
  out.failed_index = index;
  return out;
}

std::string_view kind_name(table_operation_kind k) {
  switch (k) {
  case table_operation_kind::insert: return "insert";
  case table_operation_kind::update: return "update";
  case table_operation_kind::merge: return "merge";
  case table_operation_kind::insert_or_replace: return "insert_or_replace";
  case table_operation_kind::insert_or_merge: return "insert_or_merge";
  case table_operation_kind::delete_entity: return "delete";
  }
  return "?";
}

// Whether `ops` are all in effect in storage now, by reading each entity back: the state a
// committed changeset leaves (inserted/replaced entities hold exactly the operation's content,
// merged ones hold at least the patch, deleted ones are gone). Used when a retried transaction
// got 409/412/404 for an operation: the changeset is atomic, so if an earlier attempt committed,
// every operation shows. On success the ETags (from the reads; "" for deletes) and the latest
// read's Date; otherwise why not, for the error message. One GET per operation.
result<table_transaction_result> applied_already(const table_client& table, const std::vector<table_operation>& ops) {
  table_transaction_result out;
  out.etags.reserve(ops.size());
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const table_operation& op = ops[i];
    auto stored = table.get_with_server_time(op.entity.partition_key, op.entity.row_key);
    const std::string which = "operation " + std::to_string(i) + " (" + std::string(kind_name(op.kind)) + " " +
                              op.entity.row_key.substr(0, 60) + ")";
    if (op.kind == table_operation_kind::delete_entity) {
      if (stored)
        return std::unexpected(error::invalid(which + ": the entity still exists"));
      if (stored.error().code != errc::not_found)
        return std::unexpected(stored.error());
      out.etags.emplace_back();
      continue;
    }
    if (!stored) {
      error e = stored.error();
      if (e.code == errc::not_found)
        e.message = which + ": the entity does not exist";
      return std::unexpected(std::move(e));
    }
    const bool merged = op.kind == table_operation_kind::merge || op.kind == table_operation_kind::insert_or_merge;
    if (!(merged ? contains_content(stored->first, op.entity) : same_content(stored->first, op.entity)))
      return std::unexpected(error::invalid(which + ": the stored entity does not hold its content"));
    out.etags.push_back(stored->first.etag);
    out.server_time = std::max(out.server_time, stored->second);
  }
  return out;
}

} // namespace

table_transaction_outcome table_client::submit_transaction(const table_transaction& tx) const {
  const auto& ops = tx.operations();
  if (ops.empty())
    return std::unexpected(tx_error(error::invalid("a transaction needs at least one operation")));
  if (ops.size() > table_limits::max_batch_operations) {
    error e = error::invalid("a transaction holds at most " + std::to_string(table_limits::max_batch_operations) +
                             " operations; this one has " + std::to_string(ops.size()));
    e.code = errc::limit_exceeded;
    return std::unexpected(tx_error(std::move(e), table_limits::max_batch_operations));
  }
  const std::string& pk = ops.front().entity.partition_key;
  std::set<std::string_view> row_keys;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const table_operation& op = ops[i];
    auto where = "operation " + std::to_string(i) + " (" + std::string(kind_name(op.kind)) + "): ";
    if (op.entity.partition_key != pk)
      return std::unexpected(tx_error(
          error::invalid(where + "PartitionKey '" + op.entity.partition_key.substr(0, 60) +
                         "' differs from the transaction's '" + pk.substr(0, 60) +
                         "' (one PartitionKey per transaction)"),
          i));
    if (!row_keys.insert(op.entity.row_key).second)
      return std::unexpected(tx_error(
          error::invalid(where + "RowKey '" + op.entity.row_key.substr(0, 60) +
                         "' appears twice (each entity at most once per transaction)"),
          i));
    result<void> v = op.kind != table_operation_kind::delete_entity ? validate_entity(op.entity)
                     : validate_key(op.entity.partition_key, "PartitionKey");
    if (v && op.kind == table_operation_kind::delete_entity)
      v = validate_key(op.entity.row_key, "RowKey");
    if (v && op.kind != table_operation_kind::insert && op.kind != table_operation_kind::insert_or_replace &&
        op.kind != table_operation_kind::insert_or_merge && op.if_match.empty())
      v = std::unexpected(error::invalid("an empty If-Match (use \"*\" for any ETag)"));
    if (!v) {
      error e = v.error();
      e.message = where + e.message;
      return std::unexpected(tx_error(std::move(e), i));
    }
  }
  detail::batch_body built =
      detail::build_batch_body(pipeline_.endpoint(service::table), name_, ops, random_id(), random_id());
  if (built.body.size() > table_limits::max_batch_bytes) {
    error e = error::invalid("the transaction body is " + std::to_string(built.body.size()) +
                             " bytes; the limit is " + std::to_string(table_limits::max_batch_bytes) + " (4 MiB)");
    e.code = errc::limit_exceeded;
    return std::unexpected(tx_error(std::move(e)));
  }
  storage_request req = make_request(http_method::post, "/$batch");
  req.headers.emplace_back("Content-Type", std::move(built.content_type));
  req.body = std::move(built.body);
  auto r = pipeline_.send(service::table, req);
  if (!r)
    return std::unexpected(tx_error(r.error()));
  auto parts = detail::parse_batch_response(r->header("content-type").value_or(""), r->body);
  if (!parts)
    return std::unexpected(tx_error(parts.error()));
  for (const detail::batch_part& part : *parts) {
    if (part.status >= 200 && part.status < 300)
      continue;
    auto [code, message] = detail::parse_odata_error(part.body);
    if (code.empty())
      if (auto h = part.header("x-ms-error-code"))
        code = std::string(*h);
    error e;
    e.code = errc_from_http(part.status, code);
    e.http_status = part.status;
    e.service_code = code;
    if (auto id = r->header("x-ms-request-id"))
      e.request_id = std::string(*id);
    e.retryable = false;
    e.attempts = r->attempts;
    auto index = detail::failed_operation_index(part);
    if (auto nl = message.find('\n'); nl != std::string::npos)
      message.resize(nl); // drop the RequestId/Time lines
    e.message = "transaction rolled back: " +
                (index && *index < ops.size()
                     ? "operation " + std::to_string(*index) + " (" + std::string(kind_name(ops[*index].kind)) +
                           " " + ops[*index].entity.row_key.substr(0, 60) + ") failed: "
                     : std::string("an operation failed: ")) +
                message;
    if (r->attempts > 1 && (part.status == 404 || part.status == 409 || part.status == 412)) {
      // The request was retried: the rejected operation may have collided with this same
      // transaction's earlier attempt, which committed while its answer was lost.
      auto applied = applied_already(*this, ops);
      if (applied) {
        if (applied->server_time.time_since_epoch().count() == 0)
          applied->server_time = server_time_of(*r);
        return std::move(*applied);
      }
      e.message += " (after " + std::to_string(r->attempts) +
                   " attempts; not an earlier attempt's doing: " + applied.error().message + ")";
    }
    return std::unexpected(tx_error(std::move(e), index));
  }
  if (parts->size() != ops.size())
    return std::unexpected(tx_error(error::malformed_response("batch response has " + std::to_string(parts->size()) +
                                                 " parts for " + std::to_string(ops.size()) + " operations")));
  table_transaction_result out;
  out.server_time = server_time_of(*r);
  out.etags.reserve(ops.size());
  for (const detail::batch_part& part : *parts)
    out.etags.emplace_back(part.header("etag").value_or(""));
  return out;
}

// -- table_service_client -------------------------------------------------------------------------

result<table_service_client> table_service_client::from_connection_string(std::string_view connection_string,
                                                                           pipeline_options opts) {
  auto account = parse_connection_string(connection_string);
  if (!account)
    return std::unexpected(account.error());
  auto p = pipeline::make(std::move(*account), std::move(opts));
  if (!p)
    return std::unexpected(p.error());
  return table_service_client(std::move(*p));
}

result<void> table_service_client::create_table(std::string_view name) const {
  auto t = table(std::string(name));
  if (!t)
    return std::unexpected(t.error());
  return t->create_table();
}

result<bool> table_service_client::create_table_if_not_exists(std::string_view name) const {
  auto t = table(std::string(name));
  if (!t)
    return std::unexpected(t.error());
  return t->create_table_if_not_exists();
}

result<void> table_service_client::delete_table(std::string_view name) const {
  auto t = table(std::string(name));
  if (!t)
    return std::unexpected(t.error());
  return t->delete_table();
}

result<table_list_page> table_service_client::list_tables_page(const list_tables_options& opts,
                                                               const std::optional<std::string>& continuation) const {
  if (opts.page_size < 1 || opts.page_size > table_limits::max_page_size)
    return std::unexpected(error::invalid("page_size " + std::to_string(opts.page_size) + " is outside 1..1000"));
  storage_request req = make_request(http_method::get, "/Tables");
  if (!opts.prefix.empty()) {
    auto f = table_filter::starts_with("TableName", opts.prefix);
    req.query.emplace_back("$filter", f.str());
  }
  req.query.emplace_back("$top", std::to_string(opts.page_size));
  if (continuation)
    req.query.emplace_back("NextTableName", *continuation);
  auto r = pipeline_.send(service::table, req);
  if (!r)
    return std::unexpected(r.error());
  table_list_page page;
  json j = json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("value") || !j["value"].is_array())
    return std::unexpected(error::malformed_response("list tables response has no \"value\" array"));
  for (const json& item : j["value"]) {
    auto n = item.find("TableName");
    if (n == item.end() || !n->is_string())
      return std::unexpected(error::malformed_response("list tables entry has no TableName"));
    page.names.push_back(n->get<std::string>());
  }
  if (auto next = r->header("x-ms-continuation-nexttablename"); next && !next->empty())
    page.next_table_name = std::string(*next);
  return page;
}

result<std::vector<std::string>> table_service_client::list_tables(const list_tables_options& opts) const {
  std::vector<std::string> out;
  std::optional<std::string> next;
  do {
    auto page = list_tables_page(opts, next);
    if (!page)
      return std::unexpected(page.error());
    out.insert(out.end(), page->names.begin(), page->names.end());
    next = page->next_table_name;
  } while (next);
  return out;
}

} // namespace shoal::storage
