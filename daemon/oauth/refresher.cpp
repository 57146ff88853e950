#include "daemon/oauth/refresher.hpp"

#include <algorithm>
#include <chrono>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <sodium.h>

#include "daemon/oauth/token_endpoint.hpp"

namespace agentgw::oauth {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr int k_attempts = 3;  // for failures that are safe to repeat (see post_form)

Error refresh_failed(std::string_view why) {
    return make_error(Code::upstream, fmt::format("credential refresh failed: {}", why));
}

// "service/user/<id>" from the record key "service\0user\0<id>", for audit entries.
std::string printable_key(std::string_view key) {
    std::string out(key);
    for (char& c : out) {
        if (c == '\0') {
            c = '/';
        }
    }
    if (!out.empty() && out.back() == '/') {
        out.pop_back();  // service scope has no owner
    }
    return out;
}

std::string scopes_of(const Service& service) {
    std::string out;
    for (const auto& s : service.auth.scopes) {
        out += (out.empty() ? "" : " ") + s;
    }
    return out;
}

}  // namespace

struct TokenRefresher::Flight {
    // The expiry is set once, here: setting it again would cancel the waits already parked.
    Flight(const asio::any_io_executor& ex, uint64_t from)
        : signal(ex, std::chrono::steady_clock::time_point::max()), generation(from) {}
    asio::steady_timer signal;  // waiters park on it; the leader cancels it when done
    uint64_t generation;        // the credential's generation the refresh started from
    bool done = false;
    Status result;
};

TokenRefresher::TokenRefresher(upstream::UpstreamClient& client, CredentialStore& credentials,
                               AuditLog& audit, Metrics& metrics, const Clock& clock)
    : client_(client), credentials_(credentials), audit_(audit), metrics_(metrics), clock_(clock) {}

asio::awaitable<Status> TokenRefresher::refresh(const Service& service_ref,
                                                const std::string& key_ref, uint64_t seen) {
    const Service service = service_ref;  // the caller's catalog may be replaced meanwhile
    const std::string key = key_ref;
    // Join a refresh of the same credential under way; one that started from another
    // generation (the credential was replaced since) says nothing about this one's: wait for
    // it to end, then look again.
    for (auto it = flights_.find(key); it != flights_.end(); it = flights_.find(key)) {
        const std::shared_ptr<Flight> flight = it->second;
        while (!flight->done) {
            co_await flight->signal.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        if (flight->generation == seen) {
            co_return flight->result;
        }
    }
    auto flight = std::make_shared<Flight>(co_await asio::this_coro::executor, seen);
    flights_.emplace(key, flight);
    Status result = co_await run(service, key, seen);
    flight->result = result;
    flight->done = true;
    flights_.erase(key);
    flight->signal.cancel();
    co_return result;
}

asio::awaitable<void> TokenRefresher::refresh_if_due(const Service& service_ref,
                                                     const std::string& key_ref) {
    const Service service = service_ref;
    const std::string key = key_ref;
    auto loaded = credentials_.load_tokens(key);
    if (!loaded) {
        co_return;
    }
    if (!*loaded) {
        backoff_.erase(key);  // the credential is gone
        co_return;
    }
    if (flights_.contains(key)) {
        co_return;  // a refresh is under way (one of the requests', or an earlier look's)
    }
    const OAuthTokens& t = ***loaded;
    // A wait after failures holds for the generation that failed: a credential refreshed on
    // demand since, or replaced, is looked at afresh. More of the wait left than the wait
    // itself means the clock was set back: it is over.
    if (const auto b = backoff_.find(key); b != backoff_.end()) {
        const int64_t left = b->second.next_at - clock_.now_secs();
        if (b->second.generation != t.generation) {
            backoff_.erase(b);
        } else if (left > 0 && left <= b->second.wait_secs) {
            co_return;
        }
    }
    const bool can = t.type == "client_secret" || !t.refresh_token.empty();
    if (!can || t.reauth_required || t.expires_at == 0) {
        co_return;
    }
    // Never more than half the token's lifetime ahead: a refresh_before_secs at least as long
    // as the lifetime would otherwise refresh at every look.
    const int64_t ahead = t.lifetime > 0
                              ? std::min(service.auth.refresh_before_secs, t.lifetime / 2)
                              : service.auth.refresh_before_secs;
    const int64_t jitter =
        ahead >= 10 ? static_cast<int64_t>(randombytes_uniform(static_cast<uint32_t>(ahead / 10)))
                    : 0;
    if (t.expires_at - clock_.now_secs() > ahead + jitter) {
        co_return;
    }
    const uint64_t generation = t.generation;
    loaded->reset();  // the tokens are not needed past this point
    const Status s = co_await refresh(service, key, generation);
    // Audited and counted by run(); the next request that finds the token expired tries again
    // on demand, whatever the wait here.
    if (s) {
        backoff_.erase(key);
        co_return;
    }
    Backoff& b = backoff_[key];
    if (b.generation != generation) {
        b = Backoff{.generation = generation};
    }
    ++b.failures;
    const int doublings = std::min(b.failures - 1, 10);  // 30 s << 10 is past the cap already
    b.wait_secs = std::min(k_backoff_first_secs << doublings, k_backoff_max_secs);
    b.next_at = clock_.now_secs() + b.wait_secs;
}

asio::awaitable<Status> TokenRefresher::run(const Service& service, const std::string& key,
                                            uint64_t seen) {
    auto loaded = credentials_.load_tokens(key);
    if (!loaded) {
        co_return refresh_failed(loaded.error().message);
    }
    if (!*loaded) {
        co_return refresh_failed("the credential was removed");
    }
    const OAuthTokens& t = ***loaded;
    if (t.generation != seen) {
        co_return Status{};  // refreshed or replaced since the caller looked
    }
    if (t.reauth_required) {
        co_return refresh_failed(
            fmt::format("the authorization server refused the refresh "
                        "token; run agentgw connect {}",
                        service.id));
    }

    Form form;
    if (t.type == "client_secret") {
        form.add("grant_type", "client_credentials");
        form.add("client_id", service.auth.client_id);
        form.add("client_secret", t.client_secret);
        if (const std::string scope = scopes_of(service); !scope.empty()) {
            form.add("scope", scope);
        }
    } else if (!t.refresh_token.empty()) {
        form.add("grant_type", "refresh_token");
        form.add("refresh_token", t.refresh_token);
        form.add("client_id", service.auth.client_id);
    } else {
        co_return refresh_failed(
            fmt::format("the credential has no refresh token; run "
                        "agentgw connect {}",
                        service.id));
    }
    const uint64_t generation = t.generation;
    loaded->reset();

    const std::string target = "service:" + service.id;
    const json details = {{"credential", printable_key(key)}};
    auto fail = [&](std::string_view outcome, const Error& e) {
        metrics_.count_refresh(service.id, outcome);
        audit_.record({"system", "credential.refresh", target, "upstream_error",
                       json{{"credential", printable_key(key)}, {"message", e.message}}});
        return e;
    };

    Result<EndpointReply> reply = make_error(Code::internal, "not run");
    for (int attempt = 1; attempt <= k_attempts; ++attempt) {
        bool retryable = false;
        reply = co_await post_form(client_, service, service.auth.token_url, form, &retryable);
        if (reply || !retryable || attempt == k_attempts) {
            break;
        }
        asio::steady_timer pause(co_await asio::this_coro::executor);
        pause.expires_after(std::chrono::milliseconds(250 * attempt * attempt));
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (!reply) {
        co_return fail("failure", refresh_failed(reply.error().message));
    }
    const std::string code = error_code(*reply);
    if (code == "invalid_grant" || code == "unauthorized_client" || code == "invalid_client") {
        // The grant is gone: no retry can help until someone authorises again.
        const Status marked = co_await credentials_.mark_reauth_required(key, generation);
        (void)marked;  // a conflict means a new credential replaced this one: nothing to mark
        co_return fail("invalid_grant", refresh_failed(error_text(*reply, form)));
    }
    if (!code.empty() || reply->status / 100 != 2) {
        co_return fail("failure",
                       refresh_failed(code.empty() ? fmt::format("HTTP {}", reply->status)
                                                   : error_text(*reply, form)));
    }
    const auto access = reply->body.find("access_token");
    if (access == reply->body.end() || !access->is_string() ||
        access->get_ref<const std::string&>().empty()) {
        co_return fail("failure", refresh_failed("the answer has no access_token"));
    }
    RefreshedTokens fresh;
    fresh.access_token = access->get<std::string>();
    if (const auto rt = reply->body.find("refresh_token");
        rt != reply->body.end() && rt->is_string()) {
        fresh.refresh_token = rt->get<std::string>();
    }
    fresh.expires_in = seconds_of(reply->body, "expires_in", 0, k_max_credential_lifetime_secs);
    if (const auto scope = reply->body.find("scope");
        scope != reply->body.end() && scope->is_string()) {
        fresh.scopes = scope->get<std::string>();
    }
    const Status stored = co_await credentials_.store_tokens(key, generation, fresh);
    if (!stored && stored.error().code == Code::conflict) {
        // Replaced or removed while the token endpoint answered: these tokens are dropped,
        // and the callers read whatever is stored now.
        audit_.record({"system", "credential.refresh", target, "conflict",
                       json{{"credential", printable_key(key)},
                            {"message", "the credential was replaced or removed meanwhile"}}});
        co_return Status{};
    }
    if (!stored) {
        co_return fail("failure", refresh_failed(stored.error().message));
    }
    metrics_.count_refresh(service.id, "success");
    audit_.record({"system", "credential.refresh", target, "ok", details});
    co_return Status{};
}

}  // namespace agentgw::oauth
