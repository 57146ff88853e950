#include "daemon/credentials/credential_store.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include "daemon/crypto/secure_buffer.hpp"
#include "daemon/vault/async_write.hpp"

namespace agentgw {

using nlohmann::json;

namespace {

// service \0 scope \0 owner: all of one service's credentials sort together.
std::string record_key(std::string_view service, CredentialScope scope, std::string_view owner_id) {
    std::string key(service);
    key.push_back('\0');
    key.append(scope_name(scope));
    key.push_back('\0');
    key.append(owner_id);
    return key;
}

std::optional<CredentialScope> parse_scope(std::string_view name) {
    if (name == "service") {
        return CredentialScope::service;
    }
    if (name == "user") {
        return CredentialScope::user;
    }
    if (name == "agent") {
        return CredentialScope::agent;
    }
    return std::nullopt;
}

Result<CredentialInfo> info_from(const SecretBytes& bytes) {
    const json j = json::parse(as_view(bytes), nullptr, false);
    const auto scope = j.is_object() ? parse_scope(j.value("scope", "")) : std::nullopt;
    if (!scope) {
        return make_error(Code::corrupt, "a stored credential is malformed");
    }
    return CredentialInfo{j.value("service", ""),
                          *scope,
                          j.value("owner_id", ""),
                          j.value("type", ""),
                          j.value("expires_at", int64_t{0}),
                          j.value("updated_at", int64_t{0})};
}

}  // namespace

std::string_view scope_name(CredentialScope scope) noexcept {
    switch (scope) {
        case CredentialScope::service:
            return "service";
        case CredentialScope::user:
            return "user";
        case CredentialScope::agent:
            return "agent";
    }
    return "service";
}

CredentialInput::~CredentialInput() {
    wipe(secret);
    wipe(username);
    wipe(password);
    wipe(access_token);
    wipe(refresh_token);
}

boost::asio::awaitable<Result<CredentialInfo>> CredentialStore::set(const CredentialInput& in) {
    const int64_t now = clock_.now_secs();
    CredentialInfo info{
        in.service, in.scope, in.owner_id, in.type, in.expires_in ? now + *in.expires_in : 0, now};
    json record = {{"service", in.service},         {"scope", scope_name(in.scope)},
                   {"owner_id", in.owner_id},       {"type", in.type},
                   {"expires_at", info.expires_at}, {"updated_at", now}};
    for (const auto& [name, value] :
         {std::pair<const char*, const std::string*>{"secret", &in.secret},
          {"username", &in.username},
          {"password", &in.password},
          {"access_token", &in.access_token},
          {"refresh_token", &in.refresh_token}}) {
        if (!value->empty()) {
            record[name] = *value;
        }
    }
    std::string sealed_input = record.dump();
    // The JSON tree held copies of the secrets; clear them before it is freed.
    for (auto& [name, value] : record.items()) {
        if (value.is_string()) {
            wipe(value.get_ref<std::string&>());
        }
    }
    const std::string key = record_key(in.service, in.scope, in.owner_id);
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        // The owner is checked again here, in the same transaction as the write: a user or
        // agent deleted meanwhile must not be left holding a secret nothing will remove.
        if (in.scope != CredentialScope::service) {
            const Table owners = in.scope == CredentialScope::user ? Table::users : Table::agents;
            TRY_ASSIGN(auto owner, txn.get(owners, in.owner_id));
            if (!owner) {
                return make_error(Code::not_found, fmt::format("the {} of this credential no "
                                                               "longer exists",
                                                               scope_name(in.scope)));
            }
        }
        return txn.put(Table::credentials, key, sealed_input);
    };
    const Status s = co_await async_write(vault_, write);
    wipe(sealed_input);
    if (!s) {
        co_return s.error();
    }
    co_return info;
}

Result<std::vector<CredentialInfo>> CredentialStore::list() const {
    std::vector<CredentialInfo> out;
    Status inner;
    TRY(vault_.read([&](const ReadTxn& txn) {
        return txn.scan(Table::credentials, "", [&](std::string_view, SecretBytes value) {
            auto info = info_from(value);
            if (!info) {
                inner = std::move(info).error();
                return false;
            }
            out.push_back(std::move(*info));
            return true;
        });
    }));
    TRY(std::move(inner));
    return out;
}

ResolvedCredential::~ResolvedCredential() {
    wipe(secret);
    wipe(username);
    wipe(password);
    wipe(access_token);
}

Result<std::unique_ptr<ResolvedCredential>> CredentialStore::resolve(
    std::string_view service, std::string_view user_id, std::string_view agent_id) const {
    std::unique_ptr<ResolvedCredential> out;
    TRY(vault_.read([&](const ReadTxn& txn) -> Status {
        const std::pair<CredentialScope, std::string_view> order[] = {
            {CredentialScope::agent, agent_id},
            {CredentialScope::user, user_id},
            {CredentialScope::service, {}},
        };
        for (const auto& [scope, owner] : order) {
            TRY_ASSIGN(auto bytes, txn.get(Table::credentials, record_key(service, scope, owner)));
            if (!bytes) {
                continue;
            }
            json j = json::parse(as_view(*bytes), nullptr, false);
            if (!j.is_object()) {
                return make_error(Code::corrupt, "a stored credential is malformed");
            }
            out = std::make_unique<ResolvedCredential>();
            out->scope = scope;
            out->type = j.value("type", "");
            out->expires_at = j.value("expires_at", int64_t{0});
            for (auto& [name, field] :
                 {std::pair<const char*, std::string*>{"secret", &out->secret},
                  {"username", &out->username},
                  {"password", &out->password},
                  {"access_token", &out->access_token}}) {
                if (auto it = j.find(name); it != j.end() && it->is_string()) {
                    *field = it->get<std::string>();
                }
            }
            // The parsed tree held copies of the secrets too.
            for (auto& [name, value] : j.items()) {
                if (value.is_string()) {
                    wipe(value.get_ref<std::string&>());
                }
            }
            return {};
        }
        return {};
    }));
    return out;
}

boost::asio::awaitable<Status> CredentialStore::remove(const std::string& service,
                                                       CredentialScope scope,
                                                       const std::string& owner_id) {
    const std::string key = record_key(service, scope, owner_id);
    const Vault::WriteFn write = [&](WriteTxn& txn) -> Status {
        TRY_ASSIGN(bool existed, txn.erase(Table::credentials, key));
        if (!existed) {
            return make_error(Code::not_found, fmt::format("no {}-scoped credential for service {}",
                                                           scope_name(scope), service));
        }
        return {};
    };
    co_return co_await async_write(vault_, write);
}

Status CredentialStore::remove_owned(WriteTxn& txn, const std::string& owner_id) {
    std::vector<std::string> doomed;
    TRY(txn.scan(Table::credentials, "", [&](std::string_view key, SecretBytes value) {
        auto info = info_from(value);
        if (info && info->scope != CredentialScope::service && info->owner_id == owner_id) {
            doomed.emplace_back(key);
        }
        return true;
    }));
    for (const auto& key : doomed) {
        TRY(txn.erase(Table::credentials, key));
    }
    return {};
}

}  // namespace agentgw
