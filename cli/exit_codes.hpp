// The CLI's exit codes (SPEC §5) and the one table mapping error codes to them.
#pragma once

#include "common/result.hpp"

namespace agentgw::cli {

enum ExitCode : int {
    k_exit_ok = 0,
    k_exit_failure = 1,      // the daemon reported a failure
    k_exit_usage = 2,        // bad command line
    k_exit_not_found = 3,    // the named thing does not exist
    k_exit_denied = 4,       // permission denied
    k_exit_unreachable = 5,  // the daemon could not be reached
};

int exit_code_for(Code code) noexcept;

}  // namespace agentgw::cli
