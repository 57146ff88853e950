#include "daemon/http/message.hpp"

#include <algorithm>
#include <iterator>
#include <utility>

namespace agentgw::http {

Response json_response(HttpStatus status, const nlohmann::json& body) {
    Response res{status, 11};
    res.set(beast_http::field::content_type, "application/json");
    res.set(beast_http::field::cache_control, "no-store");
    // Replace, not throw on, invalid UTF-8: messages may quote percent-decoded path text.
    res.body() = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return res;
}

Response error_response(HttpStatus status, std::string_view type, std::string_view message) {
    Response res = json_response(status, {{"error", type}, {"message", message}});
    res.set("Agentgw-Error", type);
    return res;
}

Response error_response(const Error& error) {
    // One table from internal codes to the wire: status and error type.
    static constexpr std::pair<HttpStatus, std::string_view> k_map[] = {
        /* invalid_argument  */ {HttpStatus::bad_request, "bad_request"},
        /* not_found         */ {HttpStatus::not_found, "not_found"},
        /* conflict          */ {HttpStatus::conflict, "conflict"},
        /* permission_denied */ {HttpStatus::forbidden, "forbidden"},
        /* unauthenticated   */ {HttpStatus::unauthorized, "unauthorized"},
        /* exhausted         */ {HttpStatus::payload_too_large, "payload_too_large"},
        /* unavailable       */ {HttpStatus::service_unavailable, "unavailable"},
        /* upstream          */ {HttpStatus::bad_gateway, "upstream_error"},
        /* io_error          */ {HttpStatus::internal_server_error, "internal_error"},
        /* corrupt           */ {HttpStatus::internal_server_error, "internal_error"},
        /* internal          */ {HttpStatus::internal_server_error, "internal_error"},
    };
    static_assert(std::size(k_map) == static_cast<size_t>(Code::internal) + 1,
                  "one row per Code, in declaration order");
    const auto& [status, type] = k_map[static_cast<size_t>(error.code)];
    return error_response(status, type, error.message);
}

bool is_token(std::string_view s) {
    static constexpr std::string_view k_punct = "!#$%&'*+-.^_`|~";
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               k_punct.find(c) != std::string_view::npos;
    });
}

bool holds_line_break(std::string_view value) {
    // One pass (find_first_of would call memchr once per character of `value`): every header
    // value of every request and upstream answer goes through here.
    return std::any_of(value.begin(), value.end(),
                       [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

}  // namespace agentgw::http
