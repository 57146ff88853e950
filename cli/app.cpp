#include "cli/app.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sys/un.h>

#include <fmt/format.h>

#include "cli/commands/commands.hpp"
#include "cli/commands/common.hpp"
#include "cli/exit_codes.hpp"
#include "cli/spec.hpp"
#include "common/paths.hpp"
#include "common/version.hpp"

namespace agentgw::cli {

namespace {

int run(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
    Context ctx;
    ctx.out = &out;
    Runner chosen;

    CLI::App app{"agentgw - manage the agentgw credential gateway", "agentgw"};
    app.set_version_flag("--version", k_version);
    names_file(app.add_option("--socket", ctx.socket_path, "Control socket of agentgwd"))
        ->envname("AGENTGW_SOCKET");
    app.add_flag("--json", ctx.json, "Print exactly one JSON document");
    app.require_subcommand(1);
    // Global options may also follow the command ("agentgw audit --json"); subcommands
    // inherit this when they are added.
    app.fallthrough();
    // SPEC §5: every error is one line on stderr, usage errors included.
    app.failure_message([](const CLI::App*, const CLI::Error& e) {
        return std::string("agentgw: ") + e.what() + " (see --help)\n";
    });
    for (const auto& command : k_commands) {
        command.registrar(app, ctx, chosen);
    }
    // The command tree as JSON, for scripts/gen-completions; hidden (group "") from --help and
    // from its own output. It needs no daemon, so it is answered before the socket is resolved.
    auto* spec = app.add_subcommand("__spec", "Print the command tree as JSON")->group("");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e, out, err);
        return code == 0 ? k_exit_ok : k_exit_usage;
    }
    if (spec->parsed()) {
        out << describe(app).dump(2) << '\n';
        return k_exit_ok;
    }
    if (ctx.socket_path.empty()) {
        auto path = client_socket_path();
        if (!path) {
            err << "agentgw: " << path.error().message << '\n';
            return k_exit_usage;
        }
        ctx.socket_path = *path;
    }
    // A Unix socket address holds a path of at most 107 bytes: a longer one can never work.
    if (ctx.socket_path.native().size() >= sizeof(sockaddr_un::sun_path)) {
        err << "agentgw: the control socket path is longer than "
            << sizeof(sockaddr_un::sun_path) - 1
            << " bytes: " << printable(ctx.socket_path.string()) << '\n';
        return k_exit_usage;
    }
    ctx.client = std::make_unique<ControlClient>(ctx.socket_path);
    try {
        const Status s = chosen(ctx);
        if (!s) {
            // Error text may quote what the daemon echoed back (names, paths): escaped, it
            // stays one line and cannot drive the terminal.
            err << "agentgw: " << printable(s.error().message) << '\n';
            return exit_code_for(s.error().code);
        }
    } catch (const nlohmann::json::exception& e) {
        err << "agentgw: unexpected answer from agentgwd: " << e.what() << '\n';
        return k_exit_failure;
    }
    return k_exit_ok;
}

}  // namespace

int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
    const int code = run(argc, argv, out, err);
    // What was printed must have reached its destination: a new agent key lost to a full disk
    // or a closed pipe is lost for good, and a script must not take it as printed.
    errno = 0;
    out.flush();
    if (!out) {
        const int saved = errno;
        err << "agentgw: cannot write the output"
            << (saved != 0 ? fmt::format(": {}", std::strerror(saved)) : std::string()) << '\n';
        return code == k_exit_ok ? k_exit_failure : code;
    }
    return code;
}

}  // namespace agentgw::cli
