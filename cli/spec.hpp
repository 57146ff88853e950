// The command tree of agentgw as one JSON document (`agentgw __spec`), from which
// scripts/gen-completions writes the shell completions, and the hints options carry for it.
// Thread-compatible.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace agentgw::cli {

// Hints for completion, kept with the option they describe. CLI11 2.1.2 has no field for
// them, so each travels in the name of a validator that accepts every value and has no
// description: parsing and --help are unchanged. Values must not contain whitespace.

// `opt` accepts only `values` (a CLI::IsMember check), which completion offers.
CLI::Option* one_of(CLI::Option* opt, const std::vector<std::string>& values);

// Completion offers `values` for `opt`, which accepts others too (an HTTP method, say).
CLI::Option* suggest(CLI::Option* opt, const std::vector<std::string>& values);

// `opt` takes a file name: completion offers the file system.
CLI::Option* names_file(CLI::Option* opt);

// The visible commands (hidden ones, in group "", are left out) and options of `app`, as:
//   command:    {name, description, fallthrough, requires_command, options: [option...],
//                positionals: [positional...], commands: [command...]}
//   option:     {names: ["-h", "--help"], description, takes_value, repeatable, required,
//                role?: "help"|"version", env?, excludes?: [name...], choices?: [value...],
//                only_choices?, file?}
//   positional: {name, description, required, repeatable, choices?, only_choices?, file?}
// The root is a command whose name is the program's.
nlohmann::ordered_json describe(CLI::App& app);

}  // namespace agentgw::cli
