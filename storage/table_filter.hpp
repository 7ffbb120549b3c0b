#pragma once
// A typed $filter builder for Table queries: literals are escaped here, so callers never
// concatenate filter strings. REST pages followed: "Querying tables and entities" (operators,
// literal forms, ≤ 15 comparisons); reference §3 "Query ($filter) grammar".
//
//   auto f = table_filter::eq("status", "pending") &&
//            (table_filter::lt("lease_until", to_table_time(now)) || !table_filter::eq("done", true));
//   f.str() == "(status eq 'pending') and ((lease_until lt datetime'...') or (not (done eq true)))"

#include "storage/error.hpp"
#include "storage/table_entity.hpp"

#include <string>
#include <string_view>

namespace shoal::storage {

/// Comparison operators of the Table query language.
enum class filter_op : std::uint8_t { eq, ne, gt, ge, lt, le };

/// "eq", "ne", "gt", "ge", "lt", "le".
std::string_view to_string(filter_op op) noexcept;

/// An immutable filter expression. Building never fails: a bad property name or a value that
/// has no literal form (NaN, ±Inf) makes the filter invalid, and `validate()` — which every
/// query call runs before sending — reports it. Thread-safe (a value type).
class table_filter {
public:
  /// The empty filter: matches everything (no $filter is sent).
  table_filter() = default;

  // -- comparisons: `property op literal` ------------------------------------------------------
  /// `property op value` with `value` rendered as its typed literal: 'it''s', 42, 42L, 1.5,
  /// true, datetime'2024-01-02T03:04:05.1234567Z', guid'…', X'0a1b'. `property` may also be
  /// PartitionKey, RowKey or Timestamp.
  static table_filter compare(std::string_view property, filter_op op, const table_value& value);
  static table_filter eq(std::string_view p, const table_value& v) { return compare(p, filter_op::eq, v); }
  static table_filter ne(std::string_view p, const table_value& v) { return compare(p, filter_op::ne, v); }
  static table_filter gt(std::string_view p, const table_value& v) { return compare(p, filter_op::gt, v); }
  static table_filter ge(std::string_view p, const table_value& v) { return compare(p, filter_op::ge, v); }
  static table_filter lt(std::string_view p, const table_value& v) { return compare(p, filter_op::lt, v); }
  static table_filter le(std::string_view p, const table_value& v) { return compare(p, filter_op::le, v); }

  /// `PartitionKey eq 'pk'`.
  static table_filter partition(std::string_view pk) { return eq("PartitionKey", std::string(pk)); }
  /// Keys of `column` (usually RowKey) starting with `prefix`: `column ge 'p' and column lt 'p'+1`
  /// (two comparisons; the service has no startswith). An empty prefix matches everything.
  static table_filter starts_with(std::string_view column, std::string_view prefix);

  // -- combinators ---------------------------------------------------------------------------
  /// `(a) and (b)`; an empty side yields the other side.
  friend table_filter operator&&(const table_filter& a, const table_filter& b) { return combine(a, b, " and "); }
  /// `(a) or (b)`; an empty side yields the other side.
  friend table_filter operator||(const table_filter& a, const table_filter& b) { return combine(a, b, " or "); }
  /// `not (a)`; the negation of the empty filter is the empty filter.
  friend table_filter operator!(const table_filter& a);

  // -- results -------------------------------------------------------------------------------
  /// The $filter text (not yet percent-encoded); empty for the empty filter.
  const std::string& str() const noexcept { return text_; }
  /// True for the empty filter.
  bool empty() const noexcept { return text_.empty() && error_.empty(); }
  /// Number of discrete comparisons (the service allows ≤ 15).
  std::size_t comparisons() const noexcept { return comparisons_; }
  /// OK, or invalid_argument naming the bad property/value or the 15-comparison limit.
  [[nodiscard]] result<void> validate() const;

  /// The literal form of `value` as used in a filter. Errors: invalid_argument for NaN/±Inf.
  [[nodiscard]] static result<std::string> literal(const table_value& value);

private:
  static table_filter combine(const table_filter& a, const table_filter& b, std::string_view op);
  std::string text_;
  std::string error_; // first construction error; empty when valid
  std::size_t comparisons_ = 0;
};

} // namespace shoal::storage
