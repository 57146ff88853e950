#include "daemon/oauth/device_flow.hpp"

#include <algorithm>
#include <chrono>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <sodium.h>
#include <spdlog/spdlog.h>

#include "daemon/crypto/secure_buffer.hpp"
#include "daemon/oauth/token_endpoint.hpp"
#include "daemon/vault/async_write.hpp"

namespace agentgw::oauth {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr std::string_view k_device_grant = "urn:ietf:params:oauth:grant-type:device_code";
constexpr int64_t k_default_interval = 5;         // RFC 8628 §3.2
constexpr int64_t k_default_expires_in = 900;     // when the server names none
constexpr int64_t k_keep_finished_ms = 3600'000;  // finished flows stay visible this long

std::string string_of(const json& body, const char* name) {
    const auto it = body.find(name);
    return it != body.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Whether `name` is a non-empty string, without copying it (it may be a secret).
bool has_text(const json& body, const char* name) {
    const auto it = body.find(name);
    return it != body.end() && it->is_string() && !it->get_ref<const std::string&>().empty();
}

json flow_json(const json& r) {
    return {{"flow_id", r.value("id", "")},
            {"service", r.value("service", "")},
            {"scope", r.value("scope", "")},
            {"owner_id", r.value("owner_id", "")},
            {"status", r.value("status", "")},
            {"message", r.value("message", "")},
            {"verification_uri", r.value("verification_uri", "")},
            {"verification_uri_complete", r.value("verification_uri_complete", "")},
            {"user_code", r.value("user_code", "")},
            {"expires_at", rfc3339(r.value("expires_ms", int64_t{0}) / 1000)},
            {"interval", r.value("interval", k_default_interval)}};
}

Result<json> read_flow(const ReadTxn& txn, std::string_view id) {
    TRY_ASSIGN(auto bytes, txn.get(Table::device_flows, id));
    if (!bytes) {
        return make_error(Code::not_found, fmt::format("no device flow {}", id));
    }
    json r = json::parse(as_view(*bytes), nullptr, false);
    if (!r.is_object()) {
        return make_error(Code::corrupt, "a stored device flow is malformed");
    }
    return r;
}

Status put_flow(WriteTxn& txn, const std::string& id, json& r) {
    std::string text = r.dump();
    const Status s = txn.put(Table::device_flows, id, text);
    wipe(text);
    return s;
}

}  // namespace

struct DeviceFlows::Poller {
    Poller(std::string id, asio::io_context& ioc) : id(std::move(id)), timer(ioc) {}
    std::string id;
    asio::steady_timer timer;
    bool stopped = false;
};

DeviceFlows::DeviceFlows(asio::io_context& ioc, upstream::UpstreamClient& client, Vault& vault,
                         CredentialStore& credentials, AuditLog& audit, ServiceDirectory& services,
                         const Clock& clock)
    : ioc_(ioc),
      client_(client),
      vault_(vault),
      credentials_(credentials),
      audit_(audit),
      services_(services),
      clock_(clock) {}

asio::awaitable<Result<json>> DeviceFlows::start(const Service& service_ref, CredentialScope scope,
                                                 const std::string& owner_ref) {
    const Service service = service_ref;
    const std::string owner_id = owner_ref;
    if (service.auth.type != AuthSpec::Type::oauth2 ||
        service.auth.grant != AuthSpec::Grant::refresh_token ||
        service.auth.device_authorization_url.empty()) {
        co_return make_error(Code::invalid_argument,
                             fmt::format("service {} has no device flow (it needs oauth2 with "
                                         "grant refresh_token and a device_authorization_url)",
                                         service.id));
    }
    Form form;
    form.add("client_id", service.auth.client_id);
    std::string scopes;
    for (const auto& s : service.auth.scopes) {
        scopes += (scopes.empty() ? "" : " ") + s;
    }
    if (!scopes.empty()) {
        form.add("scope", scopes);
    }
    bool retryable = false;
    auto reply = co_await post_form(client_, service, service.auth.device_authorization_url, form,
                                    &retryable);
    if (!reply) {
        co_return make_error(Code::upstream,
                             fmt::format("device authorization failed: {}", reply.error().message));
    }
    if (!error_code(*reply).empty() || reply->status / 100 != 2) {
        co_return make_error(Code::upstream, fmt::format("device authorization failed: {}",
                                                         error_code(*reply).empty()
                                                             ? fmt::format("HTTP {}", reply->status)
                                                             : error_text(*reply, form)));
    }
    const json& b = reply->body;
    std::string uri = string_of(b, "verification_uri");
    if (uri.empty()) {
        uri = string_of(b, "verification_url");  // an older spelling some servers still use
    }
    if (!has_text(b, "device_code") || !has_text(b, "user_code") || uri.empty()) {
        co_return make_error(Code::upstream,
                             "device authorization failed: the answer lacks device_code, "
                             "user_code or verification_uri");
    }
    unsigned char raw[16];
    randombytes_buf(raw, sizeof raw);
    std::string id(2 * sizeof raw + 1, '\0');
    sodium_bin2hex(id.data(), id.size(), raw, sizeof raw);
    id.pop_back();
    const int64_t now = clock_.now_ms();
    auto record = std::make_shared<json>(
        json{{"id", id},
             {"service", service.id},
             {"scope", scope_name(scope)},
             {"owner_id", owner_id},
             {"device_code", string_of(b, "device_code")},
             {"user_code", string_of(b, "user_code")},
             {"verification_uri", uri},
             {"verification_uri_complete", string_of(b, "verification_uri_complete")},
             {"expires_ms", now + 1000 * seconds_of(b, "expires_in", k_default_expires_in,
                                                    k_max_credential_lifetime_secs)},
             {"interval", seconds_of(b, "interval", k_default_interval, k_max_interval_secs)},
             {"status", "pending"},
             {"message", "waiting for the user to approve"},
             {"created_ms", now}});
    const Vault::WriteFn write = [record, id](WriteTxn& txn) -> Status {
        return put_flow(txn, id, *record);
    };
    const Status stored = co_await async_write(vault_, write);
    json shown = flow_json(*record);
    wipe_json(*record);
    if (!stored) {
        co_return stored.error();
    }
    spawn(id);
    co_return shown;
}

Result<json> DeviceFlows::get(const std::string& id) const {
    json out;
    TRY(vault_.read([&](const ReadTxn& txn) -> Status {
        TRY_ASSIGN(json r, read_flow(txn, id));
        out = flow_json(r);
        wipe_json(r);
        return {};
    }));
    return out;
}

void DeviceFlows::resume() {
    std::vector<std::string> pending;
    std::vector<std::string> old;
    const int64_t now = clock_.now_ms();
    const Status read = vault_.read([&](const ReadTxn& txn) {
        return txn.scan(Table::device_flows, "", [&](std::string_view key, SecretBytes value) {
            json r = json::parse(as_view(value), nullptr, false);
            if (r.is_object() && r.value("status", "") == "pending") {
                pending.emplace_back(key);
            } else if (!r.is_object() ||
                       r.value("created_ms", int64_t{0}) + k_keep_finished_ms < now) {
                old.emplace_back(key);
            }
            if (r.is_object()) {
                wipe_json(r);
            }
            return true;
        });
    });
    if (!read) {
        spdlog::error("device flows: {}", read.error().message);
        return;
    }
    if (!old.empty()) {
        vault_.submit(
            [old](WriteTxn& txn) -> Status {
                for (const auto& id : old) {
                    TRY(txn.erase(Table::device_flows, id));
                }
                return {};
            },
            [](const Status&) {});
    }
    for (const auto& id : pending) {
        spawn(id);
    }
}

void DeviceFlows::stop() {
    stopped_ = true;
    for (auto& [id, poller] : pollers_) {
        poller->stopped = true;
        poller->timer.cancel();
    }
}

void DeviceFlows::spawn(const std::string& id) {
    if (stopped_ || pollers_.contains(id)) {
        return;
    }
    auto poller = std::make_shared<Poller>(id, ioc_);
    pollers_.emplace(id, poller);
    asio::co_spawn(
        ioc_,
        [this, poller]() -> asio::awaitable<void> {
            co_await poll(poller);
            pollers_.erase(poller->id);
        },
        asio::detached);
}

asio::awaitable<void> DeviceFlows::poll(const std::shared_ptr<Poller>& poller_ref) {
    const std::shared_ptr<Poller> poller = poller_ref;
    const std::string id = poller->id;
    // The write that changes the flow's record; `update` makes it, `finish` ends the flow with a
    // status and a message.
    const auto updating = [id](std::function<void(json&)> change) -> Vault::WriteFn {
        return [id, change = std::move(change)](WriteTxn& txn) -> Status {
            TRY_ASSIGN(json r, read_flow(txn, id));
            change(r);
            const Status s = put_flow(txn, id, r);
            wipe_json(r);
            return s;
        };
    };
    auto update = [this, &updating](std::function<void(json&)> change) -> asio::awaitable<Status> {
        const Vault::WriteFn write = updating(std::move(change));
        co_return co_await async_write(vault_, write);
    };
    // The write that ends the flow: its status, and the device code gone.
    const auto ending = [&updating](const std::string& status, const std::string& message) {
        return updating([status, message](json& r) {
            r["status"] = status;
            r["message"] = message;
            if (r.contains("device_code")) {
                wipe(r["device_code"].get_ref<std::string&>());
                r.erase("device_code");
            }
        });
    };
    auto finish = [&](const std::string& status,
                      const std::string& message) -> asio::awaitable<void> {
        const Vault::WriteFn write = ending(status, message);
        const Status s = co_await async_write(vault_, write);
        if (!s) {
            spdlog::error("device flow {}: {}", id, s.error().message);
        }
    };

    for (;;) {
        // stop() cancels a wait under way; a poll that was in flight when it came ends here,
        // before another wait of up to an hour begins.
        if (poller->stopped) {
            co_return;
        }
        // A flow no longer pending (or gone) is not polled. No wait goes past the code's
        // expiry: a flow whose code runs out ends then, even when its interval (grown by
        // failed polls, up to an hour) is longer.
        bool pending = false;
        int64_t wait_ms = 0;
        const Status looked = vault_.read([&](const ReadTxn& txn) -> Status {
            TRY_ASSIGN(json r, read_flow(txn, id));
            pending = r.value("status", "") == "pending";
            const int64_t interval_ms = r.value("interval", k_default_interval) * 1000;
            wait_ms = std::clamp<int64_t>(r.value("expires_ms", int64_t{0}) - clock_.now_ms(), 0,
                                          interval_ms);
            wipe_json(r);
            return {};
        });
        if (!looked || !pending) {
            co_return;
        }
        poller->timer.expires_after(std::chrono::milliseconds(wait_ms));
        co_await poller->timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (poller->stopped) {
            co_return;
        }

        std::string service_id;
        std::string scope;
        std::string owner_id;
        Form form;
        int64_t expires_ms = 0;
        int64_t interval = k_default_interval;
        const Status read = vault_.read([&](const ReadTxn& txn) -> Status {
            TRY_ASSIGN(json r, read_flow(txn, id));
            service_id = r.value("service", "");
            scope = r.value("scope", "");
            owner_id = r.value("owner_id", "");
            expires_ms = r.value("expires_ms", int64_t{0});
            interval = r.value("interval", k_default_interval);
            form.add("grant_type", std::string(k_device_grant));
            form.add("device_code", r.value("device_code", ""));
            wipe_json(r);
            return {};
        });
        if (!read) {
            spdlog::error("device flow {}: {}", id, read.error().message);
            co_return;
        }
        const std::string target = "service:" + service_id;
        if (clock_.now_ms() >= expires_ms) {
            audit_.record({"system", "oauth.connect", target, "expired", {{"flow_id", id}}});
            co_await finish("expired", "the code expired before it was approved");
            co_return;
        }
        const auto catalog = services_.current();
        const Service* found = catalog->find(service_id);
        if (found == nullptr || found->auth.type != AuthSpec::Type::oauth2) {
            const std::string why =
                fmt::format("service {} is no longer an oauth2 service", service_id);
            audit_.record({"system",
                           "oauth.connect",
                           target,
                           "not_found",
                           {{"flow_id", id}, {"message", why}}});
            co_await finish("failed", why);
            co_return;
        }
        const Service service = *found;
        form.add("client_id", service.auth.client_id);

        bool retryable = false;
        auto reply = co_await post_form(client_, service, service.auth.token_url, form, &retryable);
        const std::string code = reply ? error_code(*reply) : std::string();
        // A server in trouble says nothing about the code: an answer that never came or is no
        // OAuth answer, a 5xx or 429 whatever error it names, and the errors that name a
        // passing state (RFC 6749 §4.1.2.1, which servers send from the token endpoint too).
        const bool in_trouble = !reply || reply->status >= 500 || reply->status == 429 ||
                                code == "server_error" || code == "temporarily_unavailable";
        const bool definite = code == "authorization_pending" || code == "slow_down" ||
                              code == "access_denied" || code == "expired_token";
        if (in_trouble && !definite) {
            // The code stays valid: a failed poll is tried again, at twice the interval for
            // good (RFC 8628 §3.5: a client that times out must poll less often), so that a
            // struggling server is not kept busy.
            spdlog::warn("device flow {}: {}", id,
                         reply ? fmt::format("the token endpoint answered HTTP {}: {}",
                                             reply->status, error_text(*reply, form))
                               : reply.error().message);
            const int64_t next = std::min(interval * 2, k_max_interval_secs);
            const std::function<void(json&)> change = [next](json& r) { r["interval"] = next; };
            (void)co_await update(change);
            continue;
        }
        if (code == "authorization_pending") {
            continue;
        }
        if (code == "slow_down") {
            // Permanently 5 s slower (RFC 8628 §3.5); a server naming a longer interval wins.
            const int64_t next = std::min(
                std::max(interval + 5, seconds_of(reply->body, "interval", 0, k_max_interval_secs)),
                k_max_interval_secs);
            const std::function<void(json&)> change = [next](json& r) { r["interval"] = next; };
            (void)co_await update(change);
            continue;
        }
        if (code == "access_denied") {
            audit_.record({"system", "oauth.connect", target, "denied", {{"flow_id", id}}});
            co_await finish("denied", "the user denied the authorization");
            co_return;
        }
        if (code == "expired_token") {
            audit_.record({"system", "oauth.connect", target, "expired", {{"flow_id", id}}});
            co_await finish("expired", "the code expired before it was approved");
            co_return;
        }
        std::string access = string_of(reply->body, "access_token");
        if (!code.empty() || reply->status / 100 != 2 || access.empty()) {
            wipe(access);
            const std::string why = !code.empty()    ? error_text(*reply, form)
                                    : access.empty() ? "the answer has no access_token"
                                                     : fmt::format("HTTP {}", reply->status);
            audit_.record({"system", "oauth.connect", target, "upstream_error", {{"flow_id", id}}});
            co_await finish("failed", fmt::format("the token endpoint refused: {}", why));
            co_return;
        }
        CredentialInput input;
        input.service = service.id;
        input.scope = parse_scope(scope).value_or(CredentialScope::service);
        input.owner_id = owner_id;
        input.type = "oauth2";
        input.access_token = std::move(access);
        input.refresh_token = string_of(reply->body, "refresh_token");
        input.scopes = string_of(reply->body, "scope");
        if (input.scopes.empty()) {  // RFC 6749 §5.1: absent means as requested
            for (const auto& s : service.auth.scopes) {
                input.scopes += (input.scopes.empty() ? "" : " ") + s;
            }
        }
        if (const int64_t in =
                seconds_of(reply->body, "expires_in", 0, k_max_credential_lifetime_secs);
            in > 0) {
            input.expires_in = in;
        }
        // The tokens and the flow's end in one write: a daemon stopped between two would poll
        // again on restart with a code already used, and mark the flow failed.
        const Vault::WriteFn completed = ending("complete", "the tokens are stored");
        const auto stored = co_await credentials_.set(input, completed);
        if (!stored) {
            audit_.record({"system",
                           "oauth.connect",
                           target,
                           "internal_error",
                           {{"flow_id", id}, {"message", stored.error().message}}});
            co_await finish("failed", fmt::format("the tokens could not be stored: {}",
                                                  stored.error().message));
            co_return;
        }
        audit_.record({"system",
                       "oauth.connect",
                       target,
                       "ok",
                       {{"flow_id", id}, {"scope", scope}, {"owner_id", owner_id}}});
        co_return;
    }
}

}  // namespace agentgw::oauth
