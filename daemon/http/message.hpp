// The HTTP message types both listeners use, and helpers that build the JSON answers every
// route gives (SPEC §3: errors are {"error","message"} plus an Agentgw-Error header).
#pragma once

#include <string_view>

#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "common/result.hpp"

namespace agentgw::http {

namespace beast_http = boost::beast::http;
using Request = beast_http::request<beast_http::string_body>;
using Response = beast_http::response<beast_http::string_body>;
using HttpStatus = beast_http::status;

Response json_response(HttpStatus status, const nlohmann::json& body);

// An error produced by the gateway itself: `type` is one of SPEC §3's error types.
Response error_response(HttpStatus status, std::string_view type, std::string_view message);

// The SPEC §3 error type and HTTP status for an internal error code.
Response error_response(const Error& error);

// RFC 9110 §5.6.2: whether `s` is a token, as a field name must be.
bool is_token(std::string_view s);

// Whether a field value holds CR, LF or NUL. Such a value is never passed on: a lenient
// parser could take a bare CR for the end of the line.
bool holds_line_break(std::string_view value);

}  // namespace agentgw::http
