#include "tests/support/test_upstream.hpp"

#include <csignal>
#include <fstream>

#include <boost/beast/core/string.hpp>
#include <catch2/catch.hpp>

#include "tests/support/temp_dir.hpp"

namespace agentgw::test {

TestUpstream::TestUpstream(const std::filesystem::path& dir, bool tls)
    : dir_(dir), record_(dir / "upstream-requests.jsonl") {
    // Child execs without a PATH search; env finds python3.
    std::vector<std::string> argv = {"/usr/bin/env", "python3", AGENTGW_TEST_UPSTREAM, "--record",
                                     record_.string()};
    if (tls) {
        argv.insert(argv.end(), {"--tls", dir.string()});
    }
    child_ = std::make_unique<Child>(argv);
    const auto line = child_->read_stdout_line(15s);
    if (!line || !line->starts_with("listening ")) {
        FAIL("the test upstream did not start: " << child_->stderr_text());
    }
    port_ = static_cast<uint16_t>(std::stoi(line->substr(10)));
    base_url_ = std::string(tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
}

TestUpstream::~TestUpstream() {
    child_->signal(SIGTERM);
    child_->wait(5s);
}

std::vector<nlohmann::json> TestUpstream::requests() const {
    std::vector<nlohmann::json> out;
    std::ifstream in(record_);
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty()) {
            out.push_back(nlohmann::json::parse(line));
        }
    }
    return out;
}

void TestUpstream::clear_requests() {
    std::ofstream(record_, std::ios::trunc);
}

std::string recorded_header(const nlohmann::json& request, const std::string& name) {
    std::string out;
    for (const auto& pair : request.at("headers")) {
        if (boost::beast::iequals(pair.at(0).get<std::string>(), name)) {
            if (!out.empty()) {
                out += ", ";
            }
            out += pair.at(1).get<std::string>();
        }
    }
    return out;
}

bool recorded_contains(const nlohmann::json& request, const std::string& needle) {
    return request.dump().find(needle) != std::string::npos ||
           request.at("body").get<std::string>().find(needle) != std::string::npos;
}

}  // namespace agentgw::test
