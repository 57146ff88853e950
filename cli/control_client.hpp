// ControlClient: HTTP/1.1 + JSON to agentgwd's control socket, through libcurl's Unix-socket
// support. One connection, reused across requests. Not thread-safe.
#pragma once

#include <csignal>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

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

    // From now on, a request in progress is given up within about a second once `*flag` is
    // non-zero (set by a signal handler); request() then fails with Code::unavailable.
    void stop_when(const volatile std::sig_atomic_t* flag) { stop_flag_ = flag; }

    // The longest a request may take, connecting included: a daemon that accepts the
    // connection but never answers (stopped, wedged) is reported as unreachable after it.
    static constexpr long k_request_timeout_ms = 30'000;

    // The Error a non-2xx Reply stands for, with the daemon's message.
    static Error error_of(const Reply& reply);

    // `text` percent-encoded (by libcurl) for use as one path segment or one query value: every
    // byte but the RFC 3986 unreserved characters becomes %XX, so '/', '?' and '%' are safe.
    static std::string path_segment(std::string_view text);

    // "?k=v&k=v" from the pairs whose value is not empty, values encoded as by path_segment;
    // "" when every value is empty. Keys are used as they are.
    using QueryParam = std::pair<std::string_view, std::string_view>;
    static std::string query(std::initializer_list<QueryParam> params);

  private:
    struct CurlCleanup {
        void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
    };
    static int on_progress(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t);

    std::filesystem::path socket_path_;
    std::unique_ptr<CURL, CurlCleanup> curl_;
    const volatile std::sig_atomic_t* stop_flag_ = nullptr;
};

}  // namespace agentgw::cli
