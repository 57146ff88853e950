// ControlClient: HTTP/1.1 + JSON to agentgwd's control socket, through libcurl's Unix-socket
// support. One connection, reused across requests. Not thread-safe.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <curl/curl.h>
#include <nlohmann/json.hpp>

#include "common/result.hpp"

namespace agentgw::cli {

struct Reply {
    long status = 0;
    nlohmann::json body;  // null when the answer had no (JSON) body
};

class ControlClient {
  public:
    explicit ControlClient(std::filesystem::path socket_path);

    // Sends one request. A daemon that cannot be reached is Code::unavailable; an answer of any
    // status is a Reply. Use error_of() to turn a failing Reply into an Error.
    Result<Reply> request(std::string_view method, std::string_view path,
                          const std::optional<nlohmann::json>& body = std::nullopt);

    // The Error a non-2xx Reply stands for, with the daemon's message.
    static Error error_of(const Reply& reply);

  private:
    struct CurlCleanup {
        void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
    };
    std::filesystem::path socket_path_;
    std::unique_ptr<CURL, CurlCleanup> curl_;
};

}  // namespace agentgw::cli
