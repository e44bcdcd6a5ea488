// Internal to the config library: reads one YAML mapping into plain struct fields and
// remembers which keys it read, so unknown keys, wrong types and out-of-range values
// become messages naming the file and the full key path ("inference.yaml:
// server.queue_size: expected an integer, got 'many'").
// Not thread-safe; a reader lives for one parse. Errors accumulate in a shared list.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lipsync::config::internal {

// Collects every problem of one document, so an operator fixes them in one pass.
struct ErrorList {
  std::string file;
  std::vector<std::string> messages;
  void Add(const std::string& key_path, const std::string& what);
};

class MapReader {
 public:
  // `path` is the dotted key path of this mapping ("" for the document root). A null
  // node reads as an empty mapping (a section whose entries are all commented out).
  MapReader(const YAML::Node& node, std::string path, ErrorList* errors);

  // Absent or null keys leave *out unchanged: the struct holds the defaults.
  void Int(const char* key, int* out, int64_t min, int64_t max);
  void Int64(const char* key, int64_t* out, int64_t min, int64_t max);
  // min_exclusive: the value must be strictly greater than min (e.g. timeouts).
  void Double(const char* key, double* out, double min, bool min_exclusive = false);
  void Bool(const char* key, bool* out);
  void String(const char* key, std::string* out);
  // A list of scalars, e.g. [a, b]; at most `max_items` entries (each a string).
  void StringList(const char* key, std::vector<std::string>* out, size_t max_items);
  // One of the listed spellings, e.g. {{"lru", kLru}, {"lfu", kLfu}}.
  template <typename E>
  void Enum(const char* key, E* out, std::initializer_list<std::pair<const char*, E>> choices);
  // Reads the nested mapping at `key` with `fn`, then checks its keys.
  void Section(const char* key, const std::function<void(MapReader&)>& fn);
  // Calls fn(entry_key, reader) for every entry of the mapping at `key` whose name
  // passes `validate_name` (e.g. a model id); entries are user-named, so only their
  // values are checked for unknown keys.
  void Entries(const char* key, const std::function<std::string(const std::string&)>& validate_name,
               const std::function<void(const std::string&, MapReader&)>& fn);
  // Records a problem with `key` of this mapping.
  void Fail(const std::string& key, const std::string& what);
  // Reports keys that no read asked for, and duplicate keys (with both line numbers).
  void Finish();

  std::string KeyPath(const std::string& key) const;
  bool valid() const { return valid_; }

 private:
  // True the first time `key` appears in this mapping; a repeat is reported with the
  // line numbers of both occurrences.
  bool FirstOccurrence(const YAML::Node& key, std::map<std::string, YAML::Mark>* seen);
  // The scalar at `key`, or nullptr when absent/null; wrong shapes are reported.
  const YAML::Node* Scalar(const char* key, const char* expected, YAML::Node* storage);

  YAML::Node node_;
  std::string path_;
  ErrorList* errors_;
  bool valid_ = true;  // false: not a mapping; reads are skipped, already reported
  std::vector<std::string> known_;
};

// "'many'" for a scalar, "a mapping" / "a list" otherwise: what the user wrote.
std::string Describe(const YAML::Node& node);

template <typename E>
void MapReader::Enum(const char* key, E* out,
                     std::initializer_list<std::pair<const char*, E>> choices) {
  YAML::Node storage;
  std::string expected = "one of";
  for (const auto& choice : choices) expected += std::string(" '") + choice.first + "'";
  const YAML::Node* value = Scalar(key, expected.c_str(), &storage);
  if (value == nullptr) return;
  for (const auto& choice : choices) {
    if (value->Scalar() == choice.first) {
      *out = choice.second;
      return;
    }
  }
  Fail(key, "expected " + expected + ", got " + Describe(*value));
}

}  // namespace lipsync::config::internal
