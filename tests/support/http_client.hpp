// A blocking libcurl client for tests: a real HTTP client over TCP or a Unix socket.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

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
// For an address that refuses connections, or for a listener made elsewhere.
uint16_t closed_port();

HttpReply http_request(const std::string& method, const std::string& url,
                       const std::string& body = {}, const std::vector<std::string>& headers = {},
                       const std::string& unix_socket = {});

}  // namespace agentgw::test
