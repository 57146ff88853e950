#include "daemon/agent/agent_api.hpp"

#include <algorithm>

#include <boost/asio/ip/address.hpp>
#include <boost/beast/core/string.hpp>
#include <fmt/format.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include "daemon/control/json_body.hpp"
#include "daemon/util/clock.hpp"

namespace agentgw {

namespace asio = boost::asio;
using http::HttpStatus;
using http::Response;
using nlohmann::json;
using verb = boost::beast::http::verb;

namespace {

Response invalid_login() {
    return http::error_response(HttpStatus::unauthorized, "unauthorized",
                                "Invalid username or API key");
}

// Equal strings, compared in time that depends only on their lengths.
bool same_text(std::string_view a, std::string_view b) {
    return a.size() == b.size() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

// What the agent may do with a service it holds a grant for: the grant's narrowing, else the
// service's own allow rules, else everything.
json discovery_entry(const Service& s, const Grant& g) {
    std::vector<std::string> methods = g.methods;
    std::vector<std::string> paths = g.paths;
    if (methods.empty()) {
        for (const auto& rule : s.allow) {
            methods.insert(methods.end(), rule.methods.begin(), rule.methods.end());
        }
    }
    if (paths.empty()) {
        for (const auto& rule : s.allow) {
            paths.insert(paths.end(), rule.paths.begin(), rule.paths.end());
        }
    }
    if (methods.empty()) {
        methods.emplace_back("*");
    }
    if (paths.empty()) {
        paths.emplace_back("/*");
    }
    return {{"id", s.id},
            {"name", s.name},
            {"description", s.description},
            {"methods", methods},
            {"paths", paths}};
}

}  // namespace

Response auth_failure(const AuthError& e) {
    switch (e.failure) {
        case AuthFailure::session_expired:
            return http::error_response(HttpStatus::unauthorized, "session_expired", e.message);
        case AuthFailure::key_expired:
            return http::error_response(HttpStatus::unauthorized, "key_expired", e.message);
        case AuthFailure::disabled:
            return http::error_response(HttpStatus::forbidden, "forbidden", e.message);
        case AuthFailure::unavailable:
            return http::error_response(HttpStatus::internal_server_error, "internal_error",
                                        e.message);
        case AuthFailure::unauthorized:
            break;
    }
    return http::error_response(HttpStatus::unauthorized, "unauthorized", e.message);
}

std::string_view peer_ip(const http::Peer& peer) {
    std::string_view a = peer.address;
    const size_t colon = a.rfind(':');
    return colon == std::string_view::npos ? a : a.substr(0, colon);
}

// The key failed logins for `username` count against: a hash, so that the limiter holds a fixed
// size per name however long the header an attacker sends.
std::string login_user_key(std::string_view username) {
    unsigned char digest[16];
    crypto_generichash(digest, sizeof digest,
                       reinterpret_cast<const unsigned char*>(username.data()), username.size(),
                       nullptr, 0);
    char hex[2 * sizeof digest + 1];
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    return std::string("login-user:") + hex;
}

// The key failed logins from `ip` count against. Any local process can connect from any address
// in 127.0.0.0/8, and a host holds a whole /64 of IPv6, so each of those is one client address.
std::string login_address_key(std::string_view ip) {
    boost::system::error_code ec;
    asio::ip::address address = asio::ip::make_address(std::string(ip), ec);
    if (ec) {
        return "login-addr:" + std::string(ip);
    }
    if (address.is_v6() && address.to_v6().is_v4_mapped()) {
        address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
    }
    if (address.is_v4()) {
        return address.is_loopback() ? "login-addr:127.0.0.0/8"
                                     : "login-addr:" + address.to_string();
    }
    if (address.is_loopback()) {
        return "login-addr:::1";
    }
    asio::ip::address_v6::bytes_type bytes = address.to_v6().to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), 0);
    return "login-addr:" + asio::ip::address_v6(bytes).to_string() + "/64";
}

// How a login's username appears in the audit log: as it is when it could be an agent's name
// and does not look like a key (or most of one: a key is the prefix and 43 characters), else
// not at all. An agent that swapped its headers would otherwise leave its key there.
std::string audited_name(std::string_view username) {
    const bool key_shaped = username.starts_with(Registry::k_key_prefix) &&
                            username.size() >= Registry::k_key_prefix.size() + 32;
    if (key_shaped || !check_name("username", username)) {
        return "(not an agent name)";
    }
    return std::string(username);
}

std::string agent_limit_key(const Agent& agent) {
    return "agent:" + agent.id;
}

std::string service_limit_key(const Service& service) {
    return "service:" + service.id;
}

RateLimitState standing_limit(const AgentApiContext& ctx, const Agent& agent) {
    return ctx.limiter.standing(agent_limit_key(agent), agent.rate_limit.requests,
                                agent.rate_limit.window_secs);
}

std::variant<Agent, Response> authenticate(const AgentApiContext& ctx,
                                           const http::Request::header_type& header) {
    std::variant<Agent, AuthError> result;
    if (auto it = header.find("X-Session-ID"); it != header.end()) {
        result = ctx.registry.authenticate_session(it->value());
    } else if (auto auth = header.find(boost::beast::http::field::authorization);
               auth != header.end()) {
        const std::string_view value = auth->value();
        if (value.size() < 7 || !boost::beast::iequals(value.substr(0, 7), "Bearer ")) {
            return http::error_response(HttpStatus::unauthorized, "unauthorized",
                                        "Authorization must be \"Bearer <session or agent key>\"");
        }
        const std::string_view token = value.substr(7);
        if (token.starts_with(Registry::k_key_prefix)) {
            result = ctx.registry.authenticate_key(token);
        } else {
            result = ctx.registry.authenticate_session(token);
        }
    } else {
        return http::error_response(
            HttpStatus::unauthorized, "unauthorized",
            "missing credentials: send X-Session-ID or Authorization: Bearer");
    }
    if (auto* error = std::get_if<AuthError>(&result)) {
        return auth_failure(*error);
    }
    return std::get<Agent>(std::move(result));
}

void add_agent_routes(http::Router& router, AgentApiContext& ctx) {
    router.add(verb::get, "/healthz", [](http::RequestContext&) -> asio::awaitable<Response> {
        co_return http::json_response(HttpStatus::ok, {{"status", "ok"}});
    });

    router.add(verb::get, "/metrics", [&ctx](http::RequestContext&) -> asio::awaitable<Response> {
        Response res{HttpStatus::ok, 11};
        res.set(boost::beast::http::field::content_type, Metrics::k_content_type);
        res.set(boost::beast::http::field::cache_control, "no-store");
        res.body() = ctx.metrics.render();
        co_return res;
    });

    // POST /login (SPEC §3.1): an agent name and key for a session. One answer for a wrong name
    // and a wrong key; failures are limited per name and per client address.
    router.add(verb::post, "/login", [&ctx](http::RequestContext& c) -> asio::awaitable<Response> {
        const std::string username(c.req["username"]);
        const std::string_view key = c.req["x-api-key"];
        const std::string address(peer_ip(c.peer));
        const std::string shown_name = audited_name(username);
        const std::string user_key = login_user_key(username);
        const std::string addr_key = login_address_key(address);

        // Counted exactly: "10 failures within 5 minutes" holds for any 5 minutes.
        const RateLimitState by_user =
            ctx.limiter.peek_exact(user_key, k_login_failures_per_user, k_login_window_secs);
        const RateLimitState by_addr =
            ctx.limiter.peek_exact(addr_key, k_login_failures_per_address, k_login_window_secs);
        if (!by_user.allowed || !by_addr.allowed) {
            ctx.metrics.count_rate_limited("login");
            ctx.audit.record({"system",
                              "login",
                              "agent-name:" + shown_name,
                              "rate_limit_exceeded",
                              {{"address", address}}});
            Response res =
                http::error_response(HttpStatus::too_many_requests, "rate_limit_exceeded",
                                     "too many failed logins; try again later");
            set_rate_limit_headers(res, most_restrictive(by_user, by_addr));
            co_return res;
        }

        Registry::KeyUse used = Registry::KeyUse::current;
        const auto result = ctx.registry.authenticate_key(key, &used);
        const Agent* agent = std::get_if<Agent>(&result);
        if (agent != nullptr && same_text(agent->name, username)) {
            int64_t expires_at = 0;
            std::string token = ctx.registry.issue_session(*agent, expires_at, used);
            ctx.audit.record({"agent:" + agent->id,
                              "login",
                              "agent:" + agent->id,
                              "ok",
                              {{"address", address}}});
            Response res = http::json_response(
                HttpStatus::ok, {{"token", token}, {"expires_at", rfc3339(expires_at)}});
            set_rate_limit_headers(res, standing_limit(ctx, *agent));
            sodium_memzero(token.data(), token.size());
            co_return res;
        }
        // A right key whose agent may not log in (expired key, disabled agent) gets its own
        // answer, but only when it is the named agent's key; anything else is a wrong pair.
        const auto* error = std::get_if<AuthError>(&result);
        if (error != nullptr && error->failure == AuthFailure::unavailable) {
            // The key could not be checked: no failed login to count against anyone.
            spdlog::error("login: {}", error->message);
            ctx.audit.record({"system",
                              "login",
                              "agent-name:" + shown_name,
                              "internal_error",
                              {{"address", address}}});
            co_return auth_failure(*error);
        }
        if (error != nullptr && !error->agent_id.empty()) {
            const auto named = ctx.registry.find_agent(username);
            if (named && same_text(named->name, username) && named->id == error->agent_id) {
                ctx.audit.record(
                    {"agent:" + named->id,
                     "login",
                     "agent:" + named->id,
                     std::string(error->failure == AuthFailure::disabled ? "forbidden"
                                                                         : "key_expired"),
                     {{"address", address}}});
                co_return auth_failure(*error);
            }
        }
        ctx.limiter.hit_exact(user_key, k_login_failures_per_user, k_login_window_secs);
        ctx.limiter.hit_exact(addr_key, k_login_failures_per_address, k_login_window_secs);
        ctx.audit.record({"system",
                          "login",
                          "agent-name:" + shown_name,
                          "unauthorized",
                          {{"address", address}}});
        co_return invalid_login();
    });

    // GET /api: the caller's services, for agents discovering what they may call.
    router.add(verb::get, "/api", [&ctx](http::RequestContext& c) -> asio::awaitable<Response> {
        auto who = authenticate(ctx, c.req);
        if (auto* refusal = std::get_if<Response>(&who)) {
            co_return std::move(*refusal);
        }
        const Agent& agent = std::get<Agent>(who);
        const auto catalog = ctx.services.current();
        json services = json::array();
        for (const auto& grant : agent.grants) {
            if (const Service* s = catalog->find(grant.service_id)) {
                services.push_back(discovery_entry(*s, grant));
            }
        }
        Response res =
            http::json_response(HttpStatus::ok, {{"agent", agent.name}, {"services", services}});
        set_rate_limit_headers(res, standing_limit(ctx, agent));
        co_return res;
    });
}

}  // namespace agentgw
