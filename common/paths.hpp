// Where the control socket lives when nobody says otherwise (SPEC §4). Shared so that the
// daemon binds and the CLI connects to the same place.
#pragma once

#include <filesystem>

#include "common/result.hpp"

namespace agentgw {

// $RUNTIME_DIRECTORY/agentgw.sock, else /run/agentgw/agentgw.sock as root, else
// $XDG_RUNTIME_DIR/agentgw/agentgw.sock. Fails when none of these can be determined.
Result<std::filesystem::path> default_socket_path();

}  // namespace agentgw
