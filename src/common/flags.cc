#include "common/flags.h"

#include <cstdlib>

namespace lipsync {

Expected<Flags> Flags::Parse(int argc, char** argv, const std::set<std::string>& known,
                             const std::set<std::string>& switches) {
  Flags flags;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      flags.positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (!known.count(name) && !switches.count(name)) {
      return Status::InvalidArgument("unknown flag --" + name);
    }
    if (switches.count(name)) {
      flags.values_[name] = has_value ? value : "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return Status::InvalidArgument("flag --" + name + " needs a value");
      value = argv[++i];
    }
    flags.values_[name] = value;
  }
  return flags;
}

std::string Flags::GetString(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

Expected<long> Flags::GetInt(const std::string& name, long fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  char* end = nullptr;
  long v = std::strtol(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end != '\0') {
    return Status::InvalidArgument("--" + name + " expects an integer, got '" + it->second + "'");
  }
  return v;
}

Expected<double> Flags::GetDouble(const std::string& name, double fallback) const {
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  char* end = nullptr;
  double v = std::strtod(it->second.c_str(), &end);
  if (it->second.empty() || *end != '\0') {
    return Status::InvalidArgument("--" + name + " expects a number, got '" + it->second + "'");
  }
  return v;
}

}  // namespace lipsync
