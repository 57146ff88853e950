#include "tests/integration/daemon_harness.hpp"

#include <regex>

#include <catch2/catch.hpp>

namespace agentgw::test {

std::vector<std::string> daemon_args(const TempDir& dir, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--state-dir", (dir / "state").string(),
                                     "--socket",    (dir / "run" / "agentgw.sock").string(),
                                     "--listen",    "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
}

std::filesystem::path socket_in(const std::vector<std::string>& args) {
    for (size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == "--socket") {
            return args[i + 1];
        }
    }
    return {};
}

RunningDaemon start_daemon(const std::vector<std::string>& args,
                           const std::map<std::string, std::optional<std::string>>& env,
                           const std::optional<std::string>& stdin_data) {
    std::vector<std::string> argv = {AGENTGWD_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    return await_ready(std::make_unique<Child>(argv, env, stdin_data));
}

RunningDaemon await_ready(std::unique_ptr<Child> child) {
    RunningDaemon d;
    d.child = std::move(child);
    const auto ready = d.child->wait_for_stderr("ready:", 30s);
    INFO("agentgwd stderr: " << d.child->stderr_text());
    REQUIRE(ready.has_value());
    std::smatch m;
    REQUIRE(std::regex_search(*ready, m, std::regex(R"(agent API on (http://[0-9.]+:[0-9]+))")));
    d.base_url = m[1];
    std::smatch s;
    REQUIRE(std::regex_search(*ready, s, std::regex(R"(control socket (\S+),)")));
    d.socket = s[1].str();
    return d;
}

}  // namespace agentgw::test
