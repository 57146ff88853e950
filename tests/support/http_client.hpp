// A blocking libcurl client for tests: a real HTTP client over TCP or a Unix socket.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/unique_fd.hpp"

namespace agentgw::test {

struct HttpReply {
    long status = 0;  // 0 when the request failed below HTTP
    std::string body;
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string error;
};

// The value of header `name` (lower case), or "" when absent.
inline std::string header(const HttpReply& reply, const std::string& name) {
    const auto it = reply.headers.find(name);
    return it == reply.headers.end() ? std::string() : it->second;
}

// A port on 127.0.0.1 nobody listens on right now: bound by the kernel's choice, then closed.
// For a listener made elsewhere; another process may take the port before that listener does.
uint16_t closed_port();

// A port on 127.0.0.1 that refuses connections for as long as this lives: a socket holds it
// bound without listening, so no other socket can take it and start accepting.
class RefusingPort {
  public:
    RefusingPort();

    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  private:
    UniqueFd fd_;
    uint16_t port_ = 0;
};

// A port on 127.0.0.1 where connections are never completed for as long as this lives: it
// listens with a backlog of one, filled by a connection of its own that is never accepted, so
// the kernel drops every further SYN and a connect() waits until its own timeout.
class UnansweredPort {
  public:
    UnansweredPort();

    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

  private:
    UniqueFd listener_;
    UniqueFd queued_;  // the connection that fills the backlog
    uint16_t port_ = 0;
};

// `source_address`, when given, is the local address the connection is made from.
HttpReply http_request(const std::string& method, const std::string& url,
                       const std::string& body = {}, const std::vector<std::string>& headers = {},
                       const std::string& unix_socket = {}, const std::string& source_address = {});

}  // namespace agentgw::test
