#include "workers/etl/dataset.hpp"

#include "workers/etl/schema_check.hpp"
#include "workers/json_limits.hpp"

#include <toml++/toml.h>
#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

namespace shoal::workers::etl {

struct compiled_schema {
  valijson::Schema schema;
  std::optional<schema_check> fast; ///< the schema as a direct checker, when it fits the subset
};

namespace {

result<field_type> parse_type(std::string_view s) {
  if (s == "text") return field_type::text;
  if (s == "integer") return field_type::integer;
  if (s == "real") return field_type::real;
  if (s == "boolean") return field_type::boolean;
  if (s == "timestamp") return field_type::timestamp;
  if (s == "json") return field_type::json;
  return fail(errc::parse, "unknown field type '" + std::string(s) +
                               "' (text, integer, real, boolean, timestamp, json)");
}

result<std::string> read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return fail(errc::io, "cannot read " + p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What a field's source resolves to for one record.
struct resolved {
  const nlohmann::json* json = nullptr; ///< payload value, when the source is a pointer
  std::string_view text;                ///< metadata value
  bool present = false;
};

struct compiled_field {
  const field_spec* spec = nullptr;
  std::optional<std::vector<std::string>> pointer; ///< when source starts with '/'
  // template parts: literal text, or a source (compiled pointer or $name)
  struct part {
    std::string literal;
    std::string source;
    std::optional<std::vector<std::string>> pointer;
  };
  std::vector<part> parts;
};

std::optional<std::vector<std::string>> compile_pointer(const std::string& source) {
  // RFC 6901 tokens: split on '/', then ~1 → '/' and ~0 → '~'.
  if (source.empty() || source[0] != '/') return std::nullopt;
  std::vector<std::string> tokens;
  std::size_t i = 1;
  while (true) {
    std::size_t slash = source.find('/', i);
    std::string raw = source.substr(i, slash == std::string::npos ? std::string::npos : slash - i);
    std::string t;
    for (std::size_t k = 0; k < raw.size(); ++k) {
      if (raw[k] == '~' && k + 1 < raw.size() && (raw[k + 1] == '0' || raw[k + 1] == '1')) {
        t += raw[k + 1] == '1' ? '/' : '~';
        ++k;
      } else {
        t += raw[k];
      }
    }
    tokens.push_back(std::move(t));
    if (slash == std::string::npos) break;
    i = slash + 1;
  }
  return tokens;
}

resolved resolve(const std::string& source, const std::optional<std::vector<std::string>>& ptr,
                 const validated_record& r, std::string_view blob_name) {
  resolved out;
  if (ptr) {
    const nlohmann::json* node = &r.payload;
    // json::contains(ptr) + at(ptr) would walk twice; walk once without exceptions.
    for (const std::string& token : *ptr) {
      if (node->is_object()) {
        auto it = node->find(token);
        if (it == node->end()) return out;
        node = &*it;
      } else if (node->is_array()) {
        std::size_t i = 0;
        auto [p, ec] = std::from_chars(token.data(), token.data() + token.size(), i);
        if (ec != std::errc{} || p != token.data() + token.size() || i >= node->size()) return out;
        node = &(*node)[i];
      } else {
        return out;
      }
    }
    if (node->is_null()) return out;
    out.json = node;
    out.present = true;
    return out;
  }
  const extracted_record& e = *r.record;
  if (source == "$message_id") out.text = e.message_id;
  else if (source == "$event_time") out.text = e.event_time;
  else if (source == "$ingest_time") out.text = e.ingest_time;
  else if (source == "$producer") out.text = e.producer;
  else if (source == "$blob") out.text = blob_name;
  else if (source == "$dest") out.text = dest_of(blob_name);
  else if (source == "$payload") out.text = e.payload;
  out.present = !out.text.empty();
  return out;
}

std::string as_text(const resolved& v) {
  if (!v.json) return std::string(v.text);
  if (v.json->is_string()) return v.json->get_ref<const std::string&>();
  return v.json->dump();
}

// Converts `v` to `f.type`; an error string on failure.
std::variant<sql_value, std::string> convert(const field_spec& f, const resolved& v) {
  using R = std::variant<sql_value, std::string>;
  const nlohmann::json* j = v.json;
  switch (f.type) {
  case field_type::text:
    return R(sql_value(as_text(v)));
  case field_type::json:
    return R(sql_value(j ? j->dump() : nlohmann::json(std::string(v.text)).dump()));
  case field_type::integer: {
    if (j && j->is_number_integer()) return R(sql_value(j->get<std::int64_t>()));
    if (j && j->is_number_float()) {
      double d = j->get<double>();
      if (d == static_cast<double>(static_cast<std::int64_t>(d))) return R(sql_value(static_cast<std::int64_t>(d)));
    }
    if (!j || j->is_string()) {
      std::string s = as_text(v);
      std::int64_t n = 0;
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
      if (ec == std::errc{} && p == s.data() + s.size() && !s.empty()) return R(sql_value(n));
    }
    return R("field '" + f.column + "': cannot convert " + as_text(v) + " to integer");
  }
  case field_type::real: {
    if (j && j->is_number()) return R(sql_value(j->get<double>()));
    if (!j || j->is_string()) {
      std::string s = as_text(v);
      char* end = nullptr;
      double d = std::strtod(s.c_str(), &end);
      if (!s.empty() && end == s.c_str() + s.size()) return R(sql_value(d));
    }
    return R("field '" + f.column + "': cannot convert " + as_text(v) + " to real");
  }
  case field_type::boolean: {
    if (j && j->is_boolean()) return R(sql_value(std::int64_t{j->get<bool>() ? 1 : 0}));
    std::string s = as_text(v);
    if (s == "true" || s == "1") return R(sql_value(std::int64_t{1}));
    if (s == "false" || s == "0") return R(sql_value(std::int64_t{0}));
    return R("field '" + f.column + "': cannot convert " + s + " to boolean");
  }
  case field_type::timestamp: {
    if (j && !j->is_string()) return R("field '" + f.column + "': timestamp must be a string, got " + j->dump());
    std::string s = as_text(v);
    if (auto t = parse_timestamp(s, f.format)) return R(sql_value(std::move(*t)));
    return R("field '" + f.column + "': '" + s + "' does not match the timestamp format '" +
             (f.format.empty() ? std::string("RFC 3339") : f.format) + "'");
  }
  }
  return R(std::string("unknown field type"));
}

dataset make_generic() {
  dataset d;
  d.name = "generic";
  d.generic = true;
  d.insert_sql = "INSERT INTO shoal_etl_records (message_id, dest, event_time, payload, blob) VALUES (?, ?, ?, ?, ?) "
                 "ON CONFLICT (message_id) DO NOTHING";
  d.message_key = "table";
  auto add = [&](std::string column, std::string source, bool required) {
    field_spec f;
    f.column = std::move(column);
    f.source = std::move(source);
    f.required = required;
    d.fields.push_back(std::move(f));
  };
  add("message_id", "$message_id", true);
  add("dest", "$dest", false);
  add("event_time", "$event_time", false);
  add("payload", "$payload", false);
  add("blob", "$blob", true);
  return d;
}

} // namespace

namespace {

// Fixed-width fast path in front of strptime for formats made of %Y %m %d %H %M %S and
// literal bytes (other than '%' and whitespace): each field exactly its usual width (4 or 2
// digits) and in range. Anything else returns nullptr without touching `tm`, and the caller
// asks strptime, which then decides (so results never differ, only the speed).
const char* fixed_width(const char* s, const char* fmt, std::tm& tm) {
  std::tm out = tm;
  for (const char* f = fmt; *f; ++f) {
    if (*f != '%') {
      if (*f == ' ' || *f == '\t' || *s != *f) return nullptr;
      ++s;
      continue;
    }
    ++f;
    const int width = *f == 'Y' ? 4 : 2;
    int v = 0;
    for (int i = 0; i < width; ++i, ++s) {
      if (*s < '0' || *s > '9') return nullptr;
      v = v * 10 + (*s - '0');
    }
    if (*s >= '0' && *s <= '9') return nullptr; // wider than usual: strptime's rules
    switch (*f) {
    case 'Y': if (v < 1000) return nullptr; out.tm_year = v - 1900; break;
    case 'm': if (v < 1 || v > 12) return nullptr; out.tm_mon = v - 1; break;
    case 'd': if (v < 1 || v > 31) return nullptr; out.tm_mday = v; break;
    case 'H': if (v > 23) return nullptr; out.tm_hour = v; break;
    case 'M': if (v > 59) return nullptr; out.tm_min = v; break;
    case 'S': if (v > 59) return nullptr; out.tm_sec = v; break;
    default: return nullptr;
    }
  }
  tm = out;
  return s;
}

const char* parse_part(const char* s, const char* fmt, std::tm& tm) {
  if (const char* rest = fixed_width(s, fmt, tm)) return rest;
  return strptime(s, fmt, &tm);
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

} // namespace

std::optional<std::string> parse_timestamp(std::string_view text, std::string_view format) {
  std::string s(text);
  std::tm tm{};
  long offset_s = 0;
  if (format.empty()) {
    // RFC 3339: date, 'T' or ' ', time, optional fraction, then Z or ±hh:mm.
    const char* rest = parse_part(s.c_str(), "%Y-%m-%d", tm);
    if (!rest || (*rest != 'T' && *rest != 't' && *rest != ' ')) return std::nullopt;
    rest = parse_part(rest + 1, "%H:%M:%S", tm);
    if (!rest) return std::nullopt;
    if (*rest == '.')
      for (++rest; *rest >= '0' && *rest <= '9'; ++rest) {
      }
    if (*rest == 'Z' || *rest == 'z') {
      ++rest;
    } else if (*rest == '+' || *rest == '-') {
      // Exactly ±hh:mm (a shorter offset such as "+2:00" used to read past the end).
      auto dig = [](char c) { return c >= '0' && c <= '9'; };
      if (!dig(rest[1]) || !dig(rest[2]) || rest[3] != ':' || !dig(rest[4]) || !dig(rest[5])) return std::nullopt;
      const int hh = (rest[1] - '0') * 10 + (rest[2] - '0'), mm = (rest[4] - '0') * 10 + (rest[5] - '0');
      offset_s = (hh * 3600L + mm * 60L) * (*rest == '+' ? 1 : -1);
      rest += 6;
    } else if (*rest != '\0') {
      return std::nullopt;
    }
    if (*rest != '\0') return std::nullopt;
  } else {
    std::string fmt(format);
    const char* rest = parse_part(s.c_str(), fmt.c_str(), tm);
    if (!rest || *rest != '\0') return std::nullopt;
  }
  // timegm + gmtime_r + strftime, without the libc calls when the fields are in the ranges
  // strptime produces (then the arithmetic is the same, month overflow of tm_mday included).
  if (tm.tm_mon >= 0 && tm.tm_mon <= 11 && tm.tm_mday >= 0 && tm.tm_mday <= 31 && tm.tm_year >= -900 &&
      tm.tm_year <= 8099) {
    const std::int64_t t = (days_from_civil(tm.tm_year + 1900, static_cast<unsigned>(tm.tm_mon + 1), 1) + tm.tm_mday - 1) * 86400 +
                           tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec - offset_s;
    std::int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
    const std::int64_t sod = t - days * 86400;
    // civil_from_days
    days += 719468;
    const std::int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    const unsigned doe = static_cast<unsigned>(days - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    const unsigned d = doy - (153 * mp + 2) / 5 + 1;
    const unsigned m = mp < 10 ? mp + 3 : mp - 9;
    const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2);
    if (y >= 1000 && y <= 9999) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(y), m, d,
                    static_cast<int>(sod / 3600), static_cast<int>(sod / 60 % 60), static_cast<int>(sod % 60));
      return std::string(buf);
    }
  }
  std::time_t t = timegm(&tm) - offset_s;
  std::tm out{};
  gmtime_r(&t, &out);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &out);
  return std::string(buf);
}

result<dataset> load_dataset(const std::filesystem::path& file) {
  const std::string where = file.string();
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return fail(errc::io, "dataset file " + where + " does not exist");
  toml::table root;
  try {
    root = toml::parse_file(where);
  } catch (const toml::parse_error& e) {
    return fail(errc::parse, where + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  dataset d;
  for (const auto& [k, v] : root) {
    const std::string key(k.str());
    auto str = [&](std::string& into) -> result<void> {
      if (auto s = v.value<std::string>()) {
        into = *s;
        return {};
      }
      return fail(errc::parse, where + ": '" + key + "' must be a string");
    };
    result<void> ok;
    if (key == "name") ok = str(d.name);
    else if (key == "dest") ok = str(d.dest);
    else if (key == "ddl") ok = str(d.ddl);
    else if (key == "insert") ok = str(d.insert_sql);
    else if (key == "message_key") ok = str(d.message_key);
    else if (key == "schema_file") {
      std::string s;
      ok = str(s);
      if (ok && !s.empty()) d.schema_file = std::filesystem::path(s).is_absolute() ? std::filesystem::path(s) : file.parent_path() / s;
    } else if (key == "fields") {
      const toml::array* arr = v.as_array();
      if (!arr) return fail(errc::parse, where + ": 'fields' must be an array of tables ([[fields]])");
      for (const auto& node : *arr) {
        const toml::table* t = node.as_table();
        if (!t) return fail(errc::parse, where + ": each [[fields]] entry must be a table");
        field_spec f;
        for (const auto& [fk, fv] : *t) {
          const std::string fkey(fk.str());
          const std::string at = where + ":" + std::to_string(fv.source().begin.line) + ": ";
          if (fkey == "required") {
            auto b = fv.value<bool>();
            if (!b) return fail(errc::parse, at + "'required' must be a boolean");
            f.required = *b;
            continue;
          }
          auto s = fv.value<std::string>();
          if (!s) return fail(errc::parse, at + "'" + fkey + "' must be a string");
          if (fkey == "column") f.column = *s;
          else if (fkey == "source") f.source = *s;
          else if (fkey == "template") f.template_text = *s;
          else if (fkey == "format") f.format = *s;
          else if (fkey == "default") f.default_value = *s;
          else if (fkey == "type") {
            auto t2 = parse_type(*s);
            if (!t2) return fail(errc::parse, at + t2.error().message);
            f.type = *t2;
          } else {
            return fail(errc::parse, at + "unknown field key '" + fkey + "'");
          }
        }
        if (f.column.empty()) return fail(errc::parse, where + ": a field has no 'column'");
        if (f.source.empty() == f.template_text.empty())
          return fail(errc::parse, where + ": field '" + f.column + "' needs exactly one of 'source' or 'template'");
        if (!f.source.empty() && f.source[0] != '/' && f.source[0] != '$')
          return fail(errc::parse, where + ": field '" + f.column + "': source must be a JSON pointer (/a/b) or $message_id, $event_time, ...");
        d.fields.push_back(std::move(f));
      }
    } else {
      return fail(errc::parse, where + ":" + std::to_string(v.source().begin.line) + ": unknown key '" + key + "'");
    }
    if (!ok) return std::unexpected(ok.error());
  }
  if (d.name.empty()) return fail(errc::parse, where + ": 'name' is required");
  if (d.dest.empty()) d.dest = d.name;
  if (d.insert_sql.empty()) return fail(errc::parse, where + ": 'insert' is required");
  if (d.fields.empty()) return fail(errc::parse, where + ": at least one [[fields]] entry is required");
  if (d.message_key != "ledger" && d.message_key != "table")
    return fail(errc::parse, where + ": message_key must be \"ledger\" or \"table\"");
  if (d.message_key == "table") {
    std::string upper = d.insert_sql;
    for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    if (upper.find("ON CONFLICT") == std::string::npos || upper.find("DO NOTHING") == std::string::npos)
      return fail(errc::parse, where + ": message_key = \"table\" needs an insert ending in "
                                       "ON CONFLICT (<message id column>) DO NOTHING");
  }
  auto [_, placeholders] = to_dollar_placeholders(d.insert_sql);
  if (placeholders != d.fields.size())
    return fail(errc::invalid_argument, where + ": 'insert' has " + std::to_string(placeholders) +
                                            " placeholders but there are " + std::to_string(d.fields.size()) + " fields");
  if (!d.schema_file.empty()) {
    auto text = read_text(d.schema_file);
    if (!text) return std::unexpected(text.error());
    try {
      auto doc = nlohmann::json::parse(*text);
      auto cs = std::make_shared<compiled_schema>();
      valijson::SchemaParser parser;
      valijson::adapters::NlohmannJsonAdapter adapter(doc);
      parser.populateSchema(adapter, cs->schema);
      cs->fast = schema_check::compile(doc);
      d.schema = std::move(cs);
    } catch (const std::exception& e) {
      return fail(errc::parse, "schema " + d.schema_file.string() + ": " + e.what());
    }
  }
  return d;
}

result<std::vector<dataset>> load_datasets(const std::filesystem::path& dir) {
  std::vector<dataset> out;
  if (dir.empty()) return out;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return fail(errc::io, "datasets folder " + dir.string() + " does not exist");
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().extension() == ".toml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    auto d = load_dataset(f);
    if (!d) return std::unexpected(d.error());
    out.push_back(std::move(*d));
  }
  return out;
}

bool has_compiled_schema(const dataset& d) { return d.schema && d.schema->fast.has_value(); }

const dataset& generic_dataset() {
  static const dataset d = make_generic();
  return d;
}

const dataset& dataset_for(const std::vector<dataset>& all, std::string_view blob_name) {
  const std::string_view dest = dest_of(blob_name);
  for (const dataset& d : all)
    if (d.dest == dest) return d;
  return generic_dataset();
}

std::vector<validated_record> validate_records(const dataset& d, const extracted_blob& blob,
                                               std::vector<quarantine_row>& quarantine) {
  return validate_records(d, std::span<const extracted_record>(blob.records), quarantine);
}

std::vector<validated_record> validate_records(const dataset& d, std::span<const extracted_record> records,
                                               std::vector<quarantine_row>& quarantine) {
  std::vector<validated_record> out;
  out.reserve(records.size());
  valijson::Validator validator;
  for (const extracted_record& r : records) {
    auto reject = [&](std::string step, std::string reason) {
      quarantine.push_back(quarantine_row{r.index, r.message_id, std::move(step), std::move(reason), std::string(r.raw)});
    };
    if (!r.problem.empty()) {
      reject("extract", r.problem);
      continue;
    }
    validated_record v;
    v.record = &r;
    if (d.generic) {
      out.push_back(std::move(v));
      continue;
    }
    // Schema validation, JSON pointers and dump() recurse per level: bound the nesting first.
    if (auto deep = check_json_depth(r.payload, "payload"); !deep) {
      reject("validate", deep.error().message);
      continue;
    }
    v.payload = nlohmann::json::parse(r.payload, nullptr, false);
    if (v.payload.is_discarded()) {
      reject("validate", "payload is not valid JSON");
      continue;
    }
    // The compiled checker only accepts (see schema_check.hpp); whatever it does not accept is
    // decided, and its reason written, by valijson.
    if (d.schema && !(d.fast_schema && d.schema->fast && d.schema->fast->accepts(v.payload))) {
      valijson::ValidationResults results;
      valijson::adapters::NlohmannJsonAdapter adapter(v.payload);
      bool ok = false;
      try {
        ok = validator.validate(d.schema->schema, adapter, &results);
      } catch (const std::exception& e) {
        reject("validate", std::string("schema validation failed: ") + e.what());
        continue;
      }
      if (!ok) {
        // valijson reports the innermost violation last; name the path and what failed.
        std::string reason;
        valijson::ValidationResults::Error e;
        int n = 0;
        while (results.popError(e) && n < 3) {
          std::string path;
          for (const auto& c : e.context) path += c;
          if (!reason.empty()) reason += "; ";
          reason += path + ": " + e.description;
          ++n;
        }
        reject("validate", reason.empty() ? "schema violation" : reason);
        continue;
      }
    }
    out.push_back(std::move(v));
  }
  return out;
}

std::vector<load_row> transform_records(const dataset& d, std::string_view blob_name,
                                        const std::vector<validated_record>& records,
                                        std::vector<quarantine_row>& quarantine) {
  // Compile the pointers and templates once per blob.
  std::vector<compiled_field> fields;
  fields.reserve(d.fields.size());
  for (const field_spec& f : d.fields) {
    compiled_field c;
    c.spec = &f;
    c.pointer = compile_pointer(f.source);
    const std::string& t = f.template_text;
    for (std::size_t i = 0; i < t.size();) {
      std::size_t open = t.find('{', i);
      if (open == std::string::npos) {
        c.parts.push_back({t.substr(i), {}, {}});
        break;
      }
      if (open > i) c.parts.push_back({t.substr(i, open - i), {}, {}});
      std::size_t close = t.find('}', open);
      if (close == std::string::npos) {
        c.parts.push_back({t.substr(open), {}, {}});
        break;
      }
      std::string src = t.substr(open + 1, close - open - 1);
      c.parts.push_back({{}, src, compile_pointer(src)});
      i = close + 1;
    }
    fields.push_back(std::move(c));
  }
  std::vector<load_row> rows;
  rows.reserve(records.size());
  for (const validated_record& r : records) {
    load_row row;
    row.index = r.record->index;
    row.message_id = r.record->message_id;
    row.values.reserve(fields.size());
    std::string problem;
    for (const compiled_field& c : fields) {
      const field_spec& f = *c.spec;
      resolved v;
      std::string derived;
      if (!f.template_text.empty()) {
        bool all = true;
        for (const auto& p : c.parts) {
          if (p.source.empty()) {
            derived += p.literal;
            continue;
          }
          resolved pv = resolve(p.source, p.pointer, r, blob_name);
          if (!pv.present) all = false;
          else derived += as_text(pv);
        }
        if (all) {
          v.text = derived;
          v.present = true;
        }
      } else {
        v = resolve(f.source, c.pointer, r, blob_name);
      }
      if (!v.present) {
        if (f.default_value) {
          v.text = *f.default_value;
          v.json = nullptr;
          v.present = true;
        } else if (f.required) {
          problem = "field '" + f.column + "': " + (f.source.empty() ? f.template_text : f.source) + " is missing";
          break;
        } else {
          row.values.emplace_back(std::monostate{});
          continue;
        }
      }
      auto conv = convert(f, v);
      if (auto* err = std::get_if<std::string>(&conv)) {
        problem = std::move(*err);
        break;
      }
      row.values.push_back(std::move(std::get<sql_value>(conv)));
    }
    if (!problem.empty()) {
      quarantine.push_back(quarantine_row{r.record->index, r.record->message_id, "transform", std::move(problem),
                                          std::string(r.record->raw)});
      continue;
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

} // namespace shoal::workers::etl
