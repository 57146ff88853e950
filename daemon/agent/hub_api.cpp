// The hub on the agent API (SPEC §3.3): publish, retrieve and delete, each authenticated by
// both the agent key (x-api-key) and a session of the same agent (Authorization: Bearer), and
// counted against the agent's rate limit.
#include <string_view>
#include <variant>

#include <boost/beast/core/string.hpp>
#include <fmt/format.h>

#include "daemon/agent/agent_api.hpp"
#include "daemon/hub/hub_wire.hpp"

namespace agentgw {

namespace asio = boost::asio;
using http::HttpStatus;
using http::Response;
using nlohmann::json;
using verb = boost::beast::http::verb;

namespace {

constexpr std::string_view k_bad_session = "Invalid or expired JWT";

// The agent named by both the x-api-key header and the Bearer session, or the answer to give.
std::variant<Agent, Response> authenticate_hub(const AgentApiContext& ctx,
                                               const http::Request::header_type& header) {
    const auto auth = header.find(boost::beast::http::field::authorization);
    const std::string_view value =
        auth == header.end() ? std::string_view() : std::string_view(auth->value());
    if (value.size() <= 7 || !boost::beast::iequals(value.substr(0, 7), "Bearer ")) {
        return http::error_response(HttpStatus::unauthorized, "unauthorized", k_bad_session);
    }
    auto by_session = ctx.registry.authenticate_session(value.substr(7));
    if (auto* error = std::get_if<AuthError>(&by_session)) {
        if (error->failure == AuthFailure::unauthorized ||
            error->failure == AuthFailure::session_expired) {
            return http::error_response(
                HttpStatus::unauthorized,
                error->failure == AuthFailure::session_expired ? "session_expired" : "unauthorized",
                k_bad_session);
        }
        return auth_failure(*error);
    }
    const auto key = header.find("x-api-key");
    if (key == header.end()) {
        return http::error_response(HttpStatus::unauthorized, "unauthorized",
                                    "missing x-api-key: the hub needs the agent key and a session");
    }
    auto by_key = ctx.registry.authenticate_key(key->value());
    if (auto* error = std::get_if<AuthError>(&by_key)) {
        if (error->failure == AuthFailure::unauthorized) {
            return http::error_response(HttpStatus::unauthorized, "unauthorized",
                                        "Invalid username or API key");
        }
        return auth_failure(*error);
    }
    if (std::get<Agent>(by_key).id != std::get<Agent>(by_session).id) {
        return http::error_response(HttpStatus::unauthorized, "unauthorized",
                                    "the API key and the session belong to different agents");
    }
    return std::get<Agent>(std::move(by_session));
}

// The agent named by the request's credentials, or the answer to give, which is audited as the
// system's (no agent is established): with target "hub", since a retrieval's path holds a token.
std::variant<Agent, Response> admit_hub(AgentApiContext& ctx, std::string_view action,
                                        const http::Request::header_type& header) {
    auto who = authenticate_hub(ctx, header);
    if (const auto* refusal = std::get_if<Response>(&who)) {
        ctx.audit.record({"system", std::string(action), "hub",
                          std::string((*refusal)["Agentgw-Error"]), json::object()});
    }
    return who;
}

// Whether the client asked for the bare data: an Accept naming text/plain and not JSON.
bool wants_plain_text(std::string_view accept) {
    bool plain = false;
    bool json_too = false;
    while (!accept.empty()) {
        const size_t comma = accept.find(',');
        std::string_view range = accept.substr(0, comma);
        accept = comma == std::string_view::npos ? std::string_view() : accept.substr(comma + 1);
        range = range.substr(0, range.find(';'));
        while (!range.empty() && (range.front() == ' ' || range.front() == '\t')) {
            range.remove_prefix(1);
        }
        while (!range.empty() && (range.back() == ' ' || range.back() == '\t')) {
            range.remove_suffix(1);
        }
        plain = plain || boost::beast::iequals(range, "text/plain");
        json_too = json_too || boost::beast::iequals(range, "application/json");
    }
    return plain && !json_too;
}

// Counts one more hub call against the agent's limit and returns where the agent stands for
// it; the 429 to answer (counted in the metrics and audited, not against the limit) when the
// limit refuses it.
std::variant<RateLimitState, Response> take_hub_call(AgentApiContext& ctx, const Agent& agent) {
    const RateLimitState limit = ctx.limiter.peek(agent_limit_key(agent), agent.rate_limit.requests,
                                                  agent.rate_limit.window_secs);
    if (limit.allowed) {
        ctx.limiter.hit(agent_limit_key(agent), agent.rate_limit.window_secs);
        return limit;
    }
    ctx.metrics.count_rate_limited("agent");
    ctx.audit.record({"agent:" + agent.id,
                      "rate_limit",
                      "hub",
                      "rate_limit_exceeded",
                      {{"scope", "agent"}, {"limit", limit.limit}}});
    Response res =
        http::error_response(HttpStatus::too_many_requests, "rate_limit_exceeded",
                             fmt::format("agent {} is limited to {} requests per {} s", agent.name,
                                         agent.rate_limit.requests, agent.rate_limit.window_secs));
    set_rate_limit_headers(res, limit);
    return res;
}

// One hub call: authenticate, count it against the agent's limit (unless the route's header
// check counted it already), run `step`, and put the limit's headers on whatever comes back.
using HubStep = std::function<asio::awaitable<Response>(http::RequestContext&, const Agent&)>;

http::Handler hub_route(AgentApiContext& ctx, std::string_view action, HubStep step,
                        bool counted_at_header = false) {
    return [&ctx, action, step = std::move(step),
            counted_at_header](http::RequestContext& c) -> asio::awaitable<Response> {
        auto who = admit_hub(ctx, action, c.req);
        if (auto* refusal = std::get_if<Response>(&who)) {
            co_return std::move(*refusal);
        }
        const Agent& agent = std::get<Agent>(who);
        RateLimitState limit;
        if (counted_at_header) {
            limit = standing_limit(ctx, agent);
        } else {
            auto taken = take_hub_call(ctx, agent);
            if (auto* refusal = std::get_if<Response>(&taken)) {
                co_return std::move(*refusal);
            }
            limit = std::get<RateLimitState>(taken);
        }
        Response res = co_await step(c, agent);
        set_rate_limit_headers(res, limit);
        co_return res;
    };
}

std::string outcome_of(const Error& e) {
    return std::string(http::error_response(e)["Agentgw-Error"]);
}

// The agent's publish whose body is over the limit: audited as its own, with its limit's
// headers (the call was counted at the header).
Response publish_too_large(AgentApiContext& ctx, const Agent& agent, size_t max_body) {
    ctx.audit.record({"agent:" + agent.id,
                      "hub.publish",
                      "hub",
                      "payload_too_large",
                      {{"message", fmt::format("request body: more than {} bytes", max_body)}}});
    Response res = http::error_response(HttpStatus::payload_too_large, "payload_too_large",
                                        "request body is too large");
    set_rate_limit_headers(res, standing_limit(ctx, agent));
    return res;
}

}  // namespace

void add_hub_routes(http::Router& router, AgentApiContext& ctx) {
    // A publish's body may be large: it is read only once its header names a known agent whose
    // limit allows the call, which is then counted (so that publishes sent together cannot all
    // pass on one request left). A body its Content-Length says is too large is refused here
    // too, and a chunked one once it has grown too large, so that the refusal is the agent's:
    // counted against its limit and audited.
    http::Admission publish_admission;
    publish_admission.body_limit = ctx.hub.limits().publish_body_limit();
    publish_admission.check =
        [&ctx, max_body = *publish_admission.body_limit](
            const http::Request::header_type& header,
            std::optional<uint64_t> content_length) -> std::optional<Response> {
        auto who = admit_hub(ctx, "hub.publish", header);
        if (auto* refusal = std::get_if<Response>(&who)) {
            return std::move(*refusal);
        }
        const Agent& agent = std::get<Agent>(who);
        auto taken = take_hub_call(ctx, agent);
        if (auto* refusal = std::get_if<Response>(&taken)) {
            return std::move(*refusal);
        }
        if (!content_length || *content_length <= max_body) {
            return std::nullopt;  // within the limit, or chunked: judged as it is read
        }
        return publish_too_large(ctx, agent, max_body);
    };
    publish_admission.oversized = [&ctx, max_body = *publish_admission.body_limit](
                                      const http::Request::header_type& header) -> Response {
        auto who = admit_hub(ctx, "hub.publish", header);  // it may have gone meanwhile
        if (auto* refusal = std::get_if<Response>(&who)) {
            return std::move(*refusal);
        }
        return publish_too_large(ctx, std::get<Agent>(who), max_body);
    };
    router.add(
        verb::post, "/secure/agent/publish",
        hub_route(
            ctx, "hub.publish",
            [&ctx](http::RequestContext& c, const Agent& agent) -> asio::awaitable<Response> {
                auto body =
                    JsonBody::parse(c.req.body(), {"name", "data", "ttl", "once", "recipients"});
                Result<BlobInput> input =
                    body ? blob_input_from(*body, agent, ctx.registry, ctx.hub.limits())
                         : Result<BlobInput>(body.error());
                if (input) {
                    if (auto s = ctx.hub.check(*input); !s) {
                        input = s.error();
                    }
                }
                const auto refuse = [&](const Error& e) {
                    ctx.audit.record({"agent:" + agent.id,
                                      "hub.publish",
                                      "hub",
                                      outcome_of(e),
                                      {{"message", e.message}}});
                    return http::error_response(e);
                };
                if (!input) {
                    co_return refuse(input.error());
                }
                const auto published = co_await ctx.hub.publish(*input);
                if (!published) {
                    co_return refuse(published.error());
                }
                ctx.audit.record(
                    {"agent:" + agent.id, "hub.publish", "blob:" + published->fingerprint, "ok"},
                    DetailsText()
                        .add("bytes", uint64_t{input->data.size()})
                        .add("name", input->name)
                        .add("once", input->once)
                        .add("recipients", uint64_t{input->recipient_ids.size()})
                        .add("ttl", int64_t{input->ttl_secs})
                        .take());
                co_return http::json_response(HttpStatus::ok, publish_receipt(*published));
            },
            /*counted_at_header=*/true),
        std::move(publish_admission));

    router.add(
        verb::get, "/secure/retrieve/{token}",
        hub_route(ctx, "hub.retrieve",
                  [&ctx](http::RequestContext& c, const Agent& agent) -> asio::awaitable<Response> {
                      const std::string& token = c.param("token");
                      const std::string target = "blob:" + ctx.hub.fingerprint(token);
                      auto blob = co_await ctx.hub.retrieve(token, agent.id);
                      if (!blob) {
                          ctx.audit.record({"agent:" + agent.id, "hub.retrieve", target,
                                            outcome_of(blob.error()), json::object()});
                          co_return http::error_response(blob.error());
                      }
                      ctx.audit.record(
                          {"agent:" + agent.id, "hub.retrieve", target, "ok"},
                          DetailsText().add("name", blob->name).add("once", blob->once).take());
                      if (wants_plain_text(c.req[boost::beast::http::field::accept])) {
                          Response res{HttpStatus::ok, 11};
                          res.set(boost::beast::http::field::content_type,
                                  "text/plain; charset=utf-8");
                          res.set(boost::beast::http::field::cache_control, "no-store");
                          res.body() = blob->data;
                          co_return res;
                      }
                      co_return http::json_response(HttpStatus::ok, blob_json(token, *blob));
                  }));

    router.add(
        verb::delete_, "/secure/retrieve/{token}",
        hub_route(ctx, "hub.delete",
                  [&ctx](http::RequestContext& c, const Agent& agent) -> asio::awaitable<Response> {
                      const std::string& token = c.param("token");
                      const std::string target = "blob:" + ctx.hub.fingerprint(token);
                      const Status removed = co_await ctx.hub.remove(token, agent.id);
                      ctx.audit.record({"agent:" + agent.id, "hub.delete", target,
                                        removed ? std::string("ok") : outcome_of(removed.error()),
                                        json::object()});
                      if (!removed) {
                          co_return http::error_response(removed.error());
                      }
                      Response res{HttpStatus::no_content, 11};
                      co_return res;
                  }));
}

}  // namespace agentgw
