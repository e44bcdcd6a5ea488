// `lipsync <subcommand> [flags]`: dispatches to the registered subcommands.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "cli/command.h"

namespace lipsync::cli {

std::vector<Command>& MutableCommands() {
  static std::vector<Command> commands;
  return commands;
}
bool RegisterCommand(Command command) {
  MutableCommands().push_back(std::move(command));
  return true;
}
const std::vector<Command>& Commands() { return MutableCommands(); }

}  // namespace lipsync::cli

static void PrintUsage() {
  std::printf("usage: lipsync <command> [flags]   (lipsync <command> --help for its flags)\n\n");
  auto commands = lipsync::cli::Commands();
  std::sort(commands.begin(), commands.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const auto& c : commands) std::printf("  %-14s %s\n", c.name.c_str(), c.summary.c_str());
}

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "help")) {
    PrintUsage();
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : lipsync::cli::Commands()) {
    if (c.name == argv[1]) return c.run(argc - 2, argv + 2);
  }
  std::fprintf(stderr, "lipsync: unknown command '%s'\n\n", argv[1]);
  PrintUsage();
  return 2;
}
