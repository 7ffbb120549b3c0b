#include "workers/etl/schema_check.hpp"

#include <cstdint>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::workers::etl {
namespace {

// -- a small pattern matcher ------------------------------------------------------------------------

// One atom of a pattern: a set of bytes with a repeat range.
struct atom {
  bool set[256] = {};
  std::size_t min = 1, max = 1; ///< max = SIZE_MAX: unbounded
};

struct simple_pattern {
  bool anchored_start = false, anchored_end = false;
  std::vector<atom> atoms;
};

void add_range(atom& a, unsigned lo, unsigned hi) {
  for (unsigned c = lo; c <= hi; ++c) a.set[c] = true;
}

// An escape inside or outside a class: \d \w or an escaped punctuation byte. False: unsupported.
bool add_escape(atom& a, char e) {
  if (e == 'd') add_range(a, '0', '9');
  else if (e == 'w') {
    add_range(a, '0', '9');
    add_range(a, 'a', 'z');
    add_range(a, 'A', 'Z');
    a.set[static_cast<unsigned char>('_')] = true;
  } else if (std::string_view("\\/.-^$*+?()[]{}|").find(e) != std::string_view::npos) {
    a.set[static_cast<unsigned char>(e)] = true;
  } else {
    return false; // \s \b \n \u… and friends: leave to std::regex
  }
  return true;
}

// Compiles the subset described in the header; nullopt otherwise (the caller uses std::regex).
std::optional<simple_pattern> compile_pattern(std::string_view p) {
  simple_pattern out;
  std::size_t i = 0;
  if (i < p.size() && p[i] == '^') {
    out.anchored_start = true;
    ++i;
  }
  while (i < p.size()) {
    char c = p[i];
    if (c == '$' && i + 1 == p.size()) {
      out.anchored_end = true;
      break;
    }
    atom a;
    if (c == '\\') {
      if (i + 1 >= p.size() || !add_escape(a, p[i + 1])) return std::nullopt;
      i += 2;
    } else if (c == '[') {
      ++i;
      bool negate = false;
      if (i < p.size() && p[i] == '^') {
        negate = true;
        ++i;
      }
      bool first = true;
      while (true) {
        if (i >= p.size()) return std::nullopt;
        char d = p[i];
        if (d == ']' && !first) {
          ++i;
          break;
        }
        if (d == ']' || d == '[') return std::nullopt; // "[]…]" and nested classes: leave to std::regex
        first = false;
        if (d == '\\') {
          if (i + 1 >= p.size() || !add_escape(a, p[i + 1])) return std::nullopt;
          i += 2;
          continue;
        }
        if (i + 2 < p.size() && p[i + 1] == '-' && p[i + 2] != ']') {
          char hi = p[i + 2];
          if (hi == '\\' || static_cast<unsigned char>(hi) < static_cast<unsigned char>(d)) return std::nullopt;
          add_range(a, static_cast<unsigned char>(d), static_cast<unsigned char>(hi));
          i += 3;
          continue;
        }
        a.set[static_cast<unsigned char>(d)] = true;
        ++i;
      }
      if (negate)
        for (auto& b : a.set) b = !b;
    } else if (c == '.') {
      for (auto& b : a.set) b = true;
      a.set[static_cast<unsigned char>('\n')] = false;
      a.set[static_cast<unsigned char>('\r')] = false;
      ++i;
    } else if (std::string_view("^$*+?(){}|]").find(c) != std::string_view::npos) {
      return std::nullopt;
    } else {
      a.set[static_cast<unsigned char>(c)] = true;
      ++i;
    }
    // An optional quantifier (no lazy or possessive forms).
    if (i < p.size()) {
      char q = p[i];
      if (q == '?' || q == '*' || q == '+') {
        a.min = q == '+' ? 1 : 0;
        a.max = q == '?' ? 1 : SIZE_MAX;
        ++i;
      } else if (q == '{') {
        std::size_t close = p.find('}', i);
        if (close == std::string_view::npos) return std::nullopt;
        std::string_view body = p.substr(i + 1, close - i - 1);
        std::size_t comma = body.find(',');
        auto num = [](std::string_view s, std::size_t& v) {
          if (s.empty() || s.size() > 6) return false;
          v = 0;
          for (char ch : s) {
            if (ch < '0' || ch > '9') return false;
            v = v * 10 + static_cast<std::size_t>(ch - '0');
          }
          return true;
        };
        if (comma == std::string_view::npos) {
          if (!num(body, a.min)) return std::nullopt;
          a.max = a.min;
        } else {
          if (!num(body.substr(0, comma), a.min)) return std::nullopt;
          if (comma + 1 == body.size()) a.max = SIZE_MAX;
          else if (!num(body.substr(comma + 1), a.max) || a.max < a.min) return std::nullopt;
        }
        i = close + 1;
      }
      if (i < p.size() && (p[i] == '?' || p[i] == '*' || p[i] == '+' || p[i] == '{')) return std::nullopt;
    }
    out.atoms.push_back(a);
  }
  return out;
}

// Backtracking match of atoms[k..] at s[pos..]; greedy like ECMAScript (the verdict, not the
// match, is what counts, so greediness does not change the answer).
bool match_here(const simple_pattern& p, std::size_t k, std::string_view s, std::size_t pos) {
  if (k == p.atoms.size()) return !p.anchored_end || pos == s.size();
  const atom& a = p.atoms[k];
  std::size_t n = 0;
  while (n < a.max && pos + n < s.size() && a.set[static_cast<unsigned char>(s[pos + n])]) ++n;
  if (n < a.min) return false;
  for (std::size_t m = n + 1; m-- > a.min;)
    if (match_here(p, k + 1, s, pos + m)) return true;
  return false;
}

bool search(const simple_pattern& p, std::string_view s) {
  if (p.anchored_start) return match_here(p, 0, s, 0);
  for (std::size_t start = 0; start <= s.size(); ++start)
    if (match_here(p, 0, s, start)) return true;
  return false;
}

// -- formats, as valijson 1.0 checks them -------------------------------------------------------

bool digits(std::string_view s, std::size_t at, std::size_t n) {
  if (at + n > s.size()) return false;
  for (std::size_t i = at; i < at + n; ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}
int num2(std::string_view s, std::size_t at) { return (s[at] - '0') * 10 + (s[at + 1] - '0'); }

bool date_range_ok(int month, int day) {
  if (month == 2) return day >= 0 && day <= 29;
  int limit = (month == 4 || month == 6 || month == 9 || month == 11) ? 30 : 31;
  return day >= 0 && day <= limit;
}

// YYYY…-MM-DD at s[0..], returns the index after it (0 = no match). Month 01–12, day 01–31 and
// within the month's range (February ≤ 29), as valijson's regex plus validate_date_range.
std::size_t date_part(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  if (i == 0 || i >= s.size() || s[i] != '-' || !digits(s, i + 1, 2) || i + 3 >= s.size() || s[i + 3] != '-' ||
      !digits(s, i + 4, 2))
    return 0;
  const int month = num2(s, i + 1), day = num2(s, i + 4);
  if (month < 1 || month > 12 || day < 1 || day > 31 || !date_range_ok(month, day)) return 0;
  return i + 6;
}

// HH:MM:SS[.f](Z|z|±HH:MM) at s[at..] to the end.
bool time_part(std::string_view s, std::size_t i) {
  if (!digits(s, i, 2) || i + 2 >= s.size() || s[i + 2] != ':' || !digits(s, i + 3, 2) || i + 5 >= s.size() ||
      s[i + 5] != ':' || !digits(s, i + 6, 2))
    return false;
  const int hh = num2(s, i), mm = num2(s, i + 3), ss = num2(s, i + 6);
  if (hh > 23 || mm > 59 || ss > 60) return false;
  i += 8;
  if (i < s.size() && s[i] == '.') {
    std::size_t j = i + 1;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
    if (j == i + 1) return false;
    i = j;
  }
  if (i >= s.size()) return false;
  if (s[i] == 'Z' || s[i] == 'z') return i + 1 == s.size();
  if (s[i] != '+' && s[i] != '-') return false; // valijson's class also takes '|': unsure, not accepted
  if (i + 6 != s.size() || !digits(s, i + 1, 2) || s[i + 3] != ':' || !digits(s, i + 4, 2)) return false;
  return num2(s, i + 1) <= 23 && num2(s, i + 4) <= 59;
}

bool format_ok(const std::string& format, std::string_view s) {
  if (format == "date") {
    std::size_t n = date_part(s);
    return n != 0 && n == s.size();
  }
  if (format == "time") return time_part(s, 0);
  // date-time
  std::size_t n = date_part(s);
  if (n == 0 || n >= s.size() || (s[n] != 'T' && s[n] != 't')) return false;
  return time_part(s, n + 1);
}

// Code points of a string as valijson counts them; nullopt when not plain ASCII without NUL
// (then the checker is unsure and valijson decides).
std::optional<std::size_t> ascii_length(std::string_view s) {
  for (char c : s)
    if (c == '\0' || static_cast<unsigned char>(c) >= 0x80) return std::nullopt;
  return s.size();
}

enum type_bit : unsigned {
  t_object = 1, t_array = 2, t_string = 4, t_number = 8, t_integer = 16, t_boolean = 32, t_null = 64,
};

} // namespace

struct schema_check::node {
  struct property; ///< a member's name and subschema (a std::pair of an incomplete node trips clang)
  unsigned types = 0; ///< 0 = any
  std::vector<property> properties;
  std::vector<std::string> required;
  bool additional = true;
  std::optional<std::vector<std::string>> enum_strings;
  std::optional<double> minimum, maximum, exclusive_minimum, exclusive_maximum;
  std::optional<std::size_t> min_length, max_length;
  std::optional<simple_pattern> pattern;
  std::shared_ptr<const std::regex> pattern_regex; ///< when the pattern is outside the subset
  std::string format;                              ///< "", "date-time", "date" or "time"

  bool accepts(const nlohmann::json& v) const;
};

struct schema_check::node::property {
  std::string name;
  node schema;
};

namespace {

std::optional<schema_check::node> compile_node(const nlohmann::json& s) {
  if (!s.is_object()) return std::nullopt; // boolean schemas: leave to valijson
  schema_check::node n;
  for (auto it = s.begin(); it != s.end(); ++it) {
    const std::string& k = it.key();
    const nlohmann::json& v = it.value();
    if (k == "$schema" || k == "$id" || k == "$comment" || k == "title" || k == "description" || k == "default" ||
        k == "examples")
      continue;
    if (k == "type") {
      auto bit = [](const nlohmann::json& t) -> unsigned {
        if (!t.is_string()) return 0;
        const auto& name = t.get_ref<const std::string&>();
        if (name == "object") return t_object;
        if (name == "array") return t_array;
        if (name == "string") return t_string;
        if (name == "number") return t_number;
        if (name == "integer") return t_integer;
        if (name == "boolean") return t_boolean;
        if (name == "null") return t_null;
        return 0;
      };
      if (v.is_array()) {
        if (v.empty()) return std::nullopt;
        for (const auto& t : v) {
          unsigned b = bit(t);
          if (!b) return std::nullopt;
          n.types |= b;
        }
      } else {
        n.types = bit(v);
        if (!n.types) return std::nullopt;
      }
    } else if (k == "properties") {
      if (!v.is_object()) return std::nullopt;
      for (auto p = v.begin(); p != v.end(); ++p) {
        auto sub = compile_node(p.value());
        if (!sub) return std::nullopt;
        n.properties.push_back(schema_check::node::property{p.key(), std::move(*sub)});
      }
    } else if (k == "required") {
      if (!v.is_array()) return std::nullopt;
      for (const auto& r : v) {
        if (!r.is_string()) return std::nullopt;
        n.required.push_back(r.get<std::string>());
      }
    } else if (k == "additionalProperties") {
      if (!v.is_boolean()) return std::nullopt;
      n.additional = v.get<bool>();
    } else if (k == "enum") {
      if (!v.is_array() || v.empty()) return std::nullopt;
      std::vector<std::string> values;
      for (const auto& e : v) {
        if (!e.is_string()) return std::nullopt;
        values.push_back(e.get<std::string>());
      }
      n.enum_strings = std::move(values);
    } else if (k == "minimum" || k == "maximum" || k == "exclusiveMinimum" || k == "exclusiveMaximum") {
      if (!v.is_number()) return std::nullopt; // draft 4 booleans: leave to valijson
      const double d = v.get<double>();
      if (k == "minimum") n.minimum = d;
      else if (k == "maximum") n.maximum = d;
      else if (k == "exclusiveMinimum") n.exclusive_minimum = d;
      else n.exclusive_maximum = d;
    } else if (k == "minLength" || k == "maxLength") {
      if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0)) return std::nullopt;
      (k == "minLength" ? n.min_length : n.max_length) = v.get<std::size_t>();
    } else if (k == "pattern") {
      if (!v.is_string()) return std::nullopt;
      const auto& text = v.get_ref<const std::string&>();
      n.pattern = compile_pattern(text);
      if (!n.pattern) {
        try {
          n.pattern_regex = std::make_shared<const std::regex>(text); // as valijson builds it
        } catch (const std::regex_error&) {
          return std::nullopt;
        }
      }
    } else if (k == "format") {
      if (!v.is_string()) return std::nullopt;
      const auto& f = v.get_ref<const std::string&>();
      if (f == "date-time" || f == "date" || f == "time") n.format = f;
      // valijson 1.0 checks no other format: nothing to check
    } else {
      return std::nullopt; // $ref, items, allOf, oneOf, dependencies, …: valijson only
    }
  }
  return n;
}

} // namespace

bool schema_check::node::accepts(const nlohmann::json& v) const {
  if (types) {
    bool ok = false;
    if (types & t_object) ok |= v.is_object();
    if (types & t_array) ok |= v.is_array();
    if (types & t_string) ok |= v.is_string();
    if (types & t_number) ok |= v.is_number();
    if (types & t_integer) ok |= v.is_number_integer();
    if (types & t_boolean) ok |= v.is_boolean();
    if (types & t_null) ok |= v.is_null();
    if (!ok) return false;
  }
  if (enum_strings) {
    if (!v.is_string()) return false;
    const auto& s = v.get_ref<const std::string&>();
    bool found = false;
    for (const auto& e : *enum_strings) found |= e == s;
    if (!found) return false;
  }
  if (v.is_number()) {
    // valijson compares asDouble() with the bound; unsigned values above INT64_MAX come out of
    // its adapter wrapped to negative numbers: unsure, let valijson decide.
    if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) return false;
    const double d = v.get<double>();
    if (minimum && d < *minimum) return false;
    if (maximum && d > *maximum) return false;
    if (exclusive_minimum && d <= *exclusive_minimum) return false;
    if (exclusive_maximum && d >= *exclusive_maximum) return false;
  }
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (min_length || max_length) {
      auto len = ascii_length(s);
      if (!len) return false;
      if (min_length && *len < *min_length) return false;
      if (max_length && *len > *max_length) return false;
    }
    if (pattern && !search(*pattern, s)) return false;
    if (pattern_regex && !std::regex_search(s, *pattern_regex)) return false;
    if (!format.empty() && !format_ok(format, s)) return false;
  } else if (!format.empty()) {
    return false; // valijson reads every value as a string for 'format': let it decide
  }
  if (v.is_object()) {
    for (const auto& r : required)
      if (!v.contains(r)) return false;
    for (const auto& [name, sub] : properties) {
      auto it = v.find(name);
      if (it != v.end() && !sub.accepts(*it)) return false;
    }
    if (!additional)
      for (auto it = v.begin(); it != v.end(); ++it) {
        bool known = false;
        for (const auto& p : properties) known |= p.name == it.key();
        if (!known) return false;
      }
  }
  return true;
}

std::optional<schema_check> schema_check::compile(const nlohmann::json& schema) {
  auto n = compile_node(schema);
  if (!n) return std::nullopt;
  return schema_check(std::make_shared<const node>(std::move(*n)));
}

bool schema_check::accepts(const nlohmann::json& v) const { return root_->accepts(v); }

} // namespace shoal::workers::etl
