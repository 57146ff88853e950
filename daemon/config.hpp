// The daemon's settings, read from flags, then AGENTGWD_* environment variables, then the
// config file (SPEC §6). Parsing runs once at start-up and reports problems by exception
// (CLI::ParseError), as start-up code may.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <spdlog/common.h>

#include "common/result.hpp"
#include "daemon/hub/hub.hpp"

namespace agentgw {

struct DaemonConfig {
    std::filesystem::path state_dir;    // never empty after resolve_state_dir()
    std::filesystem::path socket_path;  // never empty after resolve_socket_path()
    std::string socket_group;           // members may use the control socket
    std::string listen = "127.0.0.1:3000";
    std::filesystem::path services_file;
    std::filesystem::path key_file;         // empty: $CREDENTIALS_DIRECTORY or the state dir
    std::filesystem::path passphrase_file;  // non-empty: passphrase mode ("-" = stdin)
    int64_t session_ttl_secs = 3600;
    int64_t audit_retention_days = 0;  // 0: keep every audit entry
    HubLimits hub;
    std::filesystem::path config_file;  // the config file read, if any
    spdlog::level::level_enum log_level = spdlog::level::info;
    // After SIGTERM: how long requests in progress may take before they are cut off.
    std::chrono::milliseconds drain{10000};
};

// What the command line asked for.
struct DaemonInvocation {
    enum class Action { run, rekey, exit } action = Action::run;
    int exit_code = 0;  // for Action::exit (--help, --version, a usage error)
    DaemonConfig config;
    std::filesystem::path new_key_file;         // rekey: the new key file
    std::filesystem::path new_passphrase_file;  // rekey: or a new passphrase
};

// Parses argv (and the environment, and the config file). Prints help, version and usage
// errors itself; those come back as Action::exit with the code to exit with.
DaemonInvocation parse_daemon_args(int argc, const char* const* argv);

// --listen's value, "127.0.0.1:3000" or "[::1]:3000", as an endpoint. The error message
// names the value and what was expected, not the option.
Result<boost::asio::ip::tcp::endpoint> parse_listen(std::string_view text);

// Fills state_dir from the environment when not given, and makes it absolute (SPEC §6).
Status resolve_state_dir(DaemonConfig& config);

// Likewise for socket_path (SPEC §4); only the running daemon needs one.
Status resolve_socket_path(DaemonConfig& config);

}  // namespace agentgw
