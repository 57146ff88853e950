// What every CLI command gets: global options, the daemon connection and output streams.
#pragma once

#include <filesystem>
#include <functional>
#include <iosfwd>
#include <memory>

#include <CLI/CLI.hpp>

#include "cli/control_client.hpp"
#include "common/result.hpp"

namespace agentgw::cli {

struct Context {
    std::filesystem::path socket_path;  // resolved before a command runs
    bool json = false;
    std::ostream* out = nullptr;
    std::unique_ptr<ControlClient> client;

    ControlClient& daemon() { return *client; }
};

// A command's body, run after parsing. Its error becomes "agentgw: <message>" and an exit code.
using Runner = std::function<Status(Context&)>;

// Registers a command under `parent` and returns the runner to call when it was chosen.
using Registrar = void (*)(CLI::App& parent, Context& ctx, Runner& chosen);

}  // namespace agentgw::cli
