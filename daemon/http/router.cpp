#include "daemon/http/router.hpp"

#include <fmt/format.h>

namespace agentgw::http {

void Router::add(beast_http::verb method, std::string path, Handler handler) {
    routes_[std::move(path)][method] = std::move(handler);
}

Response Router::dispatch(const Request& req, const Peer& peer) const {
    std::string_view target = req.target();
    const std::string_view path = target.substr(0, target.find('?'));
    const auto route = routes_.find(path);
    if (route == routes_.end()) {
        return error_response(HttpStatus::not_found, "not_found",
                              fmt::format("no route for {}", path));
    }
    const auto handler = route->second.find(req.method());
    if (handler == route->second.end()) {
        std::string allow;
        for (const auto& [verb, _] : route->second) {
            allow += (allow.empty() ? "" : ", ") + std::string(beast_http::to_string(verb));
        }
        Response res = error_response(
            HttpStatus::method_not_allowed, "method_not_allowed",
            fmt::format("{} does not accept {}", path, std::string_view(req.method_string())));
        res.set(beast_http::field::allow, allow);
        return res;
    }
    return handler->second(req, peer);
}

}  // namespace agentgw::http
