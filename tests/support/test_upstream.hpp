// TestUpstream: the project's own upstream server for proxy tests (tests/support/upstream.py)
// started as a child process on 127.0.0.1 with a kernel-chosen port, optionally over TLS with
// a certificate from a CA made at test time. It records every request it receives, so a test can
// check exactly what the gateway forwarded. The destructor stops it. Not thread-safe.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/process.hpp"

namespace agentgw::test {

class TestUpstream {
  public:
    // Files (the record, and with `tls` the CA and server certificate) go under `dir`.
    explicit TestUpstream(const std::filesystem::path& dir, bool tls = false);
    ~TestUpstream();
    TestUpstream(const TestUpstream&) = delete;
    TestUpstream& operator=(const TestUpstream&) = delete;

    uint16_t port() const { return port_; }
    // "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT".
    const std::string& base_url() const { return base_url_; }
    // The test CA's certificate (TLS only).
    std::filesystem::path ca_file() const { return dir_ / "ca.pem"; }

    // Every request received so far, oldest first: {"method","target","path","query",
    // "headers": [[name, value], ...], "body", "body_len", "peer_port"}; peer_port tells the
    // connections apart.
    std::vector<nlohmann::json> requests() const;
    // Forgets what was recorded so far.
    void clear_requests();

    pid_t pid() const { return child_->pid(); }

  private:
    std::filesystem::path dir_;
    std::filesystem::path record_;
    std::unique_ptr<Child> child_;
    uint16_t port_ = 0;
    std::string base_url_;
};

// The value of header `name` (case-insensitive) in a recorded request, or "" when absent; all
// values joined by ", " when it appears more than once.
std::string recorded_header(const nlohmann::json& request, const std::string& name);

// Whether `needle` occurs anywhere in a recorded request (target, headers or body).
bool recorded_contains(const nlohmann::json& request, const std::string& needle);

}  // namespace agentgw::test
