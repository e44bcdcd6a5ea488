// Subcommands of the `lipsync` binary. Each cmd_*.cc registers one with
// LIPSYNC_COMMAND and stays thin: parse flags, call the domain libraries, print.
#pragma once

#include <string>
#include <vector>

namespace lipsync::cli {

struct Command {
  std::string name;
  std::string summary;
  // argv excludes the program and subcommand names. Returns the process exit code.
  int (*run)(int argc, char** argv);
};

bool RegisterCommand(Command command);
const std::vector<Command>& Commands();

}  // namespace lipsync::cli

#define LIPSYNC_COMMAND(name, summary, fn) \
  static const bool kRegistered_##fn = ::lipsync::cli::RegisterCommand({name, summary, fn})
