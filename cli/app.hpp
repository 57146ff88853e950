// The whole of agentgw's main(): global options, the command table, exit codes.
#pragma once

#include <iosfwd>

namespace agentgw::cli {

// Parses argv, runs the chosen command, prints errors as "agentgw: <message>" on `err`.
// Returns the process exit code (SPEC §5).
int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace agentgw::cli
