// The daemon's top level: from a parsed command line to a running gateway and back to an exit
// code. Runs its io_context on the calling thread.
#pragma once

#include "daemon/config.hpp"

namespace agentgw {

// The whole of agentgwd's main(): parses arguments, sets up logging, opens the vault, serves
// until SIGTERM/SIGINT. Returns the process exit code; failures are logged as one line.
int daemon_main(int argc, const char* const* argv);

// Runs the gateway with a resolved configuration until a stop signal. Returns 0 after a clean
// stop, 1 when start-up failed (with the reason logged).
int run_daemon(DaemonConfig config);

// Rewraps the vault's data key under a new master secret. Returns an exit code.
int rekey_vault(const DaemonInvocation& invocation);

}  // namespace agentgw
