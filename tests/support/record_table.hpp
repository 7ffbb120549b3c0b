#pragma once
// Typed records (the azure-table-tracker seed's record classes): a C++ struct mapped to and
// from a table entity, its table and partition named once in a record_schema specialisation,
// with create/read/update/delete and a query of the records still unprocessed.
//
//   struct tracked_file { std::string path; std::int64_t size = 0; bool processed = false; };
//   template <> struct shoal::workers::record_schema<tracked_file> {
//     static constexpr std::string_view table = "trackedfiles";
//     static constexpr std::string_view partition = "files";
//     static constexpr auto key = &tracked_file::path;            // → RowKey (escaped)
//     static constexpr std::string_view processed_field = "processed";
//     static constexpr auto fields = std::make_tuple(field("size", &tracked_file::size),
//                                                    field("processed", &tracked_file::processed));
//   };
//   auto files = record_table<tracked_file>::make(service);       // then files->create(f) ...
//
// Field types: std::string, std::int32_t, std::int64_t, double, bool, storage::table_time,
// std::chrono::system_clock::time_point, and std::optional of any of these (nullopt = property
// omitted). Header-only (templates); thread-safe like table_client.

#include "storage/table_client.hpp"
#include "workers/error.hpp"
#include "workers/claim/key_escape.hpp"

#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace shoal::workers {

/// One mapped field: entity property `name` ↔ member `member` of T.
template <class T, class M> struct field_def {
  std::string_view name; ///< property name (a C# identifier)
  M T::*member;          ///< the member it maps to
};

/// Declares a mapped field, e.g. `field("size", &tracked_file::size)`.
template <class T, class M> constexpr field_def<T, M> field(std::string_view name, M T::*member) {
  return {name, member};
}

/// Specialise for each record type: `table`, `partition`, `key` (pointer to a std::string
/// member, the record id), `fields` (a tuple of field(...)) and optionally `processed_field`
/// (the name of a bool field that unprocessed() filters on; default "processed").
template <class T> struct record_schema;

/// A record with the ETag it was read with.
template <class T> struct versioned {
  T value;
  std::string etag; ///< pass to update/remove for optimistic concurrency
};

namespace detail {

template <class X> struct is_optional : std::false_type {};
template <class X> struct is_optional<std::optional<X>> : std::true_type {};

template <class M> storage::table_value to_value(const M& v) {
  if constexpr (std::is_same_v<M, std::chrono::system_clock::time_point>) return storage::to_table_time(v);
  else if constexpr (std::is_same_v<M, int>) return static_cast<std::int32_t>(v);
  else return storage::table_value(v);
}

template <class M> bool from_value(const storage::table_value& v, M& out) {
  if constexpr (std::is_same_v<M, std::chrono::system_clock::time_point>) {
    if (auto* t = std::get_if<storage::table_time>(&v)) {
      out = std::chrono::system_clock::time_point(
          std::chrono::duration_cast<std::chrono::system_clock::duration>(t->time_since_epoch()));
      return true;
    }
    return false;
  } else if constexpr (std::is_same_v<M, std::int64_t>) {
    if (auto* i = std::get_if<std::int64_t>(&v)) { out = *i; return true; }
    if (auto* i = std::get_if<std::int32_t>(&v)) { out = *i; return true; }
    return false;
  } else if constexpr (std::is_same_v<M, double>) {
    if (auto* d = std::get_if<double>(&v)) { out = *d; return true; }
    if (auto* i = std::get_if<std::int32_t>(&v)) { out = *i; return true; }
    if (auto* i = std::get_if<std::int64_t>(&v)) { out = static_cast<double>(*i); return true; }
    return false;
  } else {
    if (auto* x = std::get_if<M>(&v)) { out = *x; return true; }
    return false;
  }
}

} // namespace detail

/// The entity of `r` (PartitionKey = schema partition, RowKey = escaped key, one property per
/// field). Errors: invalid_argument / limit_exceeded (a key that cannot be escaped).
template <class T> result<storage::table_entity> to_entity(const T& r) {
  using S = record_schema<T>;
  auto rk = escape_key(r.*(S::key));
  if (!rk) return std::unexpected(rk.error());
  storage::table_entity e;
  e.partition_key = std::string(S::partition);
  e.row_key = std::move(*rk);
  std::apply([&](const auto&... f) {
    auto put = [&](const auto& fd) {
      const auto& v = r.*(fd.member);
      using M = std::remove_cvref_t<decltype(v)>;
      if constexpr (detail::is_optional<M>::value) {
        if (v) e.set(std::string(fd.name), detail::to_value(*v));
      } else {
        e.set(std::string(fd.name), detail::to_value(v));
      }
    };
    (put(f), ...);
  }, S::fields);
  return e;
}

/// The record an entity holds. Missing properties keep T's default; a property of the wrong
/// type is an error. Errors: parse (bad key escape or property type).
template <class T> result<T> from_entity(const storage::table_entity& e) {
  using S = record_schema<T>;
  T r{};
  auto id = unescape_key(e.row_key);
  if (!id) return std::unexpected(id.error());
  r.*(S::key) = std::move(*id);
  std::optional<error> bad;
  std::apply([&](const auto&... f) {
    auto get = [&](const auto& fd) {
      const auto* v = e.find(fd.name);
      if (!v) return;
      auto& dst = r.*(fd.member);
      using M = std::remove_cvref_t<decltype(dst)>;
      bool ok;
      if constexpr (detail::is_optional<M>::value) {
        typename M::value_type x{};
        ok = detail::from_value(*v, x);
        if (ok) dst = std::move(x);
      } else {
        ok = detail::from_value(*v, dst);
      }
      if (!ok && !bad)
        bad = error{errc::parse, "property '" + std::string(fd.name) + "' of " + e.row_key + " has an unexpected type",
                    storage::errc::invalid_argument, 0};
    };
    (get(f), ...);
  }, S::fields);
  if (bad) return std::unexpected(*bad);
  return r;
}

/// CRUD on the table of record type T. Thread-safe; cheap to copy.
template <class T> class record_table {
  using S = record_schema<T>;

public:
  /// A table of T over `svc`. Errors: invalid_argument (bad table name in the schema).
  [[nodiscard]] static result<record_table> make(const storage::table_service_client& svc) {
    auto t = svc.table(std::string(S::table));
    if (!t) return std::unexpected(error::from_storage(t.error(), "record table"));
    return record_table(std::move(*t));
  }
  /// Over an existing table client (its name overrides the schema's; tests use unique names).
  explicit record_table(storage::table_client t) : table_(std::move(t)) {}

  /// Creates the table unless it exists. Errors: storage.
  [[nodiscard]] result<void> create_table_if_missing() const {
    if (auto r = table_.create_table_if_not_exists(); !r) return std::unexpected(error::from_storage(r.error(), "creating " + table_.name()));
    return {};
  }
  /// Inserts `r`; returns its ETag. Errors: conflict (a record with this key exists), storage.
  [[nodiscard]] result<std::string> create(const T& r) const {
    auto e = to_entity(r);
    if (!e) return std::unexpected(e.error());
    auto w = table_.insert(*e);
    if (!w) return std::unexpected(map(w.error(), "creating", r.*(S::key)));
    return w->etag;
  }
  /// Reads the record with key `key`. Errors: not_found, parse, storage.
  [[nodiscard]] result<versioned<T>> read(std::string_view key) const {
    auto rk = escape_key(key);
    if (!rk) return std::unexpected(rk.error());
    auto e = table_.get(S::partition, *rk);
    if (!e) return std::unexpected(map(e.error(), "reading", key));
    auto v = from_entity<T>(*e);
    if (!v) return std::unexpected(v.error());
    return versioned<T>{std::move(*v), e->etag};
  }
  /// Replaces the stored record if its ETag is `etag` ("*" = any); returns the new ETag.
  /// Errors: conflict (412: changed since read), not_found, storage.
  [[nodiscard]] result<std::string> update(const T& r, std::string_view etag = "*") const {
    auto e = to_entity(r);
    if (!e) return std::unexpected(e.error());
    auto w = table_.update(*e, etag);
    if (!w) return std::unexpected(map(w.error(), "updating", r.*(S::key)));
    return w->etag;
  }
  /// Creates or replaces `r`; returns the new ETag. Errors: storage.
  [[nodiscard]] result<std::string> upsert(const T& r) const {
    auto e = to_entity(r);
    if (!e) return std::unexpected(e.error());
    auto w = table_.insert_or_replace(*e);
    if (!w) return std::unexpected(map(w.error(), "upserting", r.*(S::key)));
    return w->etag;
  }
  /// Deletes the record if its ETag is `etag` ("*" = any). Errors: not_found, conflict, storage.
  [[nodiscard]] result<void> remove(std::string_view key, std::string_view etag = "*") const {
    auto rk = escape_key(key);
    if (!rk) return std::unexpected(rk.error());
    auto w = table_.delete_entity(S::partition, *rk, etag);
    if (!w) return std::unexpected(map(w.error(), "deleting", key));
    return {};
  }
  /// Records of the partition matching `filter` (and the partition), at most `max`.
  [[nodiscard]] result<std::vector<versioned<T>>> query(const storage::table_filter& filter,
                                                        std::size_t max = std::numeric_limits<std::size_t>::max()) const {
    storage::table_query q;
    q.filter = storage::table_filter::partition(S::partition) && filter;
    if (max != std::numeric_limits<std::size_t>::max()) q.max_entities = max;
    std::vector<versioned<T>> out;
    std::optional<error> bad;
    auto n = table_.for_each(q, [&](const storage::table_entity& e) {
      auto v = from_entity<T>(e);
      if (!v) { bad = v.error(); return false; }
      out.push_back({std::move(*v), e.etag});
      return true;
    });
    if (!n) return std::unexpected(error::from_storage(n.error(), "querying " + table_.name()));
    if (bad) return std::unexpected(*bad);
    return out;
  }
  /// Records whose processed field is not true, at most `max` (to_entity always writes it; on
  /// Azure a record without the property does not match).
  [[nodiscard]] result<std::vector<versioned<T>>> unprocessed(std::size_t max = std::numeric_limits<std::size_t>::max()) const {
    return query(storage::table_filter::ne(processed_field(), true), max);
  }
  /// The table client.
  const storage::table_client& table() const noexcept { return table_; }

private:
  static std::string_view processed_field() {
    if constexpr (requires { S::processed_field; }) return S::processed_field;
    else return "processed";
  }
  static error map(const storage::error& e, std::string_view what, std::string_view key) {
    error out = error::from_storage(e, std::string(what) + " record '" + std::string(key) + "'");
    if (e.code == storage::errc::not_found) out.code = errc::not_found;
    if (e.code == storage::errc::conflict || e.code == storage::errc::precondition_failed) out.code = errc::conflict;
    return out;
  }
  storage::table_client table_;
};

} // namespace shoal::workers
