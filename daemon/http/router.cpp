#include "daemon/http/router.hpp"

#include <set>

#include <boost/url/parse.hpp>
#include <fmt/format.h>

namespace agentgw::http {

namespace {

std::vector<std::string> split_pattern(std::string_view pattern) {
    std::vector<std::string> out;
    size_t start = 1;  // patterns begin with '/'
    while (start <= pattern.size()) {
        const size_t end = std::min(pattern.find('/', start), pattern.size());
        out.emplace_back(pattern.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

// The decoded segments of a target's path; "/" is one empty segment, as split_pattern("/") gives.
std::vector<std::string> segments_of(boost::urls::url_view url) {
    std::vector<std::string> segments;
    for (const auto& segment : url.segments()) {
        segments.push_back(segment);
    }
    if (segments.empty()) {
        segments.emplace_back();
    }
    return segments;
}

bool is_capture(const std::string& segment) {
    return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

}  // namespace

std::optional<std::string> RequestContext::query_value(const std::string& name) const {
    const auto [first, last] = query.equal_range(name);
    if (first == last) {
        return std::nullopt;
    }
    return std::prev(last)->second;
}

void Router::add(beast_http::verb method, std::string pattern, Handler handler,
                 Admission admission) {
    auto segments = split_pattern(pattern);
    Endpoint entry{std::move(handler), std::move(admission)};
    for (auto& route : routes_) {
        if (route.segments == segments) {
            route.handlers[method] = std::move(entry);
            return;
        }
    }
    Route route{std::move(segments), {}};
    route.handlers[method] = std::move(entry);
    routes_.push_back(std::move(route));
}

std::vector<Router::Match> Router::match(const std::vector<std::string>& segments) const {
    // Literal segments beat captures, so that "/v1/services/reload" wins over
    // "/v1/services/{service}".
    std::vector<Match> matches;
    for (const auto& route : routes_) {
        if (route.segments.size() != segments.size()) {
            continue;
        }
        Match m{&route, 0, {}};
        bool fits = true;
        for (size_t i = 0; i < segments.size() && fits; ++i) {
            if (is_capture(route.segments[i])) {
                fits = !segments[i].empty();
                const auto& name = route.segments[i];
                m.params[name.substr(1, name.size() - 2)] = segments[i];
                ++m.captures;
            } else {
                fits = route.segments[i] == segments[i];
            }
        }
        if (fits) {
            matches.push_back(std::move(m));
        }
    }
    std::stable_sort(matches.begin(), matches.end(),
                     [](const Match& a, const Match& b) { return a.captures < b.captures; });
    return matches;
}

const Admission* Router::admission(const Request::header_type& header) const {
    const auto url = boost::urls::parse_origin_form(header.target());
    if (!url) {
        return nullptr;
    }
    for (const auto& m : match(segments_of(*url))) {
        const auto handler = m.route->handlers.find(header.method());
        if (handler != m.route->handlers.end()) {
            return &handler->second.admission;
        }
    }
    return nullptr;
}

boost::asio::awaitable<Response> Router::dispatch(const Request& req, const Peer& peer) const {
    const auto url = boost::urls::parse_origin_form(req.target());
    if (!url) {
        co_return error_response(HttpStatus::bad_request, "bad_request",
                                 "request target is not a valid origin-form URL");
    }
    auto matches = match(segments_of(*url));
    for (auto& m : matches) {
        const auto handler = m.route->handlers.find(req.method());
        if (handler == m.route->handlers.end()) {
            continue;
        }
        RequestContext ctx{req, peer, std::move(m.params), {}};
        for (const auto& p : url->params()) {
            ctx.query.emplace(p.key, p.has_value ? p.value : std::string());
        }
        co_return co_await handler->second.handler(ctx);
    }
    if (!matches.empty()) {
        std::set<std::string> verbs;
        for (const auto& m : matches) {
            for (const auto& [verb, _] : m.route->handlers) {
                verbs.insert(std::string(beast_http::to_string(verb)));
            }
        }
        std::string allow;
        for (const auto& v : verbs) {
            allow += (allow.empty() ? "" : ", ") + v;
        }
        // Named by its pattern, not the path: a path may carry a secret (a hub data token).
        std::string pattern;
        for (const auto& segment : matches.front().route->segments) {
            pattern += "/" + segment;
        }
        Response res =
            error_response(HttpStatus::method_not_allowed, "method_not_allowed",
                           fmt::format("{} does not accept {}", pattern.empty() ? "/" : pattern,
                                       std::string_view(req.method_string())));
        res.set(beast_http::field::allow, allow);
        co_return res;
    }
    // The path is not repeated back: it may carry a secret (a hub data token).
    co_return error_response(HttpStatus::not_found, "not_found", "no such route");
}

}  // namespace agentgw::http
