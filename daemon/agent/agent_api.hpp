// The agent API on TCP (SPEC §3): health, metrics, login and service discovery as router
// routes, and the pieces every authenticated route shares with the proxy: who the caller is,
// and the RateLimit-* headers its responses carry.
//
// Thread-safety: everything here runs on the io_context thread.
#pragma once

#include <optional>
#include <string_view>
#include <variant>

#include "daemon/audit/audit_log.hpp"
#include "daemon/control/control_api.hpp"
#include "daemon/credentials/credential_store.hpp"
#include "daemon/http/router.hpp"
#include "daemon/hub/hub.hpp"
#include "daemon/identity/registry.hpp"
#include "daemon/metrics/metrics.hpp"
#include "daemon/oauth/refresher.hpp"
#include "daemon/ratelimit/rate_limiter.hpp"
#include "daemon/upstream/upstream_client.hpp"

namespace agentgw {

struct AgentApiContext {
    Registry& registry;
    CredentialStore& credentials;
    AuditLog& audit;
    ServiceDirectory& services;
    RateLimiter& limiter;
    Metrics& metrics;
    upstream::UpstreamClient& upstream;
    Hub& hub;
    oauth::TokenRefresher& refresher;
};

// Failed logins allowed per username and per client address within the window (SPEC §3.1).
inline constexpr int64_t k_login_failures_per_user = 10;
inline constexpr int64_t k_login_failures_per_address = 50;
inline constexpr int64_t k_login_window_secs = 300;

void add_agent_routes(http::Router& router, AgentApiContext& ctx);
// The hub's routes (SPEC §3.3), in hub_api.cpp.
void add_hub_routes(http::Router& router, AgentApiContext& ctx);

// The answer to a failed authentication: 401 with its type, or 403 for a disabled agent.
http::Response auth_failure(const AuthError& e);

// The agent a request authenticates as (X-Session-ID, or Authorization: Bearer with a session
// or an agent key), or the 401/403 answer to give instead.
std::variant<Agent, http::Response> authenticate(const AgentApiContext& ctx,
                                                 const http::Request::header_type& header);

// The rate-limit key of an agent and of a service.
std::string agent_limit_key(const Agent& agent);
std::string service_limit_key(const Service& service);

// The agent's own limit as it stands, for a response that does not count against it.
RateLimitState standing_limit(const AgentApiContext& ctx, const Agent& agent);

// Sets RateLimit-Limit/-Remaining/-Reset from `state`, and Retry-After when it refused.
template <typename Fields>
void set_rate_limit_headers(Fields& fields, const RateLimitState& state) {
    fields.set("RateLimit-Limit", std::to_string(state.limit));
    fields.set("RateLimit-Remaining", std::to_string(state.remaining));
    fields.set("RateLimit-Reset", std::to_string(state.reset_secs));
    if (!state.allowed) {
        fields.set("Retry-After", std::to_string(state.retry_after_secs));
    }
}

// The client address of a TCP peer ("127.0.0.1:5123" → "127.0.0.1").
std::string_view peer_ip(const http::Peer& peer);

}  // namespace agentgw
