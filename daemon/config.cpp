#include "daemon/config.hpp"

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "common/decimal_check.hpp"
#include "common/log.hpp"
#include "common/paths.hpp"
#include "common/unique_fd.hpp"
#include "common/version.hpp"
#include "daemon/control/peer_policy.hpp"

namespace agentgw {

namespace fs = std::filesystem;

namespace {

constexpr const char* k_default_config = "/etc/agentgw/agentgwd.conf";

// Options that can also come from the environment, with their variables.
struct EnvOption {
    const char* flag;
    const char* variable;
};
constexpr EnvOption k_env_options[] = {
    {"--config", "AGENTGWD_CONFIG"},
    {"--state-dir", "AGENTGWD_STATE_DIR"},
    {"--socket", "AGENTGWD_SOCKET"},
    {"--socket-group", "AGENTGWD_SOCKET_GROUP"},
    {"--listen", "AGENTGWD_LISTEN"},
    {"--services", "AGENTGWD_SERVICES"},
    {"--key-file", "AGENTGWD_KEY_FILE"},
    {"--passphrase-file", "AGENTGWD_PASSPHRASE_FILE"},
    {"--session-ttl", "AGENTGWD_SESSION_TTL"},
    {"--log-level", "AGENTGWD_LOG_LEVEL"},
    {"--audit-retention-days", "AGENTGWD_AUDIT_RETENTION_DAYS"},
    {"--hub-max-data", "AGENTGWD_HUB_MAX_DATA"},
    {"--hub-max-ttl", "AGENTGWD_HUB_MAX_TTL"},
    {"--shutdown-timeout", "AGENTGWD_SHUTDOWN_TIMEOUT"},
    {"--hub-quota-blobs", "AGENTGWD_HUB_QUOTA_BLOBS"},
    {"--hub-quota-bytes", "AGENTGWD_HUB_QUOTA_BYTES"},
};

}  // namespace

Result<boost::asio::ip::tcp::endpoint> parse_listen(std::string_view text) {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon + 1 == text.size()) {
        return make_error(Code::invalid_argument, fmt::format("{}: expected ADDR:PORT", text));
    }
    std::string_view host = text.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(host, ec);
    const std::string_view digits = text.substr(colon + 1);
    uint16_t port = 0;
    const auto [end, parse_ec] =
        std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (ec || parse_ec != std::errc() || end != digits.data() + digits.size()) {
        return make_error(Code::invalid_argument,
                          fmt::format("{}: expected an IP address and a port", text));
    }
    return boost::asio::ip::tcp::endpoint(address, port);
}

DaemonInvocation parse_daemon_args(int argc, const char* const* argv) {
    DaemonInvocation out;
    DaemonConfig& c = out.config;
    std::string log_level = "info";

    CLI::App app{"agentgwd - the agentgw credential gateway daemon", "agentgwd"};
    app.set_version_flag("--version", k_version);
    // Later values win, so that the environment (placed before argv below) yields to flags.
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    const bool default_config = fs::exists(k_default_config);
    auto* config_option =
        app.set_config("--config", default_config ? k_default_config : "",
                       "Read settings from this file (keys are the long option names)");
    app.allow_config_extras(CLI::config_extras_mode::error);
    app.add_option("--state-dir", c.state_dir, "Directory holding the vault and master key");
    app.add_option("--socket", c.socket_path, "Control socket path");
    app.add_option("--socket-group", c.socket_group,
                   "Group whose members may use the control socket (besides root and "
                   "the daemon's user)")
        ->type_name("GROUP");
    app.add_option("--listen", c.listen, "Agent API address, ADDR:PORT")
        ->type_name("ADDR:PORT")
        ->capture_default_str();
    app.add_option("--services", c.services_file, "Services file (JSON)");
    app.add_option("--key-file", c.key_file, "Master key file (32 raw bytes or 64 hex characters)");
    app.add_option("--passphrase-file", c.passphrase_file,
                   "Unlock with a passphrase read from this file ('-' for standard input)");
    app.add_option("--session-ttl", c.session_ttl_secs, "Session lifetime in seconds")
        ->check(decimal())
        ->check(CLI::Range(int64_t{60}, int64_t{7} * 24 * 3600))
        ->capture_default_str();
    app.add_option("--audit-retention-days", c.audit_retention_days,
                   "Delete audit entries older than this many days (0 keeps them all)")
        ->check(decimal())
        ->check(CLI::Range(int64_t{0}, int64_t{36500}))
        ->capture_default_str();
    app.add_option("--hub-max-data", c.hub.max_data, "Largest hub blob, in bytes of data")
        ->check(decimal())
        ->check(CLI::Range(size_t{1}, size_t{64} * 1024 * 1024))
        ->capture_default_str();
    app.add_option("--hub-max-ttl", c.hub.max_ttl_secs, "Longest hub blob lifetime, in seconds")
        ->check(decimal())
        ->check(CLI::Range(int64_t{1}, int64_t{365} * 86400))
        ->capture_default_str();
    app.add_option("--hub-quota-blobs", c.hub.quota_blobs, "Live hub blobs an agent may keep")
        ->check(decimal())
        ->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}))
        ->capture_default_str();
    app.add_option("--hub-quota-bytes", c.hub.quota_bytes,
                   "Bytes of live hub blob data an agent may keep")
        ->check(decimal())
        ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))
        ->capture_default_str();
    int64_t shutdown_secs = std::chrono::duration_cast<std::chrono::seconds>(c.drain).count();
    app.add_option("--shutdown-timeout", shutdown_secs,
                   "Seconds requests in progress may take to finish after SIGTERM")
        ->check(decimal())
        ->check(CLI::Range(int64_t{0}, int64_t{3600}))
        ->capture_default_str();
    app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
        ->capture_default_str();

    auto* rekey = app.add_subcommand(
        "rekey", "Rewrap the vault's data key under a new master key or passphrase, then exit");
    rekey->fallthrough();
    auto* new_key =
        rekey->add_option("--new-key-file", out.new_key_file, "The new master key file");
    rekey
        ->add_option("--new-passphrase-file", out.new_passphrase_file,
                     "Read the new passphrase from this file ('-' for standard input)")
        ->excludes(new_key);

    // Environment variables enter as arguments ahead of argv: flags given by the operator come
    // later and win, and values from the config file apply only to what neither set.
    std::vector<std::string> args;
    for (const auto& [flag, variable] : k_env_options) {
        if (const char* value = non_empty_env(variable)) {
            args.push_back(fmt::format("{}={}", flag, value));
        }
    }
    for (int i = 1; i < argc; ++i) {
        args.emplace_back(argv[i]);
    }
    const std::vector<std::string> in_order = args;
    std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector
    try {
        app.parse(args);
    } catch (const CLI::ConfigError& e) {
        // CLI11 names neither the file nor, in words an operator would know, what is wrong.
        const std::string file =
            config_option->count() > 0 ? config_option->as<std::string>() : k_default_config;
        std::string what = e.what();
        constexpr std::string_view k_extra = "INI was not able to parse ";
        if (what.starts_with(k_extra)) {
            what = fmt::format(
                "unknown setting \"{}\" (settings are the long options without "
                "their \"--\", as agentgwd --help lists them)",
                what.substr(k_extra.size()));
        }
        std::cerr << "agentgwd: " << file << ": " << what << '\n';
        out.action = DaemonInvocation::Action::exit;
        out.exit_code = 2;
        return out;
    } catch (const CLI::ParseError& e) {
        out.action = DaemonInvocation::Action::exit;
        out.exit_code = app.exit(e);
        if (out.exit_code != 0) {
            out.exit_code = 2;
        }
        return out;
    }
    if (config_option->count() == 0 && default_config) {
        // CLI11 counts the default file once it has read it, and passes over one it cannot
        // read (a file of mode 0600 owned by root, a directory): the daemon must not run on
        // defaults when its settings are there but unreadable.
        const UniqueFd fd(::open(k_default_config, O_RDONLY | O_CLOEXEC));
        std::cerr << "agentgwd: cannot read " << k_default_config << ": "
                  << (fd.valid() ? "not a regular file" : std::strerror(errno)) << '\n';
        out.action = DaemonInvocation::Action::exit;
        out.exit_code = 2;
        return out;
    }
    c.log_level = *parse_log_level(log_level);
    c.drain = std::chrono::seconds(shutdown_secs);
    if (config_option->count() > 0) {  // given, or the default file that was read
        c.config_file = config_option->as<std::string>();
    }
    if (!c.key_file.empty() && !c.passphrase_file.empty()) {
        // The two name one setting, the master secret: the one given last among flags and
        // environment wins, and the config file only fills in what neither gave.
        auto last = [&](std::string_view flag) {
            ptrdiff_t at = -1;
            for (size_t i = 0; i < in_order.size(); ++i) {
                if (in_order[i] == flag || in_order[i].starts_with(std::string(flag) + "=")) {
                    at = static_cast<ptrdiff_t>(i);
                }
            }
            return at;
        };
        const ptrdiff_t key_at = last("--key-file");
        const ptrdiff_t pass_at = last("--passphrase-file");
        if (key_at < 0 && pass_at < 0) {
            std::cerr << "agentgwd: the config file sets both key-file and passphrase-file\n";
            out.action = DaemonInvocation::Action::exit;
            out.exit_code = 2;
            return out;
        }
        (key_at > pass_at ? c.passphrase_file : c.key_file).clear();
    }
    if (rekey->parsed()) {
        if (out.new_key_file.empty() && out.new_passphrase_file.empty()) {
            std::cerr << "agentgwd: rekey needs --new-key-file or --new-passphrase-file\n";
            out.action = DaemonInvocation::Action::exit;
            out.exit_code = 2;
            return out;
        }
        out.action = DaemonInvocation::Action::rekey;
        return out;
    }
    // Settings only a running daemon uses, checked before anything starts (not for rekey,
    // --help or --version, which a stale value in the config file must not stop). A group
    // lookup that fails (NSS unreachable) is left to start-up, which reports it.
    std::string bad;
    if (const auto at = parse_listen(c.listen); !at) {
        bad = fmt::format("--listen: {}", at.error().message);
    } else if (const auto policy = PeerPolicy::create(c.socket_group);
               !policy && policy.error().code == Code::not_found) {
        bad = fmt::format("--socket-group: {}: no such group", c.socket_group);
    }
    if (!bad.empty()) {
        std::cerr << "agentgwd: " << bad << '\n';
        out.action = DaemonInvocation::Action::exit;
        out.exit_code = 2;
    }
    return out;
}

Status resolve_state_dir(DaemonConfig& c) {
    if (c.state_dir.empty()) {
        if (const char* dir = non_empty_env("STATE_DIRECTORY")) {
            c.state_dir = first_directory(dir);
        } else if (::geteuid() == 0) {
            c.state_dir = "/var/lib/agentgw";
        } else if (const char* data = non_empty_env("XDG_DATA_HOME")) {
            c.state_dir = fs::path(data) / "agentgw";
        } else if (const char* home = non_empty_env("HOME")) {
            c.state_dir = fs::path(home) / ".local" / "share" / "agentgw";
        } else {
            return make_error(Code::invalid_argument,
                              "no state directory: set --state-dir or STATE_DIRECTORY");
        }
    }
    c.state_dir = fs::absolute(c.state_dir);
    return {};
}

Status resolve_socket_path(DaemonConfig& c) {
    if (c.socket_path.empty()) {
        TRY_ASSIGN(c.socket_path, default_socket_path());
    }
    c.socket_path = fs::absolute(c.socket_path);
    return {};
}

}  // namespace agentgw
