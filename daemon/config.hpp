// The daemon's settings, read from flags, then AGENTGWD_* environment variables, then the
// config file (SPEC §6). Parsing runs once at start-up and reports problems by exception
// (CLI::ParseError), as start-up code may.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/common.h>

#include "common/result.hpp"

namespace agentgw {

struct DaemonConfig {
    std::filesystem::path state_dir;    // resolved: never empty after resolve_defaults()
    std::filesystem::path socket_path;  // resolved likewise
    std::string listen = "127.0.0.1:3000";
    std::filesystem::path services_file;
    std::filesystem::path key_file;         // empty: $CREDENTIALS_DIRECTORY or the state dir
    std::filesystem::path passphrase_file;  // non-empty: passphrase mode ("-" = stdin)
    int64_t session_ttl_secs = 3600;
    spdlog::level::level_enum log_level = spdlog::level::info;
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

// Fills state_dir and socket_path from the environment when not given (SPEC §4, §6).
Status resolve_defaults(DaemonConfig& config);

}  // namespace agentgw
