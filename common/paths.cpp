#include "common/paths.hpp"

#include <cstdlib>
#include <unistd.h>

namespace agentgw {

const char* non_empty_env(const char* name) {
    const char* value = std::getenv(name);
    return value != nullptr && *value != '\0' ? value : nullptr;
}

std::filesystem::path first_directory(std::string_view list) {
    return std::filesystem::path(list.substr(0, list.find(':')));
}

Result<std::filesystem::path> default_socket_path() {
    if (const char* runtime = non_empty_env("RUNTIME_DIRECTORY")) {
        return first_directory(runtime) / "agentgw.sock";
    }
    if (::geteuid() == 0) {
        return std::filesystem::path(k_system_socket);
    }
    if (const char* xdg = non_empty_env("XDG_RUNTIME_DIR")) {
        return std::filesystem::path(xdg) / "agentgw" / "agentgw.sock";
    }
    return make_error(Code::invalid_argument,
                      "no control socket path: set --socket, RUNTIME_DIRECTORY or XDG_RUNTIME_DIR");
}

Result<std::filesystem::path> client_socket_path(const std::filesystem::path& system_socket) {
    auto path = default_socket_path();
    std::error_code ec;
    if (path && std::filesystem::exists(*path, ec)) {
        return path;
    }
    // The system socket counts as there when its directory may not be searched (mode 0750,
    // for the socket group only): connecting then reports "permission denied", which is what
    // a user outside the group should hear, rather than a missing socket elsewhere.
    if (std::filesystem::exists(system_socket, ec) || ec == std::errc::permission_denied) {
        return system_socket;
    }
    return path;
}

}  // namespace agentgw
