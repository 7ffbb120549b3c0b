#pragma once
// A JSON Schema compiled into a direct checker for the keyword subset the shipped datasets use,
// in front of valijson (workers/etl/dataset.cpp, the validate step). It only ever ACCEPTS:
// `accepts(v)` true means valijson (strong types, draft 7) accepts `v` too; false means "not
// sure", and the caller asks valijson, whose verdict and error text are final. So quarantine
// reasons are valijson's, word for word, and a record valijson accepts but this checker does
// not is merely slower. Schemas with a keyword outside the subset do not compile (valijson
// alone validates them).
//
// Subset (anywhere in the schema): type (a name or a list of names), properties, required,
// additionalProperties (boolean), enum (strings only), minimum, maximum, exclusiveMinimum,
// exclusiveMaximum (numbers), minLength, maxLength, pattern, format ("date-time", "date",
// "time"; other formats are not checked by valijson 1.0 either), and the annotations $schema,
// $id, $comment, title, description, default, examples.
// Patterns made of literals, escapes (\d \w \. …), classes ([0-9a-f], [^…]), `.` and the
// quantifiers ? * + {n} {n,} {n,m}, anchored or not, run on a small backtracking matcher;
// any other pattern runs on std::regex exactly as valijson runs it (regex_search).

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>

namespace shoal::workers::etl {

/// A compiled schema checker. Immutable after compile(); thread-safe (const, no caches).
class schema_check {
public:
  /// Compiles `schema` (a parsed JSON Schema document); nullopt when it uses a keyword or a
  /// value shape outside the subset above.
  static std::optional<schema_check> compile(const nlohmann::json& schema);
  /// True when `v` certainly satisfies the schema (valijson would accept it). False: unsure.
  bool accepts(const nlohmann::json& v) const;

  struct node; ///< one compiled (sub)schema, defined in schema_check.cpp

private:
  explicit schema_check(std::shared_ptr<const node> root) : root_(std::move(root)) {}
  std::shared_ptr<const node> root_;
};

} // namespace shoal::workers::etl
