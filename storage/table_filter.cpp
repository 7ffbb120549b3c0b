#include "storage/table_filter.hpp"

#include "storage/encoding.hpp"

#include <charconv>
#include <cmath>

namespace shoal::storage {

std::string_view to_string(filter_op op) noexcept {
  switch (op) {
  case filter_op::eq: return "eq";
  case filter_op::ne: return "ne";
  case filter_op::gt: return "gt";
  case filter_op::ge: return "ge";
  case filter_op::lt: return "lt";
  case filter_op::le: return "le";
  }
  return "eq";
}

namespace {

std::string quoted(std::string_view prefix, std::string_view text) {
  std::string out;
  out.reserve(prefix.size() + text.size() + 2);
  out += prefix;
  out += '\'';
  for (char c : text) {
    out += c;
    if (c == '\'')
      out += '\''; // OData doubles an embedded quote
  }
  out += '\'';
  return out;
}

std::string double_literal(double d) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d); // shortest form that round-trips
  std::string s(buf, ec == std::errc{} ? end : buf);
  // Without a '.', the service would read an integral value as Int32/Int64.
  if (s.find_first_of(".") == std::string::npos) {
    auto e = s.find_first_of("eE");
    s.insert(e == std::string::npos ? s.size() : e, ".0");
  }
  return s;
}

} // namespace

result<std::string> table_filter::literal(const table_value& value) {
  switch (type_of(value)) {
  case edm_type::string: return quoted("", std::get<std::string>(value));
  case edm_type::int32: return std::to_string(std::get<std::int32_t>(value));
  case edm_type::int64: return std::to_string(std::get<std::int64_t>(value)) + "L";
  case edm_type::double_: {
    double d = std::get<double>(value);
    if (!std::isfinite(d))
      return std::unexpected(error::invalid("a filter cannot compare with NaN or infinity (no literal form)"));
    return double_literal(d);
  }
  case edm_type::boolean: return std::string(std::get<bool>(value) ? "true" : "false");
  case edm_type::datetime: return quoted("datetime", format_iso8601(std::get<table_time>(value)));
  case edm_type::guid: return quoted("guid", std::get<table_guid>(value).to_string());
  case edm_type::binary: {
    static constexpr char hex[] = "0123456789abcdef";
    std::string h;
    for (unsigned char c : std::get<table_binary>(value).bytes) {
      h += hex[c >> 4];
      h += hex[c & 0xF];
    }
    return quoted("X", h);
  }
  }
  return std::unexpected(error::invalid("unknown value type in filter"));
}

table_filter table_filter::compare(std::string_view property, filter_op op, const table_value& value) {
  table_filter f;
  f.comparisons_ = 1;
  if (property != "PartitionKey" && property != "RowKey" && property != "Timestamp") {
    if (auto r = validate_property_name(property); !r) {
      f.error_ = "filter: " + r.error().message;
      return f;
    }
  }
  auto lit = literal(value);
  if (!lit) {
    f.error_ = "filter on '" + std::string(property) + "': " + lit.error().message;
    return f;
  }
  f.text_.reserve(property.size() + lit->size() + 4);
  f.text_ += property;
  f.text_ += ' ';
  f.text_ += to_string(op);
  f.text_ += ' ';
  f.text_ += *lit;
  return f;
}

table_filter table_filter::starts_with(std::string_view column, std::string_view prefix) {
  if (prefix.empty())
    return {};
  std::string upper(prefix);
  auto last = static_cast<unsigned char>(upper.back());
  if (last < 0x7E)
    upper.back() = static_cast<char>(last + 1);
  else
    upper += "\xEF\xBF\xBF"; // U+FFFF: misses only keys continuing with U+FFFF or beyond
  return ge(column, std::string(prefix)) && lt(column, std::move(upper));
}

table_filter table_filter::combine(const table_filter& a, const table_filter& b, std::string_view op) {
  if (a.empty())
    return b;
  if (b.empty())
    return a;
  table_filter f;
  f.error_ = !a.error_.empty() ? a.error_ : b.error_;
  f.comparisons_ = a.comparisons_ + b.comparisons_;
  f.text_.reserve(a.text_.size() + b.text_.size() + op.size() + 4);
  f.text_ += '(';
  f.text_ += a.text_;
  f.text_ += ')';
  f.text_ += op;
  f.text_ += '(';
  f.text_ += b.text_;
  f.text_ += ')';
  return f;
}

table_filter operator!(const table_filter& a) {
  if (a.empty())
    return a;
  table_filter f;
  f.error_ = a.error_;
  f.comparisons_ = a.comparisons_;
  f.text_ = "not (" + a.text_ + ")";
  return f;
}

result<void> table_filter::validate() const {
  if (!error_.empty())
    return std::unexpected(error::invalid(error_));
  if (comparisons_ > table_limits::max_filter_comparisons)
    return std::unexpected(error::invalid("filter has " + std::to_string(comparisons_) +
                                          " comparisons; the service allows at most " +
                                          std::to_string(table_limits::max_filter_comparisons)));
  return {};
}

} // namespace shoal::storage
