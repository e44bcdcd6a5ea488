// Command-line flags for the subcommands: --name value, --name=value, --switch.
// Unknown flags and missing values are errors, never silently ignored.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace lipsync {

class Flags {
 public:
  // `known` lists accepted flag names without dashes; `switches` those taking no value.
  static Expected<Flags> Parse(int argc, char** argv, const std::set<std::string>& known,
                               const std::set<std::string>& switches = {});

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string GetString(const std::string& name, const std::string& fallback = "") const;
  // INVALID_ARGUMENT when the value is not an integer / number.
  Expected<long> GetInt(const std::string& name, long fallback) const;
  Expected<double> GetDouble(const std::string& name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace lipsync
