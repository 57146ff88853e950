// Starting the real agentgwd binary for a test: a temp state dir, a socket in the temp dir and
// a port picked by the kernel (--listen 127.0.0.1:0, read back from the "ready" line).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace agentgw::test {

// The services file the control and CLI tests give the daemon: openai and github.
inline constexpr const char* k_test_services = R"({"services": [
  {"id": "openai", "name": "OpenAI", "description": "LLM API",
   "base_url": "https://api.openai.com", "auth": {"type": "bearer"},
   "rate_limit": {"requests": 600, "window_secs": 60}},
  {"id": "github", "name": "GitHub", "description": "Code hosting",
   "base_url": "https://api.github.com", "auth": {"type": "header", "name": "X-Token"}}
]})";

struct RunningDaemon {
    std::unique_ptr<Child> child;
    std::string base_url;  // "http://127.0.0.1:PORT"
    std::filesystem::path socket;
};

// Default arguments for a daemon living in `dir`: state in dir/state, socket dir/run/agentgw.sock.
std::vector<std::string> daemon_args(const TempDir& dir,
                                     const std::vector<std::string>& extra = {});

// Starts agentgwd with `args` (not including the program) and waits for its ready line.
// Fails the test (REQUIRE) when it does not become ready.
RunningDaemon start_daemon(const std::vector<std::string>& args,
                           const std::map<std::string, std::optional<std::string>>& env = {},
                           const std::optional<std::string>& stdin_data = std::nullopt);

// Waits for the ready line of an agentgwd started as `child`, as start_daemon does.
RunningDaemon await_ready(std::unique_ptr<Child> child);

// The path given to --socket in `args`.
std::filesystem::path socket_in(const std::vector<std::string>& args);

}  // namespace agentgw::test
