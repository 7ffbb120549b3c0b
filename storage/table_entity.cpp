#include "storage/table_entity.hpp"

#include "storage/encoding.hpp"
#include "storage/table_detail.hpp"

#include <nlohmann/json.hpp>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

namespace shoal::storage {

using json = nlohmann::json;

// -- typed reads ----------------------------------------------------------------------------------

namespace {

std::unexpected<error> missing(std::string_view name) {
  return std::unexpected(error{errc::not_found, 0, {}, {}, false, 0, "no property '" + std::string(name) + "'"});
}

std::unexpected<error> wrong_type(std::string_view name, const table_value& v, std::string_view wanted) {
  return std::unexpected(error{errc::bad_response, 0, {}, {}, false, 0,
                               "property '" + std::string(name) + "' is " + std::string(to_string(type_of(v))) +
                                   ", not readable as " + std::string(wanted)});
}

} // namespace

namespace {

// Property `name` of `e` through `conv` (table_value → optional<Out>, nullopt = not readable
// as `wanted`): the one shape of every typed getter.
template <class Out, class Conv>
result<Out> read_prop(const table_entity& e, std::string_view name, std::string_view wanted, Conv conv) {
  const table_value* v = e.find(name);
  if (!v)
    return missing(name);
  if (std::optional<Out> out = conv(*v))
    return *std::move(out);
  return wrong_type(name, *v, wanted);
}

// The alternative T of `v`, if it holds one.
template <class T> std::optional<T> exactly(const table_value& v) {
  if (const auto* x = std::get_if<T>(&v))
    return *x;
  return std::nullopt;
}

} // namespace

result<std::string> table_entity::get_string(std::string_view name) const {
  return read_prop<std::string>(*this, name, "Edm.String", exactly<std::string>);
}

result<std::int64_t> table_entity::get_int64(std::string_view name) const {
  return read_prop<std::int64_t>(*this, name, "Edm.Int64", [](const table_value& v) -> std::optional<std::int64_t> {
    if (const auto* i = std::get_if<std::int64_t>(&v))
      return *i;
    if (const auto* i = std::get_if<std::int32_t>(&v))
      return *i;
    if (const auto* s = std::get_if<std::string>(&v)) {
      std::int64_t out = 0;
      const auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), out);
      if (ec == std::errc{} && end == s->data() + s->size() && !s->empty())
        return out;
    }
    // 2^63 is exactly representable; every double below it in magnitude converts exactly.
    if (const auto* d = std::get_if<double>(&v); d && std::trunc(*d) == *d && *d >= -9223372036854775808.0 &&
                                                  *d < 9223372036854775808.0)
      return static_cast<std::int64_t>(*d);
    return std::nullopt;
  });
}

result<double> table_entity::get_double(std::string_view name) const {
  return read_prop<double>(*this, name, "Edm.Double", [](const table_value& v) -> std::optional<double> {
    if (const auto* d = std::get_if<double>(&v))
      return *d;
    if (const auto* i = std::get_if<std::int64_t>(&v))
      return static_cast<double>(*i);
    if (const auto* i = std::get_if<std::int32_t>(&v))
      return *i;
    return std::nullopt;
  });
}

result<bool> table_entity::get_bool(std::string_view name) const {
  return read_prop<bool>(*this, name, "Edm.Boolean", exactly<bool>);
}

result<std::chrono::system_clock::time_point> table_entity::get_time(std::string_view name) const {
  using tp = std::chrono::system_clock::time_point;
  return read_prop<tp>(*this, name, "Edm.DateTime", [](const table_value& v) -> std::optional<tp> {
    if (const auto* t = std::get_if<table_time>(&v))
      return std::chrono::time_point_cast<tp::duration>(*t);
    return std::nullopt;
  });
}

// -- guid -----------------------------------------------------------------------------------------

namespace {

constexpr char hex_lower_digits[] = "0123456789abcdef";

} // namespace

result<table_guid> table_guid::parse(std::string_view text) {
  if (text.size() != 36)
    return std::unexpected(error::invalid("guid '" + std::string(text.substr(0, 64)) +
                                          "' is not 36 characters (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"));
  table_guid g;
  std::size_t byte = 0;
  for (std::size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-')
        return std::unexpected(error::invalid("guid '" + std::string(text) + "' lacks a '-' at offset " +
                                              std::to_string(i)));
      ++i;
      continue;
    }
    int hi = hex_value(text[i]), lo = hex_value(text[i + 1]);
    if (hi < 0 || lo < 0)
      return std::unexpected(error::invalid("guid '" + std::string(text) + "' has a non-hex digit"));
    g.bytes[byte++] = static_cast<std::uint8_t>(hi * 16 + lo);
    i += 2;
  }
  return g;
}

std::string table_guid::to_string() const {
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      out += '-';
    out += hex_lower_digits[bytes[i] >> 4];
    out += hex_lower_digits[bytes[i] & 0xF];
  }
  return out;
}

std::string_view to_string(edm_type t) noexcept {
  switch (t) {
  case edm_type::string: return "Edm.String";
  case edm_type::int32: return "Edm.Int32";
  case edm_type::int64: return "Edm.Int64";
  case edm_type::double_: return "Edm.Double";
  case edm_type::boolean: return "Edm.Boolean";
  case edm_type::datetime: return "Edm.DateTime";
  case edm_type::guid: return "Edm.Guid";
  case edm_type::binary: return "Edm.Binary";
  }
  return "Edm.Unknown";
}

// -- comparisons ----------------------------------------------------------------------------------

bool same_value(const table_value& a, const table_value& b) noexcept {
  if (a.index() != b.index())
    return false;
  if (const double* da = std::get_if<double>(&a)) {
    double db = std::get<double>(b);
    return (std::isnan(*da) && std::isnan(db)) || *da == db;
  }
  return a == b;
}

bool same_content(const table_entity& a, const table_entity& b) noexcept {
  if (a.partition_key != b.partition_key || a.row_key != b.row_key ||
      a.properties.size() != b.properties.size())
    return false;
  for (auto ia = a.properties.begin(), ib = b.properties.begin(); ia != a.properties.end(); ++ia, ++ib)
    if (ia->first != ib->first || !same_value(ia->second, ib->second))
      return false;
  return true;
}

bool contains_content(const table_entity& stored, const table_entity& patch) noexcept {
  if (stored.partition_key != patch.partition_key || stored.row_key != patch.row_key)
    return false;
  for (const auto& [name, value] : patch.properties) {
    const table_value* s = stored.find(name);
    if (!s || !same_value(*s, value))
      return false;
  }
  return true;
}

// -- JSON -----------------------------------------------------------------------------------------

namespace {

constexpr std::string_view type_suffix = "@odata.type";

void put_value(json& j, const std::string& name, const table_value& v) {
  auto annotate = [&](edm_type t) { j[name + std::string(type_suffix)] = std::string(to_string(t)); };
  switch (type_of(v)) {
  case edm_type::string: j[name] = std::get<std::string>(v); break;
  case edm_type::int32: j[name] = std::get<std::int32_t>(v); break;
  case edm_type::int64:
    j[name] = std::to_string(std::get<std::int64_t>(v));
    annotate(edm_type::int64);
    break;
  case edm_type::double_: {
    double d = std::get<double>(v);
    if (std::isnan(d))
      j[name] = "NaN";
    else if (std::isinf(d))
      j[name] = d > 0 ? "Infinity" : "-Infinity";
    else
      j[name] = d;
    annotate(edm_type::double_);
    break;
  }
  case edm_type::boolean: j[name] = std::get<bool>(v); break;
  case edm_type::datetime:
    j[name] = format_iso8601(std::get<table_time>(v));
    annotate(edm_type::datetime);
    break;
  case edm_type::guid:
    j[name] = std::get<table_guid>(v).to_string();
    annotate(edm_type::guid);
    break;
  case edm_type::binary:
    j[name] = base64_encode(std::get<table_binary>(v).bytes);
    annotate(edm_type::binary);
    break;
  }
}

result<table_time> parse_time(std::string_view s) {
  auto t = parse_iso8601(s);
  if (!t)
    return std::unexpected(t.error());
  return to_table_time(*t);
}

std::optional<edm_type> edm_from_name(std::string_view n) {
  for (int i = 0; i <= static_cast<int>(edm_type::binary); ++i)
    if (to_string(static_cast<edm_type>(i)) == n)
      return static_cast<edm_type>(i);
  return std::nullopt;
}

// Converts one JSON property (with its optional annotation) into a table_value.
result<std::optional<table_value>> read_value(const std::string& name, const json& v,
                                              std::optional<edm_type> type) {
  auto mismatch = [&](std::string_view want) {
    return std::unexpected(error::malformed_response("property '" + name + "' is not a valid " + std::string(want) + ": " +
                               v.dump(-1, ' ', false, json::error_handler_t::replace)));
  };
  if (v.is_null())
    return std::optional<table_value>{};
  if (!type) {
    if (v.is_string())
      return std::optional<table_value>{v.get<std::string>()};
    if (v.is_boolean())
      return std::optional<table_value>{v.get<bool>()};
    if (v.is_number_integer()) {
      if (v.is_number_unsigned()) {
        auto u = v.get<std::uint64_t>();
        if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max()))
          return std::optional<table_value>{static_cast<std::int32_t>(u)};
        if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
          return std::optional<table_value>{static_cast<std::int64_t>(u)};
        return mismatch("number");
      }
      auto i = v.get<std::int64_t>();
      if (i >= std::numeric_limits<std::int32_t>::min() && i <= std::numeric_limits<std::int32_t>::max())
        return std::optional<table_value>{static_cast<std::int32_t>(i)};
      return std::optional<table_value>{i};
    }
    if (v.is_number_float())
      return std::optional<table_value>{v.get<double>()};
    return mismatch("property value (objects and arrays are not Table types)");
  }
  switch (*type) {
  case edm_type::string:
    if (!v.is_string())
      return mismatch("Edm.String");
    return std::optional<table_value>{v.get<std::string>()};
  case edm_type::int32:
    if (v.is_number_integer()) {
      auto i = v.get<std::int64_t>();
      if (i >= std::numeric_limits<std::int32_t>::min() && i <= std::numeric_limits<std::int32_t>::max())
        return std::optional<table_value>{static_cast<std::int32_t>(i)};
    }
    return mismatch("Edm.Int32");
  case edm_type::int64: {
    if (v.is_number_integer() && !v.is_number_unsigned())
      return std::optional<table_value>{v.get<std::int64_t>()};
    if (v.is_number_unsigned() &&
        v.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return std::optional<table_value>{static_cast<std::int64_t>(v.get<std::uint64_t>())};
    if (!v.is_string())
      return mismatch("Edm.Int64");
    const auto& s = v.get_ref<const std::string&>();
    std::int64_t out = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    if (ec != std::errc{} || p != s.data() + s.size() || s.empty())
      return mismatch("Edm.Int64");
    return std::optional<table_value>{out};
  }
  case edm_type::double_:
    if (v.is_number())
      return std::optional<table_value>{v.get<double>()};
    if (v.is_string()) {
      const auto& s = v.get_ref<const std::string&>();
      if (s == "NaN")
        return std::optional<table_value>{std::numeric_limits<double>::quiet_NaN()};
      if (s == "Infinity" || s == "INF")
        return std::optional<table_value>{std::numeric_limits<double>::infinity()};
      if (s == "-Infinity" || s == "-INF")
        return std::optional<table_value>{-std::numeric_limits<double>::infinity()};
    }
    return mismatch("Edm.Double");
  case edm_type::boolean:
    if (!v.is_boolean())
      return mismatch("Edm.Boolean");
    return std::optional<table_value>{v.get<bool>()};
  case edm_type::datetime: {
    if (!v.is_string())
      return mismatch("Edm.DateTime");
    auto t = parse_time(v.get_ref<const std::string&>());
    if (!t)
      return mismatch("Edm.DateTime");
    return std::optional<table_value>{*t};
  }
  case edm_type::guid: {
    if (!v.is_string())
      return mismatch("Edm.Guid");
    auto g = table_guid::parse(v.get_ref<const std::string&>());
    if (!g)
      return mismatch("Edm.Guid");
    return std::optional<table_value>{*g};
  }
  case edm_type::binary: {
    if (!v.is_string())
      return mismatch("Edm.Binary");
    auto b = base64_decode(v.get_ref<const std::string&>());
    if (!b)
      return mismatch("Edm.Binary");
    return std::optional<table_value>{table_binary{std::move(*b)}};
  }
  }
  return mismatch("Edm type");
}

} // namespace

namespace {


void append_annotation(std::string& out, const std::string& name, edm_type t) {
  out += ',';
  append_json_string(out, name + std::string(type_suffix));
  out += ":\"";
  out += to_string(t);
  out += '"';
}

// The writer of entity_to_json for valid UTF-8 (the common case): one pass, no DOM.
std::string write_entity_json(const table_entity& e) {
  std::string out;
  out.reserve(64 + e.partition_key.size() + e.row_key.size() + e.properties.size() * 32);
  out += "{\"PartitionKey\":";
  append_json_string(out, e.partition_key);
  out += ",\"RowKey\":";
  append_json_string(out, e.row_key);
  char num[64];
  for (const auto& [name, v] : e.properties) {
    out += ',';
    append_json_string(out, name);
    out += ':';
    switch (type_of(v)) {
    case edm_type::string: append_json_string(out, std::get<std::string>(v)); break;
    case edm_type::int32: {
      auto r = std::to_chars(num, num + sizeof num, std::get<std::int32_t>(v));
      out.append(num, r.ptr);
      break;
    }
    case edm_type::int64: {
      auto r = std::to_chars(num, num + sizeof num, std::get<std::int64_t>(v));
      out += '"';
      out.append(num, r.ptr);
      out += '"';
      append_annotation(out, name, edm_type::int64);
      break;
    }
    case edm_type::double_: {
      double d = std::get<double>(v);
      if (std::isnan(d))
        out += "\"NaN\"";
      else if (std::isinf(d))
        out += d > 0 ? "\"Infinity\"" : "\"-Infinity\"";
      else {
        auto r = std::to_chars(num, num + sizeof num, d); // shortest form that round-trips
        std::string_view text(num, static_cast<std::size_t>(r.ptr - num));
        out += text;
        if (text.find_first_of(".e") == std::string_view::npos)
          out += ".0"; // keep it a JSON float, as the service writes doubles
      }
      append_annotation(out, name, edm_type::double_);
      break;
    }
    case edm_type::boolean: out += std::get<bool>(v) ? "true" : "false"; break;
    case edm_type::datetime:
      append_json_string(out, format_iso8601(std::get<table_time>(v)));
      append_annotation(out, name, edm_type::datetime);
      break;
    case edm_type::guid:
      append_json_string(out, std::get<table_guid>(v).to_string());
      append_annotation(out, name, edm_type::guid);
      break;
    case edm_type::binary:
      append_json_string(out, base64_encode(std::get<table_binary>(v).bytes));
      append_annotation(out, name, edm_type::binary);
      break;
    }
  }
  out += '}';
  return out;
}

bool all_utf8(const table_entity& e) {
  if (!valid_utf8(e.partition_key) || !valid_utf8(e.row_key))
    return false;
  for (const auto& [name, v] : e.properties) {
    if (!valid_utf8(name))
      return false;
    if (const auto* s = std::get_if<std::string>(&v); s && !valid_utf8(*s))
      return false;
  }
  return true;
}

} // namespace

std::string entity_to_json(const table_entity& e) {
  if (all_utf8(e))
    return write_entity_json(e);
  // Invalid UTF-8 (validate_entity rejects it before any send): let nlohmann replace it.
  json j = json::object();
  j["PartitionKey"] = e.partition_key;
  j["RowKey"] = e.row_key;
  for (const auto& [name, value] : e.properties)
    put_value(j, name, value);
  // replace, not throw, on invalid UTF-8: validate_entity rejects it before any send.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace detail {

// Shared with table_client.cpp (query pages): converts one parsed JSON object.
result<table_entity> entity_from_json_object(const json& j) {
  if (!j.is_object())
    return std::unexpected(error::malformed_response("entity is not a JSON object"));
  table_entity e;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (key == "odata.etag") {
      if (!it->is_string())
        return std::unexpected(error::malformed_response("odata.etag is not a string"));
      e.etag = it->get<std::string>();
      continue;
    }
    if (key.starts_with("odata.") || key.find('@') != std::string::npos)
      continue; // metadata and annotations (read together with their property)
    if (key == "PartitionKey" || key == "RowKey") {
      if (!it->is_string())
        return std::unexpected(error::malformed_response(key + " is not a string"));
      (key == "PartitionKey" ? e.partition_key : e.row_key) = it->get<std::string>();
      continue;
    }
    std::optional<edm_type> type;
    if (auto a = j.find(key + std::string(type_suffix)); a != j.end()) {
      if (!a->is_string())
        return std::unexpected(error::malformed_response("annotation of '" + key + "' is not a string"));
      type = edm_from_name(a->get_ref<const std::string&>());
      if (!type)
        return std::unexpected(error::malformed_response("property '" + key + "' has unknown type " + a->get<std::string>()));
    }
    if (key == "Timestamp") {
      if (!it->is_string())
        return std::unexpected(error::malformed_response("Timestamp is not a string"));
      auto t = parse_time(it->get_ref<const std::string&>());
      if (!t)
        return std::unexpected(error::malformed_response("Timestamp '" + it->get<std::string>() + "' is not ISO-8601"));
      e.timestamp = *t;
      continue;
    }
    auto v = read_value(key, *it, type);
    if (!v)
      return std::unexpected(v.error());
    if (*v)
      e.properties.emplace(key, std::move(**v));
  }
  return e;
}

} // namespace detail

result<table_entity> entity_from_json(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return std::unexpected(error::malformed_response("entity body is not valid JSON"));
  try {
    return detail::entity_from_json_object(j);
  } catch (const std::exception& ex) { // nlohmann type errors: never escape
    return std::unexpected(error::malformed_response(std::string("entity JSON: ") + ex.what()));
  }
}

// -- validation -----------------------------------------------------------------------------------

result<void> validate_table_name(std::string_view name) {
  auto fail = [&](std::string why) {
    return std::unexpected(error::invalid("table name '" + std::string(name.substr(0, 80)) + "' " + why +
                                          " (rule: ^[A-Za-z][A-Za-z0-9]{2,62}$, not \"tables\")"));
  };
  if (name.size() < 3 || name.size() > 63)
    return fail("must be 3-63 characters long");
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (!alpha(name[0]))
    return fail("must start with a letter");
  for (char c : name)
    if (!alpha(c) && !(c >= '0' && c <= '9'))
      return fail("may hold only letters and digits");
  std::string lower(name);
  for (char& c : lower)
    c = static_cast<char>((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
  if (lower == "tables")
    return fail("is reserved");
  return {};
}

result<void> validate_key(std::string_view key, std::string_view what) {
  auto fail = [&](std::string why) {
    std::string shown(key.substr(0, 40));
    for (char& c : shown)
      if (static_cast<unsigned char>(c) < 0x20)
        c = '?';
    return std::unexpected(error::invalid(std::string(what) + " '" + shown + (key.size() > 40 ? "...'" : "'") +
                                          " " + why));
  };
  std::size_t units = 0;
  std::optional<std::string> bad_char;
  bool ok = detail::for_each_code_point(key, [&](char32_t cp) {
    units += cp >= 0x10000 ? 2 : 1;
    if (!bad_char) {
      if (cp == '/' || cp == '\\' || cp == '#' || cp == '?')
        bad_char = std::string("the character '") + static_cast<char>(cp) + "'";
      else if (cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F)) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(cp));
        bad_char = std::string("the control character ") + buf;
      }
    }
  });
  if (!ok)
    return fail("is not valid UTF-8");
  if (bad_char)
    return fail("contains " + *bad_char + " (keys may not hold / \\ # ? or U+0000-U+001F, U+007F-U+009F)");
  if (units > table_limits::max_key_chars)
    return fail("is " + std::to_string(units) + " UTF-16 units long; the limit is " +
                std::to_string(table_limits::max_key_chars) + " (Azurite's; Azure allows 1 KiB)");
  return {};
}

result<void> validate_property_name(std::string_view name) {
  auto fail = [&](std::string why) {
    return std::unexpected(error::invalid("property name '" + std::string(name.substr(0, 80)) + "' " + why));
  };
  if (name.empty())
    return fail("is empty");
  std::size_t units = 0;
  bool first = true, bad_char = false;
  bool ok = detail::for_each_code_point(name, [&](char32_t cp) {
    units += cp >= 0x10000 ? 2 : 1;
    bool letter = (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_' || cp >= 0xA0;
    bool digit = cp >= '0' && cp <= '9';
    if (!(letter || (digit && !first)))
      bad_char = true;
    first = false;
  });
  if (!ok)
    return fail("is not valid UTF-8");
  if (bad_char)
    return fail("must start with a letter or '_' and hold only letters, digits and '_' (C# identifier)");
  if (units > table_limits::max_property_name_chars)
    return fail("is longer than " + std::to_string(table_limits::max_property_name_chars) + " characters");
  if (name == "PartitionKey" || name == "RowKey" || name == "Timestamp" || name == "ETag")
    return fail("is a system property; set it through the entity's fields");
  return {};
}

std::size_t entity_size_bytes(const table_entity& e) noexcept {
  std::size_t size = 4 + 2 * detail::utf16_units(e.partition_key) + 2 * detail::utf16_units(e.row_key);
  for (const auto& [name, value] : e.properties) {
    size += 8 + 2 * detail::utf16_units(name);
    switch (type_of(value)) {
    case edm_type::string: size += 4 + 2 * detail::utf16_units(std::get<std::string>(value)); break;
    case edm_type::binary: size += 4 + std::get<table_binary>(value).bytes.size(); break;
    case edm_type::int32: size += 4; break;
    case edm_type::int64:
    case edm_type::double_:
    case edm_type::datetime: size += 8; break;
    case edm_type::boolean: size += 1; break;
    case edm_type::guid: size += 16; break;
    }
  }
  return size;
}

result<void> validate_entity(const table_entity& e) {
  if (auto r = validate_key(e.partition_key, "PartitionKey"); !r)
    return r;
  if (auto r = validate_key(e.row_key, "RowKey"); !r)
    return r;
  if (e.properties.size() > table_limits::max_custom_properties) {
    error err = error::invalid("entity has " + std::to_string(e.properties.size()) +
                               " custom properties; the limit is " +
                               std::to_string(table_limits::max_custom_properties));
    err.code = errc::limit_exceeded;
    return std::unexpected(err);
  }
  for (const auto& [name, value] : e.properties) {
    if (auto r = validate_property_name(name); !r)
      return r;
    if (const auto* s = std::get_if<std::string>(&value)) {
      if (!valid_utf8(*s))
        return std::unexpected(error::invalid("property '" + name + "' is not valid UTF-8 (Edm.String)"));
      if (std::size_t u = detail::utf16_units(*s); u > table_limits::max_string_utf16_units) {
        error err = error::invalid("property '" + name + "' is " + std::to_string(u) +
                                   " UTF-16 units long; the limit is " +
                                   std::to_string(table_limits::max_string_utf16_units) + " (64 KiB)");
        err.code = errc::limit_exceeded;
        return std::unexpected(err);
      }
    } else if (const auto* b = std::get_if<table_binary>(&value);
               b && b->bytes.size() > table_limits::max_binary_bytes) {
      error err = error::invalid("binary property '" + name + "' is " + std::to_string(b->bytes.size()) +
                                 " bytes; the limit is " + std::to_string(table_limits::max_binary_bytes));
      err.code = errc::limit_exceeded;
      return std::unexpected(err);
    }
  }
  if (std::size_t size = entity_size_bytes(e); size > table_limits::max_entity_bytes) {
    error err = error::invalid("entity " + e.partition_key.substr(0, 40) + "/" + e.row_key.substr(0, 40) +
                               " is " + std::to_string(size) + " bytes by Azure's size formula; the limit is " +
                               std::to_string(table_limits::max_entity_bytes) + " (1 MiB)");
    err.code = errc::limit_exceeded;
    return std::unexpected(err);
  }
  return {};
}

} // namespace shoal::storage
