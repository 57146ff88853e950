// Calls to an OAuth 2.0 authorization server's endpoints (token, device authorization): a form
// POST through the daemon's UpstreamClient (so it runs on the event loop like any proxied
// request, with the same timeouts and TLS rules) and the JSON answer.
//
// Thread-safety: the io_context thread only, like the UpstreamClient.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "daemon/services/service_catalog.hpp"
#include "daemon/upstream/upstream_client.hpp"

namespace agentgw::oauth {

// Form fields, in order. Values may be secrets: the destructor wipes them.
struct Form {
    std::vector<std::pair<std::string, std::string>> fields;
    void add(std::string name, std::string value) {
        fields.emplace_back(std::move(name), std::move(value));
    }
    ~Form();
};

struct EndpointReply {
    unsigned status = 0;  // HTTP status
    nlohmann::json body;  // the JSON object answered (an object; empty when there was none)
    ~EndpointReply();     // wipes the strings in body (tokens)
    EndpointReply() = default;
    EndpointReply(EndpointReply&&) = default;
    EndpointReply& operator=(EndpointReply&&) = default;
};

// POSTs `form` to `url` with the service's CA file, timeouts and http rule. The answer must be
// JSON (as RFC 6749 §5 requires, errors included). On failure `*retryable` says whether the
// call may be repeated without risk: the request never reached the server (no connection), or
// the server refused it whole (5xx, 429). A timeout or a cut answer is ambiguous: the server
// may have acted (rotated a refresh token), so it is not retryable.
boost::asio::awaitable<Result<EndpointReply>> post_form(upstream::UpstreamClient& client,
                                                        const Service& service,
                                                        const std::string& url, const Form& form,
                                                        bool* retryable);

// The longest polling interval taken from a device authorization or slow_down answer; a
// larger one is cut to it.
inline constexpr int64_t k_max_interval_secs = 3600;

// A member of an answer counting seconds ("expires_in", "interval"): a positive number (a
// fraction rounded down), or a string holding a positive integer, as some servers send it.
// `fallback` when it is absent, under one or not a number; cut to `max` when larger, so that
// no sum with it can overflow.
int64_t seconds_of(const nlohmann::json& body, const char* name, int64_t fallback, int64_t max);

// The OAuth error code of an answer ("invalid_grant", "authorization_pending", ...), from its
// "error" member, which is read whatever the HTTP status; empty when there is none.
std::string error_code(const EndpointReply& reply);

// "invalid_grant: the refresh token was revoked" from "error" and "error_description" (its
// first 200 bytes), with every value of `sent` other than grant_type, client_id and scope
// replaced by "[redacted]": some servers quote the refresh token or code they refuse.
std::string error_text(const EndpointReply& reply, const Form& sent);

}  // namespace agentgw::oauth
