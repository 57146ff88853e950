#include "daemon/agent/proxy.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <iterator>
#include <memory>
#include <variant>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <boost/url/url.hpp>
#include <fmt/format.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include "daemon/crypto/secure_buffer.hpp"
#include "daemon/util/redactor.hpp"

namespace agentgw {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = boost::beast::http;
using http::HttpStatus;
using http::Response;
using SteadyClock = std::chrono::steady_clock;

namespace {

constexpr auto k_tuple = asio::as_tuple(asio::use_awaitable);

// A request body of known length up to this is read whole before the upstream exchange
// starts, and curl sends it right behind the head (in the same write when it is small): no
// pause and no wake-up per piece. Longer or chunked bodies stream through as the upstream
// takes them.
constexpr uint64_t k_whole_body = 64 * 1024;

// Watches the agent's socket while nothing is read from it or written to it, as the upstream
// works on its answer or a stream waits for its next piece: when the agent closes its
// connection (or it is reset), the exchange is abandoned rather than left to run, holding an
// upstream connection, until the upstream sends something. Bytes
// waiting to be read (a request sent ahead) mean the agent is still there, and end the watch.
// As with nginx, an agent that shuts down only its sending side counts as gone. The watch is
// one receive that peeks (it takes nothing from the socket): Asio tries it at once and
// otherwise waits for the socket's next event, so a close that came before the watch began
// is seen as surely as one that comes after. It is the only operation on the socket while the
// watch lasts: its end cancels it.
class AgentWatch {
  public:
    AgentWatch(asio::ip::tcp::socket& socket, upstream::Transfer& transfer)
        : socket_(socket), transfer_(transfer) {
        socket_.async_receive(
            asio::buffer(&state_->byte, 1), asio::socket_base::message_peek,
            [this, state = state_](const boost::system::error_code& ec, size_t) {
                // Cancelled (the watch ended) or a byte waiting: the agent is still there.
                if (state->stopped || !ec || ec == asio::error::operation_aborted) {
                    return;
                }
                // End of stream, or the connection reset. An exchange that ended meanwhile on its
                // own keeps its outcome (an upstream failure stays the upstream's).
                state->left = transfer_.abandon("the agent closed its connection");
            });
    }
    ~AgentWatch() {
        state_->stopped = true;  // a receive already complete must not act any more
        boost::system::error_code ignored;
        socket_.cancel(ignored);
    }
    AgentWatch(const AgentWatch&) = delete;
    AgentWatch& operator=(const AgentWatch&) = delete;

    // Whether the agent left and the exchange was abandoned for it.
    bool agent_left() const { return state_->left; }

  private:
    struct State {
        char byte = 0;  // where the peek puts what it sees; it outlives the watch
        bool stopped = false;
        bool left = false;
    };
    asio::ip::tcp::socket& socket_;
    upstream::Transfer& transfer_;
    std::shared_ptr<State> state_ = std::make_shared<State>();
};

// What the stages learn about one request as it passes through them.
struct Call {
    const beast_http::request<beast_http::empty_body>& req;  // the header; no body read yet
    std::string method;
    std::string service_id;
    std::string upstream_path;  // below the base URL, percent-encoded as the agent sent it
    std::string match_path;     // the same, decoded: what grants and allow rules see
    std::string query;          // encoded, without '?'
    std::vector<std::string> method_overrides;  // from override headers and _method; upper-cased
    std::optional<Agent> agent;
    std::shared_ptr<const ServiceCatalog> catalog;
    const Service* service = nullptr;
    std::optional<RateLimitState> limit;  // for the RateLimit-* headers
    std::shared_ptr<const ResolvedCredential> credential;
};

// A stage either lets the request continue (nullopt) or answers it.
using Stage = std::optional<Response> (*)(AgentApiContext&, Call&);

// Whether an encoded path segment holds %2F or %5C (a slash or a backslash), in either case.
bool encodes_slash(std::string_view segment) {
    for (size_t i = segment.find('%'); i != std::string_view::npos && i + 2 < segment.size();
         i = segment.find('%', i + 1)) {
        const std::string_view code = segment.substr(i + 1, 2);
        if (beast::iequals(code, "2f") || beast::iequals(code, "5c")) {
            return true;
        }
    }
    return false;
}

// Whether a decoded segment is "." or "..", also with ";parameters": a server that drops those
// before resolving the segment (as Java's do) takes "..;x" for "..".
bool is_dot_segment(std::string_view segment) {
    const std::string_view bare = segment.substr(0, segment.find(';'));
    return bare == "." || bare == "..";
}

// Whether a dot-segment is among the pieces of `segment` decoded once more, split at its
// slashes and backslashes.
bool climbs_when_decoded_again(std::string_view segment) {
    const auto encoded = boost::urls::make_pct_string_view(segment);
    if (!encoded || encoded->decoded_size() == segment.size()) {
        return false;  // not a valid encoding, or nothing in it encoded
    }
    const std::string twice = encoded->decode();
    for (size_t start = 0; start <= twice.size();) {
        const size_t end = std::min(twice.find_first_of("/\\", start), twice.size());
        if (is_dot_segment(std::string_view(twice).substr(start, end - start))) {
            return true;
        }
        start = end + 1;
    }
    return false;
}

// Headers through which many servers take the method from the request instead of its line.
constexpr std::string_view k_method_overrides[] = {"X-HTTP-Method-Override", "X-HTTP-Method",
                                                   "X-Method-Override"};
// Whether a query parameter's key names the parameter through which others take it (Laravel,
// Express' method-override): "_method" once read as PHP reads a name: decoded with '+' for a
// space, cut at a NUL, leading spaces dropped, and ' ' and '.' made '_' (so ".method",
// "%20_method" and "_method%00x" count).
bool is_method_parameter(boost::urls::pct_string_view key) {
    if (key.decoded_size() < 7) {
        return false;
    }
    boost::urls::encoding_opts plus_is_space;
    plus_is_space.space_as_plus = true;
    std::string name = key.decode(plus_is_space);
    name.resize(std::min(name.find('\0'), name.size()));
    name.erase(0, name.find_first_not_of(' '));
    std::replace_if(
        name.begin(), name.end(), [](char c) { return c == ' ' || c == '.'; }, '_');
    return name == "_method";
}

Response bad_request(std::string_view message) {
    return http::error_response(HttpStatus::bad_request, "bad_request", message);
}

Response too_large(const Service& service) {
    return http::error_response(HttpStatus::payload_too_large, "payload_too_large",
                                fmt::format("the body exceeds the {} bytes service {} accepts",
                                            service.max_body, service.id));
}

// Hop-by-hop headers (RFC 9110 §7.6.1) plus those the Connection header names.
class HopByHop {
  public:
    explicit HopByHop(std::string_view connection) {
        size_t start = 0;
        while (start <= connection.size()) {
            const size_t end = std::min(connection.find(',', start), connection.size());
            std::string_view token = connection.substr(start, end - start);
            while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) {
                token.remove_prefix(1);
            }
            while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) {
                token.remove_suffix(1);
            }
            if (!token.empty()) {
                named_.push_back(token);
            }
            start = end + 1;
        }
    }
    // Names compare without regard to case.
    bool contains(std::string_view name) const {
        static constexpr std::string_view k_fixed[] = {
            "connection", "keep-alive",        "te",      "trailer",
            "upgrade",    "transfer-encoding", "trailers"};
        auto is = [name](std::string_view other) { return beast::iequals(name, other); };
        return std::any_of(std::begin(k_fixed), std::end(k_fixed), is) ||
               (name.size() >= 6 && beast::iequals(name.substr(0, 6), "proxy-")) ||
               std::any_of(named_.begin(), named_.end(), is);
    }

  private:
    std::vector<std::string_view> named_;  // views into the Connection value given
};

// ---------------------------------------------------------------------------------------------
// Stages, in order.

// The path below /api/{service}: dot-segments, encoded slashes and backslashes could climb
// out of the service's base path at the upstream, so they are refused rather than resolved.
std::optional<Response> parse_target(AgentApiContext&, Call& call) {
    call.method = std::string(call.req.method_string());  // first: a refusal's audit names it
    if (call.req.method() == beast_http::verb::connect) {
        return bad_request("CONNECT is not supported");
    }
    // TRACE makes the upstream send the request back as it received it: with the injected
    // credential in it. TRACK is the same under another name, some servers take method names
    // in any case, and some take the method from an override header or parameter.
    const auto echoes = [](std::string_view method) {
        return beast::iequals(method, "TRACE") || beast::iequals(method, "TRACK");
    };
    const auto url = boost::urls::parse_origin_form(call.req.target());
    if (!url) {
        return bad_request("request target is not a valid origin-form URL");
    }
    bool echoed = echoes(call.method);
    const auto add_override = [&](std::string method) {
        echoed = echoed || echoes(method);
        if (method.empty()) {
            return;  // names no method
        }
        std::transform(method.begin(), method.end(), method.begin(),
                       [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
        call.method_overrides.push_back(std::move(method));
    };
    for (const std::string_view name : k_method_overrides) {
        for (auto [it, end] = call.req.equal_range(name); it != end; ++it) {
            add_override(std::string(it->value()));
        }
    }
    for (const auto param : url->encoded_params()) {
        if (is_method_parameter(param.key)) {
            add_override(param.has_value ? param.value.decode() : std::string());
        }
    }
    if (echoed) {
        Response res = http::error_response(HttpStatus::method_not_allowed, "method_not_allowed",
                                            "TRACE and TRACK are not forwarded: the upstream "
                                            "would echo the injected credential back");
        res.set(beast_http::field::allow, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        return res;
    }
    const auto segments = url->encoded_segments();
    auto it = segments.begin();
    if (it == segments.end() || ++it == segments.end() || (*it).empty()) {
        return std::nullopt;  // no service named: find_service answers, after authentication
    }
    call.service_id = (*it).decode();
    for (++it; it != segments.end(); ++it) {
        const std::string_view encoded = *it;
        if (encodes_slash(encoded) || encoded.find('\\') != std::string_view::npos) {
            return bad_request("encoded slashes and backslashes are not allowed in the path");
        }
        const std::string decoded = (*it).decode();
        if (is_dot_segment(decoded)) {
            return bad_request("dot-segments are not allowed in the path");
        }
        // One that decodes twice takes "%252e%252e" for "..", and "a%252f..%252fb" for
        // "a/../b". (A slash encoded twice alone, as some servers expect in a name, passes.)
        if (climbs_when_decoded_again(decoded)) {
            return bad_request("dot-segments encoded twice are not allowed in the path");
        }
        if (decoded.find('\0') != std::string::npos) {
            return bad_request("the path holds a NUL byte");
        }
        call.upstream_path.append("/").append(encoded);
        call.match_path.append("/").append(decoded);
    }
    if (call.match_path.empty()) {
        call.match_path = "/";
    }
    if (url->has_query()) {
        call.query = url->encoded_query();
    }
    return std::nullopt;
}

std::optional<Response> authenticate_caller(AgentApiContext& ctx, Call& call) {
    auto who = authenticate(ctx, call.req);
    if (auto* refusal = std::get_if<Response>(&who)) {
        return std::move(*refusal);
    }
    call.agent = std::get<Agent>(std::move(who));
    call.limit = standing_limit(ctx, *call.agent);  // until the rate-limit stage counts it
    return std::nullopt;
}

std::optional<Response> find_service(AgentApiContext& ctx, Call& call) {
    if (call.service_id.empty()) {
        return http::error_response(HttpStatus::not_found, "not_found",
                                    "name a service: /api/{service}/...");
    }
    call.catalog = ctx.services.current();
    call.service = call.catalog->find(call.service_id);
    if (call.service == nullptr) {
        return http::error_response(HttpStatus::not_found, "not_found",
                                    fmt::format("no service named \"{}\"", call.service_id));
    }
    return std::nullopt;
}

std::optional<Response> check_grant(AgentApiContext&, Call& call) {
    const Service& service = *call.service;
    const Grant* grant = call.agent->grant_for(service.id);
    auto deny = [&](std::string message) {
        return http::error_response(HttpStatus::forbidden, "service_not_allowed", message);
    };
    if (grant == nullptr) {
        return deny(fmt::format("agent {} may not use service {}", call.agent->name, service.id));
    }
    // The method of the request line, and any an override names: the upstream may act
    // on either, so the grant and the service must allow both.
    const auto granted = [&](const std::string& method) {
        return grant->methods.empty() ||
               std::any_of(grant->methods.begin(), grant->methods.end(),
                           [&](const std::string& m) { return m == "*" || m == method; });
    };
    const bool path_ok =
        grant->paths.empty() ||
        std::any_of(grant->paths.begin(), grant->paths.end(),
                    [&](const std::string& p) { return glob_match(p, call.match_path); });
    const auto check = [&](const std::string& method) -> std::optional<Response> {
        if (!granted(method) || !path_ok) {
            return deny(fmt::format("agent {} may not {} {} on service {}", call.agent->name,
                                    method, call.match_path, service.id));
        }
        if (!service.allows(method, call.match_path)) {
            return deny(fmt::format("service {} does not allow {} {}", service.id, method,
                                    call.match_path));
        }
        return std::nullopt;
    };
    if (auto refusal = check(call.method)) {
        return refusal;
    }
    for (const std::string& method : call.method_overrides) {
        if (auto refusal = check(method)) {
            return refusal;
        }
    }
    return std::nullopt;
}

// The agent's limit and the service's, both sliding windows; a refused request counts
// against neither.
std::optional<Response> check_rate_limits(AgentApiContext& ctx, Call& call) {
    const Agent& agent = *call.agent;
    const Service& service = *call.service;
    const std::string agent_key = agent_limit_key(agent);
    const std::string service_key = service_limit_key(service);
    const auto& alimit = agent.rate_limit;
    RateLimitState by_agent = ctx.limiter.peek(agent_key, alimit.requests, alimit.window_secs);
    std::optional<RateLimitState> by_service;
    if (service.rate_limit) {
        by_service = ctx.limiter.peek(service_key, service.rate_limit->requests,
                                      service.rate_limit->window_secs);
    }
    if (!by_agent.allowed || (by_service && !by_service->allowed)) {
        // When both refuse, the one with the longer wait is reported: a retry after the
        // shorter one would be refused again.
        const bool agent_reported =
            !by_agent.allowed && (!by_service || by_service->allowed ||
                                  by_agent.retry_after_secs >= by_service->retry_after_secs);
        call.limit = agent_reported ? by_agent : *by_service;
        const std::string_view scope = agent_reported ? "agent" : "service";
        ctx.metrics.count_rate_limited(scope);
        ctx.audit.record({"agent:" + agent.id,
                          "rate_limit",
                          "service:" + service.id,
                          "rate_limit_exceeded",
                          {{"scope", scope}, {"limit", call.limit->limit}}});
        return http::error_response(
            HttpStatus::too_many_requests, "rate_limit_exceeded",
            agent_reported
                ? fmt::format("agent {} is limited to {} requests per {} s", agent.name,
                              alimit.requests, alimit.window_secs)
                : fmt::format("service {} is limited to {} requests per {} s", service.id,
                              service.rate_limit->requests, service.rate_limit->window_secs));
    }
    ctx.limiter.hit(agent_key, alimit.window_secs);
    call.limit = by_agent;
    if (by_service) {
        ctx.limiter.hit(service_key, service.rate_limit->window_secs);
        call.limit = most_restrictive(by_agent, *by_service);
    }
    return std::nullopt;
}

std::optional<Response> find_credential(AgentApiContext& ctx, Call& call) {
    auto found = ctx.credentials.resolve(call.service->id, call.agent->user_id, call.agent->id);
    if (!found) {
        spdlog::error("reading the credential for {}: {}", call.service->id, found.error().message);
        return http::error_response(HttpStatus::internal_server_error, "internal_error",
                                    "the credential could not be read");
    }
    if (!*found) {
        return http::error_response(
            HttpStatus::bad_gateway, "upstream_error",
            fmt::format("no credential is stored for service {} (agentgw credential set {})",
                        call.service->id, call.service->id));
    }
    call.credential = std::move(*found);
    return std::nullopt;
}

constexpr Stage k_stages[] = {parse_target, authenticate_caller, find_service,
                              check_grant,  check_rate_limits,   find_credential};

// ---------------------------------------------------------------------------------------------
// Forwarding

// The secret of `cred` that the bearer, header and query types send.
const std::string& injected_secret(const ResolvedCredential& cred) {
    return cred.secret.empty() ? cred.access_token : cred.secret;
}

// Adds the credential to `up` as the service says; an error answer when the stored credential
// cannot serve that injection type.
std::optional<Response> inject(const Call& call, int64_t now_secs, upstream::UpstreamRequest& up,
                               std::string& query) {
    const Service& service = *call.service;
    const ResolvedCredential& cred = *call.credential;
    const std::string& token = injected_secret(cred);
    auto unusable = [&](std::string_view why) {
        return http::error_response(
            HttpStatus::bad_gateway, "upstream_error",
            fmt::format("the credential for service {} {}", service.id, why));
    };
    // A token goes into a header line as it is: a line break in it would end that line and
    // start a header (or a request) of its own. The control API refuses such secrets; what an
    // authorization server answered is checked here.
    if (cred.type == "client_secret" && service.auth.type != AuthSpec::Type::oauth2) {
        // A client secret is for a token endpoint; it never goes to the service itself.
        return unusable("is a client secret, which only an oauth2 service can use");
    }
    switch (service.auth.type) {
        case AuthSpec::Type::oauth2:
            // Only ever the access token: a client_credentials record also holds the secret.
            if (cred.access_token.empty()) {
                return unusable("has no access token (agentgw connect or credential set)");
            }
            if (cred.expires_at != 0 && cred.expires_at <= now_secs) {
                return unusable("holds an access token that has expired");
            }
            if (http::holds_line_break(cred.access_token)) {
                return unusable("holds an access token with CR, LF or NUL in it");
            }
            up.headers.push_back("Authorization: Bearer " + cred.access_token);
            return std::nullopt;
        case AuthSpec::Type::bearer:
            if (token.empty()) {
                return unusable("has no token to send as a bearer token");
            }
            if (http::holds_line_break(token)) {
                return unusable("holds a token with CR, LF or NUL in it");
            }
            up.headers.push_back("Authorization: Bearer " + token);
            return std::nullopt;
        case AuthSpec::Type::header:
            if (token.empty()) {
                return unusable("has no secret to send in a header");
            }
            if (http::holds_line_break(token)) {
                return unusable("holds a secret with CR, LF or NUL in it");
            }
            up.headers.push_back(service.auth.name + ": " + service.auth.prefix + token);
            return std::nullopt;
        case AuthSpec::Type::query: {
            if (token.empty()) {
                return unusable("has no secret to send in the query");
            }
            if (!query.empty()) {
                // The agent's own parameters of that name are dropped (after decoding, so that
                // "%61pi_key" is "api_key"): the upstream sees the injected value alone.
                boost::urls::url rest;
                rest.set_encoded_query(query);
                if (rest.params().erase(service.auth.name) != 0) {
                    query = rest.encoded_query();
                }
            }
            std::string encoded = boost::urls::encode(token, boost::urls::unreserved_chars);
            if (!query.empty()) {
                query.push_back('&');
            }
            query.append(boost::urls::encode(service.auth.name, boost::urls::unreserved_chars))
                .append("=")
                .append(encoded);
            wipe(encoded);
            return std::nullopt;
        }
        case AuthSpec::Type::basic: {
            if (cred.username.empty() && cred.password.empty()) {
                return unusable("has no username and password for basic authentication");
            }
            std::string pair = cred.username + ":" + cred.password;
            std::string encoded(
                sodium_base64_encoded_len(pair.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
            sodium_bin2base64(encoded.data(), encoded.size(),
                              reinterpret_cast<const unsigned char*>(pair.data()), pair.size(),
                              sodium_base64_VARIANT_ORIGINAL);
            encoded.resize(std::strlen(encoded.c_str()));
            up.headers.push_back("Authorization: Basic " + encoded);
            wipe(pair);
            wipe(encoded);
            return std::nullopt;
        }
    }
    return unusable("has an unknown injection type");
}

// The agent's headers minus hop-by-hop ones, its own credentials, Host (curl sets it to the
// upstream's) and the framing headers curl writes itself.
void copy_request_headers(const Call& call, upstream::UpstreamRequest& up) {
    std::string connection;  // every Connection field line, not only the first
    for (auto [it, end] = call.req.equal_range(beast_http::field::connection); it != end; ++it) {
        connection.append(it->value()).append(",");
    }
    const HopByHop hop(connection);
    const std::string_view injected = call.service->auth.type == AuthSpec::Type::header
                                          ? std::string_view(call.service->auth.name)
                                          : std::string_view();
    for (const auto& field : call.req) {
        const std::string_view name = field.name_string();
        auto is = [name](std::string_view other) { return beast::iequals(name, other); };
        if (hop.contains(name) || is("host") || is("content-length") || is("expect") ||
            is("x-session-id") || is("authorization") || is("x-api-key") ||
            (!injected.empty() && is(injected))) {
            continue;
        }
        // curl reads "Name:" as "remove Name"; "Name;" is how it sends an empty value.
        up.headers.push_back(field.value().empty()
                                 ? fmt::format("{};", field.name_string())
                                 : fmt::format("{}: {}", field.name_string(), field.value()));
    }
}

template <typename Message>
asio::awaitable<bool> write_whole(beast::tcp_stream& stream, Message& res,
                                  std::chrono::seconds timeout) {
    stream.expires_after(timeout);
    auto [ec, n] = co_await beast_http::async_write(stream, res, k_tuple);
    co_return !ec;
}

class ProxyExchange {
  public:
    ProxyExchange(AgentApiContext& ctx, http::Exchange& ex)
        : ctx_(ctx),
          ex_(ex),
          call_{ex.parser.get(), {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}},
          head_request_(ex.parser.get().method() == beast_http::verb::head),
          client_http10_(ex.parser.get().version() < 11),
          started_(SteadyClock::now()) {}
    ProxyExchange(const ProxyExchange&) = delete;
    ProxyExchange& operator=(const ProxyExchange&) = delete;
    ~ProxyExchange() {
        if (replay_) {
            wipe(*replay_);
        }
    }

    asio::awaitable<bool> run() {
        std::optional<Response> refusal;
        for (Stage stage : k_stages) {
            refusal = stage(ctx_, call_);
            if (refusal) {
                co_return co_await refuse(*refusal);
            }
        }
        refusal = co_await fresh_credential();
        if (refusal) {
            co_return co_await refuse(*refusal);
        }
        co_return co_await forward();
    }

  private:
    // An OAuth2 credential whose access token is missing or expired is refreshed first; the
    // request then goes with the new one. Waits for a refresh already running for the same
    // credential rather than start another.
    asio::awaitable<std::optional<Response>> fresh_credential() {
        const Service& service = *call_.service;
        if (service.auth.type != AuthSpec::Type::oauth2) {
            co_return std::nullopt;
        }
        // Twice at most: a refresh that found the credential already changed (refreshed or
        // replaced by someone else) leaves a new record to judge again.
        for (int round = 0; round < 2; ++round) {
            const ResolvedCredential& cred = *call_.credential;
            const int64_t now = ctx_.registry.clock().now_secs();
            const bool stale =
                cred.access_token.empty() || (cred.expires_at != 0 && cred.expires_at <= now);
            if (!stale) {
                co_return std::nullopt;  // still good, even when its refresh was refused
            }
            if (cred.reauth_required) {
                co_return reauth_answer(cred);
            }
            if (!cred.refreshable) {
                co_return std::nullopt;  // nothing to refresh with: inject() explains
            }
            const std::string key = cred.key;
            const uint64_t generation = cred.generation;
            const Status refreshed = co_await ctx_.refresher.refresh(service, key, generation);
            if (!refreshed) {
                co_return http::error_response(refreshed.error());
            }
            if (auto refusal = find_credential(ctx_, call_)) {
                co_return refusal;
            }
        }
        co_return std::nullopt;
    }

    // The answer for a credential whose refresh was refused: what the operator must do.
    Response reauth_answer(const ResolvedCredential& cred) const {
        const std::string& id = call_.service->id;
        return http::error_response(
            HttpStatus::bad_gateway, "upstream_error",
            cred.type == "client_secret"
                ? fmt::format("credential refresh failed: the token endpoint refused the client "
                              "secret for service {} (agentgw credential set {} --type "
                              "client_secret)",
                              id, id)
                : fmt::format("credential refresh failed: the refresh token for service {} was "
                              "refused; authorise again (agentgw connect {}, or agentgw "
                              "credential set {} --type oauth2)",
                              id, id, id));
    }

    // Answers without forwarding. An unread body would be taken for the next request, so the
    // connection closes when there is one.
    asio::awaitable<bool> refuse(Response& res) {
        const bool keep_alive = ex_.parser.is_done() && ex_.parser.keep_alive();
        co_return co_await answer(res, keep_alive, 0);
    }

    // A gateway-made answer once the request was taken whole (its body read, or `bytes_in` of
    // it when the upstream refused the rest): the connection stays open when `keep_alive`.
    asio::awaitable<bool> answer(Response& res, bool keep_alive, uint64_t bytes_in) {
        finish_response(res, keep_alive);
        audit(res.result_int(), std::string(res["Agentgw-Error"]), bytes_in, 0);
        co_return co_await write_whole(ex_.stream, res, ex_.limits.read_timeout) && keep_alive;
    }

    void finish_response(Response& res, bool keep_alive) {
        if (call_.limit) {
            set_rate_limit_headers(res, *call_.limit);
        }
        res.version(11);
        res.keep_alive(keep_alive);
        res.set(beast_http::field::server, "agentgwd");
        res.prepare_payload();
        if (head_request_) {
            res.body().clear();  // the headers say what a GET would get, but no content follows
        }
    }

    void audit(unsigned status, std::string outcome, uint64_t bytes_in, uint64_t bytes_out) {
        const double secs = std::chrono::duration<double>(SteadyClock::now() - started_).count();
        ctx_.metrics.count_request("/api/{service}", status);
        if (call_.service != nullptr && outcome != "rate_limit_exceeded") {
            ctx_.metrics.observe_proxy(call_.service->id, secs);
        }
        ctx_.audit.record({call_.agent ? "agent:" + call_.agent->id : "system", "proxy",
                           "service:" + call_.service_id, outcome.empty() ? "ok" : outcome},
                          DetailsText()
                              .add("bytes_in", bytes_in)
                              .add("bytes_out", bytes_out)
                              .add("duration_ms", static_cast<int64_t>(secs * 1000))
                              .add("latency_ms", static_cast<int64_t>(latency_ms_))
                              .add("method", call_.method)
                              .add("path", call_.match_path)
                              .add("status", uint64_t{status})
                              .take());
    }

    using BodyParser = beast_http::request_parser<beast_http::buffer_body>;

    // Puts the call's credential into `up`, in place of whatever was injected before (the
    // header lines from `injected_at` on, the URL), then drops the call's copy of it: the
    // request holds the only one.
    std::optional<Response> address(upstream::UpstreamRequest& up, size_t injected_at) {
        for (size_t i = injected_at; i < up.headers.size(); ++i) {
            wipe(up.headers[i]);
        }
        up.headers.resize(injected_at);
        std::string query = call_.query;
        auto refusal = inject(call_, ctx_.registry.clock().now_secs(), up, query);
        echoed_.reset();
        if (!refusal && call_.service->auth.type == AuthSpec::Type::query) {
            echoed_.emplace().add(injected_secret(*call_.credential));  // see redact_echoed()
        }
        call_.credential.reset();
        if (!refusal) {
            wipe(up.url);
            up.url = call_.service->base_url + call_.upstream_path;
            if (!query.empty()) {
                up.url.append("?").append(query);
            }
        }
        wipe(query);
        return refusal;
    }

    // Reads the next piece of the request body into [data, data + size): how many bytes came
    // (as soon as any do, so that a piece goes upstream as the agent sends it; 0 when only
    // framing came), or the answer the client gets instead. The read timeout is between reads,
    // not for the piece: an agent sending slowly but steadily is not cut off.
    asio::awaitable<std::variant<size_t, Response>> read_body_piece(BodyParser& body, char* data,
                                                                    size_t size) {
        body.get().body().data = data;
        body.get().body().size = size;
        ex_.stream.expires_after(ex_.limits.read_timeout);
        auto [ec, n] = co_await beast_http::async_read_some(ex_.stream, ex_.buffer, body, k_tuple);
        // The read stops at the end of one chunk: what else of the body has come already goes
        // into this piece too, up to its room, without waiting for more, so that many small
        // chunks sent together go upstream together and not one by one.
        while (!ec && ex_.buffer.size() > 0 && !body.is_done() && body.get().body().size > 0) {
            const size_t used = body.put(ex_.buffer.data(), ec);
            ex_.buffer.consume(used);
            if (ec == beast_http::error::need_more) {
                ec = {};  // the rest of an element is still to come
                break;
            }
            if (used == 0) {
                break;
            }
        }
        if (ec == beast_http::error::need_buffer) {
            ec = {};
        }
        if (ec == beast_http::error::body_limit) {
            co_return too_large(*call_.service);
        }
        if (ec) {
            co_return bad_request(fmt::format("reading the request body: {}", ec.message()));
        }
        co_return size - body.get().body().size;
    }

    asio::awaitable<bool> forward() {
        const Service& service = *call_.service;
        auto& parser = ex_.parser;
        const bool client_keep_alive = ex_.parser.keep_alive();  // every Connection line
        const bool expect_continue = http::expects_continue(call_.req);

        upstream::UpstreamRequest up;
        up.method = call_.method;
        up.has_body = parser.chunked() || parser.content_length().has_value();
        if (const auto length = parser.content_length()) {
            up.body_size = *length;
        }
        up.connect_timeout = std::chrono::seconds(service.connect_timeout_secs);
        up.timeout = std::chrono::seconds(service.timeout_secs);
        up.ca_file = service.ca_file;
        up.allow_http = service.scheme == "http";
        if (up.body_size && *up.body_size > service.max_body) {
            Response res = too_large(service);
            co_return co_await refuse(res);
        }
        copy_request_headers(call_, up);
        const size_t injected_at = up.headers.size();  // the credential's lines come last
        const std::string credential_key = call_.credential->key;
        const uint64_t credential_generation = call_.credential->generation;
        // An upstream that refuses an OAuth2 access token before it expired (revoked, rotated
        // elsewhere) gets one more try with a refreshed token, when the request can be sent
        // again: it has no body, or one small enough to be read whole, of which a copy is kept.
        // A credential whose refresh was refused is not refreshed again: the upstream's 401
        // goes back as it is.
        const bool may_retry = service.auth.type == AuthSpec::Type::oauth2 &&
                               call_.credential->refreshable && !call_.credential->reauth_required;
        if (auto refusal = address(up, injected_at)) {
            co_return co_await refuse(*refusal);
        }

        uint64_t bytes_in = 0;
        bool body_complete = true;
        std::optional<Response> body_error;
        std::optional<BodyParser> body;
        if (up.has_body && !parser.is_done()) {
            if (expect_continue) {
                beast_http::response<beast_http::empty_body> go_on{HttpStatus::continue_, 11};
                if (!co_await write_whole(ex_.stream, go_on, ex_.limits.read_timeout)) {
                    co_return false;
                }
            }
            body.emplace(std::move(parser));
            body->body_limit(service.max_body);
        }

        // A body of known length up to k_whole_body is read before the exchange starts, so
        // that curl sends it with the head instead of pausing for each piece.
        std::unique_ptr<upstream::Transfer> transfer;
        if (up.body_size && *up.body_size <= k_whole_body) {
            std::string whole(*up.body_size, '\0');
            while (body && !body->is_done() && bytes_in < whole.size()) {
                auto piece = co_await read_body_piece(*body, whole.data() + bytes_in,
                                                      whole.size() - bytes_in);
                if (auto* refusal = std::get_if<Response>(&piece)) {
                    body_error = std::move(*refusal);
                    break;
                }
                bytes_in += std::get<size_t>(piece);
            }
            if (!body_error) {
                if (may_retry) {
                    replay_.emplace(whole);
                }
                transfer = ctx_.upstream.start(up, std::move(whole));
            }
        } else {
            transfer = ctx_.upstream.start(up);
            // The request body, piece by piece, as the upstream takes it.
            std::array<char, 16 * 1024> buf;
            while (body && !body->is_done()) {
                auto piece = co_await read_body_piece(*body, buf.data(), buf.size());
                if (auto* refusal = std::get_if<Response>(&piece)) {
                    body_error = std::move(*refusal);
                    break;
                }
                const size_t got = std::get<size_t>(piece);
                bool taken = true;
                if (got > 0) {
                    taken = co_await transfer->send({buf.data(), got});
                    bytes_in += got;
                }
                if (!taken) {
                    body_complete = false;  // the upstream answered without reading it all
                    break;
                }
            }
        }
        if (body_error) {
            transfer.reset();
            co_return co_await answer(*body_error, false, bytes_in);
        }
        transfer->finish_body();
        const bool keep_alive = client_keep_alive && body_complete;

        for (;;) {
            std::optional<upstream::Failure> failure;
            bool agent_left = false;
            {
                // A request the agent sent ahead, read already, says it is still there (even
                // if it has shut down its sending side since): it is not watched.
                std::optional<AgentWatch> watch;
                if (ex_.buffer.size() == 0) {
                    watch.emplace(ex_.stream.socket(), *transfer);
                }
                failure = co_await transfer->wait_head();
                agent_left = watch && watch->agent_left();
            }
            if (agent_left) {
                // Nobody to answer: 499, as nginx logs a request its client closed.
                latency_ms_ = elapsed_ms();
                transfer.reset();
                audit(499, "client_gone", bytes_in, 0);
                co_return false;
            }
            if (failure) {
                latency_ms_ = elapsed_ms();
                const bool timed_out = failure->kind == upstream::Failure::Kind::timeout;
                ctx_.metrics.count_upstream_error(
                    service.id, timed_out                                           ? "timeout"
                                : failure->kind == upstream::Failure::Kind::connect ? "connect"
                                                                                    : "broken");
                Response res = http::error_response(
                    timed_out ? HttpStatus::gateway_timeout : HttpStatus::bad_gateway,
                    timed_out ? "upstream_timeout" : "upstream_error",
                    fmt::format("service {}: {}", service.id, failure->message));
                transfer.reset();
                co_return co_await answer(res, keep_alive, bytes_in);
            }
            const bool replayable = !up.has_body || replay_;
            if (!may_retry || transfer->head().status != 401 || !replayable || retried_) {
                break;
            }
            // The body has been read (it is the copy) or there was none: the parser, which the
            // body parser may have taken over, is not asked again.
            retried_ = true;
            transfer.reset();
            const Status refreshed =
                co_await ctx_.refresher.refresh(service, credential_key, credential_generation);
            std::optional<Response> refusal;
            if (!refreshed) {
                refusal = http::error_response(refreshed.error());
            } else {
                refusal = find_credential(ctx_, call_);
            }
            if (!refusal && call_.credential->reauth_required) {
                // Another request's refresh was refused meanwhile: the token at hand is the one
                // the upstream has just refused.
                refusal = reauth_answer(*call_.credential);
            }
            if (!refusal) {
                refusal = address(up, injected_at);
            }
            if (refusal) {
                co_return co_await answer(*refusal, keep_alive, bytes_in);
            }
            transfer = replay_ ? ctx_.upstream.start(up, std::exchange(replay_, {}).value())
                               : ctx_.upstream.start(up);
            transfer->finish_body();
        }
        if (replay_) {
            wipe(*replay_);  // no retry: the copy is not needed while the answer streams
            replay_.reset();
        }
        latency_ms_ = elapsed_ms();
        co_return co_await relay(*transfer, keep_alive, bytes_in);
    }

    // An upstream may write its URL back into a header field (Location, Content-Location,
    // Link), and with it a secret injected into the query, which the agent must not see:
    // every such value is redacted, the fields keeping their order.
    void redact_echoed(beast_http::fields& fields) const {
        if (!echoed_ || std::none_of(fields.begin(), fields.end(),
                                     [&](const auto& f) { return echoed_->found_in(f.value()); })) {
            return;
        }
        std::vector<std::pair<std::string, std::string>> all;
        for (const auto& f : fields) {
            all.emplace_back(f.name_string(), echoed_->apply(f.value()));
        }
        fields.clear();
        for (const auto& [name, value] : all) {
            fields.insert(name, value);
        }
    }

    // The upstream's answer, streamed to the agent as it arrives.
    asio::awaitable<bool> relay(upstream::Transfer& transfer, bool keep_alive, uint64_t bytes_in) {
        upstream::ResponseHead& head = transfer.head();
        const unsigned status = head.status;
        // The upstream's fields become the answer's, minus those that are not passed on.
        beast_http::response<beast_http::empty_body> res{
            beast_http::response_header<>(std::move(head.headers))};
        res.version(11);
        res.result(status);
        redact_echoed(res);
        std::string connection;
        for (auto [it, end] = res.equal_range(beast_http::field::connection); it != end; ++it) {
            connection.append(it->value()).append(",");
        }
        const HopByHop hop(connection);
        std::optional<uint64_t> length;
        bool unsure_length = false;  // Transfer-Encoding, or Content-Lengths that disagree
        for (auto it = res.begin(); it != res.end();) {
            const std::string_view name = it->name_string();
            const std::string_view value = it->value();
            if (beast::iequals(name, "content-length")) {
                uint64_t n = 0;
                const auto [end, ec] =
                    std::from_chars(value.data(), value.data() + value.size(), n);
                const bool valid = ec == std::errc() && end == value.data() + value.size();
                unsure_length = unsure_length || !valid || (length && *length != n);
                length = n;
            } else if (beast::iequals(name, "transfer-encoding")) {
                unsure_length = true;  // curl decoded the body and ignored any Content-Length
            } else if (!hop.contains(name) && !beast::iequals(name, "agentgw-error")) {
                // Passed on. (Agentgw-Error marks the gateway's own answers: an upstream may not
                // forge one.)
                ++it;
                continue;
            }
            it = res.erase(it);
        }
        if (unsure_length) {
            length.reset();  // the agent gets the body chunked, framed by what arrives
        }
        const bool bodiless = head_request_ || status == 204 || status == 304 || status < 200;
        const bool chunked = !bodiless && !length && !client_http10_;
        if (!bodiless && !length && client_http10_) {
            keep_alive = false;  // an HTTP/1.0 client reads the body until the close
        }
        if (length && status != 204) {
            res.content_length(*length);
        }
        if (chunked) {
            res.chunked(true);
        }
        if (call_.limit) {
            set_rate_limit_headers(res, *call_.limit);
        }
        res.keep_alive(keep_alive);

        // The head goes out with the first piece of the body when that has already arrived, and
        // a body that is complete by then with its end too: a small answer is one write to the
        // client. A head whose body is not here yet goes alone, so a stream's head is not held
        // back until its first event.
        beast_http::response_serializer<beast_http::empty_body> sr{res};
        sr.split(true);
        std::vector<asio::const_buffer> head_buffers;
        head_buffers.reserve(64);  // a few per field
        boost::system::error_code hec;
        sr.next(hec, [&](boost::system::error_code&, const auto& buffers) {
            for (const asio::const_buffer b : beast::buffers_range_ref(buffers)) {
                head_buffers.push_back(b);
            }
        });
        bool client_ok = !hec;
        bool head_sent = false;

        uint64_t sent = 0;
        std::string piece;
        std::optional<upstream::Failure> broken;
        std::vector<asio::const_buffer> out;
        out.reserve(head_buffers.size() + 8);
        while (client_ok) {
            out.clear();
            if (!head_sent) {
                out = head_buffers;
                head_sent = true;
            }
            bool last = false;
            if (!transfer.ready() && !out.empty()) {
                piece.clear();  // the head alone; the body follows as it arrives
            } else {
                // A stream may fall silent for as long as its timeout allows between pieces:
                // while it does, the agent is watched as it is before the head, so that one
                // who left does not hold the upstream until the next piece. (An answer of known
                // length is bounded by its timeout, and one who left is noticed at the next
                // write.)
                std::optional<AgentWatch> watch;
                if (transfer.open_ended() && !transfer.ready() && ex_.buffer.size() == 0) {
                    watch.emplace(ex_.stream.socket(), transfer);
                }
                broken = co_await transfer.read(piece);
                if (watch && watch->agent_left()) {
                    client_ok = false;
                    broken.reset();
                    break;
                }
                last = broken || piece.empty() || transfer.complete();
            }
            if (length && !bodiless && piece.size() > *length - sent) {
                // Never more than the head announced: the rest would be read by the agent as
                // the start of the next response on this connection.
                piece.resize(*length - sent);
                broken = upstream::Failure{upstream::Failure::Kind::broken,
                                           "the upstream sent more than it announced"};
                last = true;
            }
            std::optional<beast_http::chunk_body<asio::const_buffer>> chunk;
            if (!piece.empty() && !bodiless) {
                if (chunked) {
                    chunk.emplace(asio::buffer(piece));
                    for (const asio::const_buffer b : beast::buffers_range_ref(*chunk)) {
                        out.push_back(b);
                    }
                } else {
                    out.push_back(asio::buffer(piece));
                }
                sent += piece.size();
            }
            const auto end = beast_http::make_chunk_last();
            if (last && !broken && chunked) {
                for (const asio::const_buffer b : beast::buffers_range_ref(end)) {
                    out.push_back(b);
                }
            }
            if (!out.empty()) {
                ex_.stream.expires_after(ex_.limits.read_timeout);
                auto [ec, n] = co_await asio::async_write(ex_.stream, out, k_tuple);
                client_ok = !ec;
            }
            if (last) {
                break;
            }
        }
        if (client_ok && !broken && length && !bodiless && sent != *length) {
            broken = upstream::Failure{upstream::Failure::Kind::broken,
                                       "the upstream sent less than it announced"};
        }
        std::string outcome;
        if (broken) {
            // The agent sees a truncated response (the connection closes below), not a hang.
            const bool idle = broken->kind == upstream::Failure::Kind::timeout;
            ctx_.metrics.count_upstream_error(call_.service->id, idle ? "timeout" : "broken");
            outcome = idle ? "upstream_timeout" : "upstream_error";
        } else if (!client_ok) {
            outcome = "client_gone";
        }
        audit(status, outcome, bytes_in, sent);
        co_return client_ok && !broken && keep_alive;
    }

    double elapsed_ms() const {
        return std::chrono::duration<double, std::milli>(SteadyClock::now() - started_).count();
    }

    AgentApiContext& ctx_;
    http::Exchange& ex_;
    Call call_;
    const bool head_request_;   // answers carry no content (RFC 9110 §9.3.2)
    const bool client_http10_;  // no chunked answers (RFC 9112 §6.1): a body of unknown
                                // length ends when the connection closes instead
    SteadyClock::time_point started_;
    double latency_ms_ = 0;
    bool retried_ = false;               // the one retry after an upstream 401 has been made
    std::optional<std::string> replay_;  // the request body again, for that retry
    // A query-injected secret, to keep out of the answer's header fields; only for a query
    // service, since the Redactor allocates.
    std::optional<Redactor> echoed_;
};

}  // namespace

http::Takeover proxy_takeover(AgentApiContext& ctx) {
    http::ExchangeHandler handler = [&ctx](http::Exchange& ex) -> asio::awaitable<bool> {
        ProxyExchange exchange(ctx, ex);
        co_return co_await exchange.run();
    };
    return http::Takeover{"/api/", std::move(handler)};
}

}  // namespace agentgw
