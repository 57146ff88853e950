// Where the control socket lives when nobody says otherwise (SPEC §4). Shared so that the
// daemon binds and the CLI connects to the same place.
#pragma once

#include <filesystem>
#include <string_view>

#include "common/result.hpp"

namespace agentgw {

// The value of the environment variable `name`, or nullptr when it is unset or empty.
const char* non_empty_env(const char* name);

// The first entry of a directory list as systemd sets it ("/a:/b" -> "/a").
std::filesystem::path first_directory(std::string_view list);

// $RUNTIME_DIRECTORY/agentgw.sock, else /run/agentgw/agentgw.sock as root, else
// $XDG_RUNTIME_DIR/agentgw/agentgw.sock. Fails when none of these can be determined.
Result<std::filesystem::path> default_socket_path();

// The system daemon's socket (agentgwd.service, agentgwd-control.socket).
inline constexpr const char* k_system_socket = "/run/agentgw/agentgw.sock";

// Where the CLI connects when not told: default_socket_path(), except that when nothing is
// there and `system_socket` exists (visible to members of the daemon's socket group), or its
// directory may not be searched (the user is no member), that.
Result<std::filesystem::path> client_socket_path(
    const std::filesystem::path& system_socket = k_system_socket);

}  // namespace agentgw
