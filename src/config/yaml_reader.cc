#include "config/yaml_reader.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>

namespace lipsync::config::internal {
namespace {

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Whole-string base-10 integer; YAML's hex/octal spellings are not config values.
bool ParseInt64(const std::string& text, int64_t* out) {
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (begin != end && *begin == '+') ++begin;
  auto [ptr, ec] = std::from_chars(begin, end, *out);
  return ec == std::errc() && ptr == end && begin != end;
}

bool ParseDouble(const std::string& text, double* out) {
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  if (begin != end && *begin == '+') ++begin;
  auto [ptr, ec] = std::from_chars(begin, end, *out, std::chars_format::general);
  return ec == std::errc() && ptr == end && begin != end && std::isfinite(*out);
}

}  // namespace

void ErrorList::Add(const std::string& key_path, const std::string& what) {
  messages.push_back(file + ": " + (key_path.empty() ? "" : key_path + ": ") + what);
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Null:
      return "nothing";
    default: {
      std::string text = node.Scalar();
      if (text.size() > 60) text = text.substr(0, 60) + "...";
      return "'" + text + "'";
    }
  }
}

MapReader::MapReader(const YAML::Node& node, std::string path, ErrorList* errors)
    : node_(node), path_(std::move(path)), errors_(errors) {
  if (!node_.IsDefined() || node_.IsNull()) {
    node_ = YAML::Node(YAML::NodeType::Map);
  } else if (!node_.IsMap()) {
    errors_->Add(path_, "expected a mapping of keys, got " + Describe(node_));
    valid_ = false;
  }
}

std::string MapReader::KeyPath(const std::string& key) const {
  // Keys come from the file: quoted at most 60 characters long (as values are).
  const std::string shown = key.size() > 60 ? key.substr(0, 60) + "..." : key;
  return path_.empty() ? shown : path_ + "." + shown;
}

void MapReader::Fail(const std::string& key, const std::string& what) {
  errors_->Add(KeyPath(key), what);
}

const YAML::Node* MapReader::Scalar(const char* key, const char* expected, YAML::Node* storage) {
  known_.emplace_back(key);
  if (!valid_) return nullptr;
  *storage = node_[key];
  if (!storage->IsDefined() || storage->IsNull()) return nullptr;
  if (!storage->IsScalar()) {
    Fail(key, std::string("expected ") + expected + ", got " + Describe(*storage));
    return nullptr;
  }
  return storage;
}

void MapReader::Int64(const char* key, int64_t* out, int64_t min, int64_t max) {
  YAML::Node storage;
  const YAML::Node* value = Scalar(key, "an integer", &storage);
  if (value == nullptr) return;
  int64_t parsed = 0;
  if (!ParseInt64(value->Scalar(), &parsed)) {
    Fail(key, "expected an integer, got " + Describe(*value));
    return;
  }
  if (parsed < min || parsed > max) {
    std::string range = max >= INT32_MAX ? ">= " + std::to_string(min)
                                         : "in " + std::to_string(min) + ".." + std::to_string(max);
    Fail(key, "expected an integer " + range + ", got " + std::to_string(parsed));
    return;
  }
  *out = parsed;
}

void MapReader::Int(const char* key, int* out, int64_t min, int64_t max) {
  int64_t wide = *out;
  Int64(key, &wide, min, std::min<int64_t>(max, INT32_MAX));
  *out = static_cast<int>(wide);
}

void MapReader::Double(const char* key, double* out, double min, bool min_exclusive) {
  YAML::Node storage;
  const YAML::Node* value = Scalar(key, "a number", &storage);
  if (value == nullptr) return;
  double parsed = 0;
  if (!ParseDouble(value->Scalar(), &parsed)) {
    Fail(key, "expected a number, got " + Describe(*value));
    return;
  }
  if (parsed < min || (min_exclusive && parsed == min)) {
    char bound[32];
    std::snprintf(bound, sizeof bound, "%g", min);
    Fail(key, std::string("expected a number ") + (min_exclusive ? "> " : ">= ") + bound +
                  ", got " + value->Scalar());
    return;
  }
  *out = parsed;
}

void MapReader::Bool(const char* key, bool* out) {
  YAML::Node storage;
  const YAML::Node* value = Scalar(key, "true or false", &storage);
  if (value == nullptr) return;
  const std::string text = Lower(value->Scalar());
  if (text == "true" || text == "yes" || text == "on") {
    *out = true;
  } else if (text == "false" || text == "no" || text == "off") {
    *out = false;
  } else {
    Fail(key, "expected true or false, got " + Describe(*value));
  }
}

void MapReader::String(const char* key, std::string* out) {
  YAML::Node storage;
  const YAML::Node* value = Scalar(key, "a string", &storage);
  if (value != nullptr) *out = value->Scalar();
}

void MapReader::StringList(const char* key, std::vector<std::string>* out, size_t max_items) {
  known_.emplace_back(key);
  if (!valid_) return;
  const YAML::Node list = node_[key];
  if (!list.IsDefined() || list.IsNull()) return;
  if (!list.IsSequence()) {
    Fail(key, "expected a list of strings, got " + Describe(list));
    return;
  }
  if (list.size() > max_items) {
    Fail(key, "expected at most " + std::to_string(max_items) + " entries, got " +
                  std::to_string(list.size()));
    return;
  }
  std::vector<std::string> items;
  for (size_t i = 0; i < list.size(); ++i) {
    if (!list[i].IsScalar()) {
      Fail(key, "entry " + std::to_string(i + 1) + ": expected a string, got " + Describe(list[i]));
      return;
    }
    items.push_back(list[i].Scalar());
  }
  *out = std::move(items);
}

void MapReader::Section(const char* key, const std::function<void(MapReader&)>& fn) {
  known_.emplace_back(key);
  if (!valid_) return;
  MapReader child(node_[key], KeyPath(key), errors_);
  if (!child.valid()) return;
  fn(child);
  child.Finish();
}

void MapReader::Entries(const char* key,
                        const std::function<std::string(const std::string&)>& validate_name,
                        const std::function<void(const std::string&, MapReader&)>& fn) {
  known_.emplace_back(key);
  if (!valid_) return;
  MapReader entries(node_[key], KeyPath(key), errors_);
  if (!entries.valid()) return;
  std::map<std::string, YAML::Mark> seen;
  for (const auto& entry : entries.node_) {
    if (!entry.first.IsScalar()) {
      entries.Fail(Describe(entry.first), "expected a name as the key");
      continue;
    }
    const std::string name = entry.first.Scalar();
    if (!entries.FirstOccurrence(entry.first, &seen)) continue;
    if (std::string problem = validate_name(name); !problem.empty()) {
      entries.Fail(name, problem);
      continue;
    }
    MapReader child(entry.second, entries.KeyPath(name), errors_);
    if (!child.valid()) continue;
    fn(name, child);
    child.Finish();
  }
}

bool MapReader::FirstOccurrence(const YAML::Node& key, std::map<std::string, YAML::Mark>* seen) {
  const std::string name = key.IsScalar() ? key.Scalar() : "?";
  auto [it, inserted] = seen->emplace(name, key.Mark());
  if (inserted) return true;
  // yaml-cpp keeps both entries and answers lookups with the first, so the second would
  // be silently ignored: name both places (marks are 0-based; editors count from 1).
  auto line = [](const YAML::Mark& mark) {
    return mark.is_null() ? std::string("?") : std::to_string(mark.line + 1);
  };
  Fail(name, "duplicate key at line " + line(key.Mark()) + " (first at line " + line(it->second) +
                 "); expected each key once: merge the two into one mapping");
  return false;
}

void MapReader::Finish() {
  if (!valid_) return;
  std::map<std::string, YAML::Mark> seen;
  for (const auto& entry : node_) {
    const std::string name = entry.first.IsScalar() ? entry.first.Scalar() : "?";
    if (!FirstOccurrence(entry.first, &seen)) continue;
    if (std::find(known_.begin(), known_.end(), name) != known_.end()) continue;
    std::string known_list;
    std::string closest;
    size_t closest_distance = 3;  // only suggest near-misses
    for (const auto& k : known_) {
      known_list += (known_list.empty() ? "" : ", ") + k;
      size_t d = EditDistance(name, k);
      if (d < closest_distance) {
        closest_distance = d;
        closest = k;
      }
    }
    std::string message = "unknown key '" + KeyPath(name) + "'";
    if (!closest.empty()) message += " (did you mean '" + closest + "'?)";
    message += " (known: " + known_list + ")";
    errors_->messages.push_back(errors_->file + ": " + message);
  }
}

}  // namespace lipsync::config::internal
