#include "daemon/hub/hub.hpp"

#include <algorithm>
#include <map>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sodium.h>

#include "daemon/crypto/encoding.hpp"
#include "daemon/crypto/secure_buffer.hpp"
#include "daemon/vault/async_write.hpp"

namespace agentgw {

using nlohmann::json;

namespace {

constexpr std::string_view k_token_domain = "hub-token";
constexpr std::string_view k_fingerprint_domain = "hub-fingerprint";
constexpr size_t k_token_bytes = 32;
constexpr size_t k_token_chars = 43;       // base64url of 32 bytes, unpadded
constexpr unsigned k_base64url_dash = 62;  // the 6-bit value base64url writes as '-'
constexpr size_t k_max_name_bytes = 256;

// The expiry index key: big-endian milliseconds, so keys sort by time, then the blob key.
std::string expiry_key(int64_t expires_ms, std::string_view blob_key) {
    std::string key(8, '\0');
    auto v = static_cast<uint64_t>(expires_ms);
    for (int i = 7; i >= 0; --i) {
        key[static_cast<size_t>(i)] = static_cast<char>(v & 0xff);
        v >>= 8;
    }
    key.append(blob_key);
    return key;
}

int64_t expiry_of(std::string_view key) {
    uint64_t v = 0;
    for (size_t i = 0; i < 8 && i < key.size(); ++i) {
        v = (v << 8) | static_cast<uint8_t>(key[i]);
    }
    return static_cast<int64_t>(v);
}

// The part of a blob record that is not its data, for the index and the quotas.
struct Usage {
    uint64_t blobs = 0;
    uint64_t bytes = 0;
};

Result<Usage> read_usage(const ReadTxn& txn, const std::string& agent_id) {
    TRY_ASSIGN(auto value, txn.get(Table::blob_usage, agent_id));
    if (!value) {
        return Usage{};
    }
    const json j = json::parse(as_view(*value), nullptr, false);
    if (!j.is_object()) {
        return make_error(Code::corrupt, "a hub usage record is malformed");
    }
    return Usage{j.value("blobs", uint64_t{0}), j.value("bytes", uint64_t{0})};
}

Status write_usage(WriteTxn& txn, const std::string& agent_id, const Usage& usage) {
    if (usage.blobs == 0) {
        TRY(txn.erase(Table::blob_usage, agent_id));
        return {};
    }
    return txn.put(Table::blob_usage, agent_id,
                   json{{"blobs", usage.blobs}, {"bytes", usage.bytes}}.dump());
}

Result<Blob> parse_blob(std::string_view text) {
    json j = json::parse(text, nullptr, false);
    if (!j.is_object() || !j.contains("data") || !j["data"].is_string()) {
        return make_error(Code::corrupt, "a hub blob record is malformed");
    }
    Blob b;
    auto& data = j["data"].get_ref<std::string&>();
    b.data = data;
    wipe(data);
    b.name = j.value("name", "");
    b.publisher_id = j.value("publisher", "");
    b.publisher_name = j.value("publisher_name", "");
    b.created_ms = j.value("created_ms", int64_t{0});
    b.expires_ms = j.value("expires_ms", int64_t{0});
    b.ttl_secs = j.value("ttl", int64_t{0});
    b.once = j.value("once", false);
    b.recipient_ids = j.value("recipients", std::vector<std::string>{});
    return b;
}

std::string serialize(const Blob& b) {
    json j = {{"name", b.name},
              {"data", b.data},
              {"publisher", b.publisher_id},
              {"publisher_name", b.publisher_name},
              {"created_ms", b.created_ms},
              {"expires_ms", b.expires_ms},
              {"ttl", b.ttl_secs},
              {"once", b.once},
              {"recipients", b.recipient_ids}};
    std::string text = j.dump();
    wipe(j["data"].get_ref<std::string&>());
    return text;
}

bool may_have(const Blob& b, const std::string& who) {
    return who.empty() || who == b.publisher_id || b.recipient_ids.empty() ||
           std::find(b.recipient_ids.begin(), b.recipient_ids.end(), who) != b.recipient_ids.end();
}

Error gone() {
    return make_error(Code::not_found, "Data not found or expired");
}

// Removes a blob, its index entry and its share of the publisher's usage inside `txn`.
Status erase_blob(WriteTxn& txn, std::string_view key, const Blob& b) {
    TRY(txn.erase(Table::blobs, key));
    TRY(txn.erase(Table::blob_expiry, expiry_key(b.expires_ms, key)));
    TRY_ASSIGN(Usage usage, read_usage(txn, b.publisher_id));
    usage.blobs -= std::min<uint64_t>(usage.blobs, 1);
    usage.bytes -= std::min<uint64_t>(usage.bytes, b.data.size());
    return write_usage(txn, b.publisher_id, usage);
}

}  // namespace

BlobInput::~BlobInput() {
    wipe(data);
}

PublishedBlob::~PublishedBlob() {
    wipe(token);
}

Blob::~Blob() {
    wipe(data);
}

Hub::Hub(Vault& vault, const Clock& clock, HubLimits limits)
    : vault_(vault), clock_(clock), limits_(limits) {}

std::string Hub::blob_key(std::string_view token) const {
    const LookupHash h = vault_.cipher().lookup_hash(k_token_domain, token);
    return std::string(reinterpret_cast<const char*>(h.data()), h.size());
}

std::string Hub::fingerprint(std::string_view token) const {
    const LookupHash h = vault_.cipher().lookup_hash(k_fingerprint_domain, token);
    std::string out(17, '\0');
    sodium_bin2hex(out.data(), out.size(), h.data(), 8);
    out.pop_back();
    return out;
}

Result<uint64_t> Hub::stored() const {
    uint64_t n = 0;
    TRY(vault_.read([&](const ReadTxn& txn) -> Status {
        TRY_ASSIGN(n, txn.count(Table::blobs));
        return {};
    }));
    return n;
}

Status Hub::check(const BlobInput& in) const {
    if (in.name.empty() || in.name.size() > k_max_name_bytes) {
        return make_error(Code::invalid_argument,
                          fmt::format("field \"name\": 1 to {} bytes", k_max_name_bytes));
    }
    if (in.data.size() > limits_.max_data) {
        return make_error(Code::exhausted, fmt::format("field \"data\": {} bytes is more than "
                                                       "the {} bytes a blob may hold",
                                                       in.data.size(), limits_.max_data));
    }
    if (in.ttl_secs < 1 || in.ttl_secs > limits_.max_ttl_secs) {
        return make_error(Code::invalid_argument,
                          fmt::format("field \"ttl\": 1 to {} seconds", limits_.max_ttl_secs));
    }
    return {};
}

boost::asio::awaitable<Result<PublishedBlob>> Hub::publish(const BlobInput& in) {
    if (auto s = check(in); !s) {
        co_return s.error();
    }
    // A token that began with '-' would read as an option when given to the CLI as an
    // argument, so such draws are thrown away (one in 64; it costs under 0.03 bits).
    unsigned char raw[k_token_bytes];
    do {
        randombytes_buf(raw, sizeof raw);
    } while ((raw[0] >> 2) == k_base64url_dash);
    PublishedBlob out;
    out.token = base64url_encode({raw, sizeof raw});
    sodium_memzero(raw, sizeof raw);
    out.fingerprint = fingerprint(out.token);
    out.created_ms = clock_.now_ms();
    out.expires_ms = out.created_ms + in.ttl_secs * 1000;

    auto blob = std::make_shared<Blob>();
    blob->name = in.name;
    blob->data = in.data;
    blob->publisher_id = in.publisher_id;
    blob->publisher_name = in.publisher_name;
    blob->created_ms = out.created_ms;
    blob->expires_ms = out.expires_ms;
    blob->ttl_secs = in.ttl_secs;
    blob->once = in.once;
    blob->recipient_ids = in.recipient_ids;
    const std::string key = blob_key(out.token);
    const HubLimits limits = limits_;

    // May run more than once (the vault retries after growing its map): no effect outside txn.
    const Vault::WriteFn write = [blob, key, limits](WriteTxn& txn) -> Status {
        TRY_ASSIGN(Usage usage, read_usage(txn, blob->publisher_id));
        if (usage.blobs + 1 > limits.quota_blobs) {
            return make_error(
                Code::conflict,
                fmt::format("quota exceeded: an agent may keep {} live blobs", limits.quota_blobs));
        }
        if (usage.bytes + blob->data.size() > limits.quota_bytes) {
            return make_error(Code::conflict,
                              fmt::format("quota exceeded: an agent may keep {} bytes of live "
                                          "blob data",
                                          limits.quota_bytes));
        }
        std::string record = serialize(*blob);
        const Status stored = txn.insert(Table::blobs, key, record);
        wipe(record);
        TRY(stored);
        const json index = {{"agent", blob->publisher_id}, {"bytes", blob->data.size()}};
        TRY(txn.insert(Table::blob_expiry, expiry_key(blob->expires_ms, key), index.dump()));
        ++usage.blobs;
        usage.bytes += blob->data.size();
        return write_usage(txn, blob->publisher_id, usage);
    };
    const Status s = co_await async_write(vault_, write);
    if (!s) {
        co_return s.error();
    }
    co_return std::move(out);
}

Result<std::optional<Blob>> Hub::find(std::string_view key) const {
    TRY_ASSIGN(auto value, vault_.get(Table::blobs, key));
    if (!value) {
        return std::optional<Blob>();
    }
    TRY_ASSIGN(Blob b, parse_blob(as_view(*value)));
    return std::optional<Blob>(std::move(b));
}

boost::asio::awaitable<Result<Blob>> Hub::retrieve(std::string_view token,
                                                   const std::string& retriever_id) {
    if (token.size() != k_token_chars) {
        co_return gone();
    }
    const std::string key = blob_key(token);
    auto found = find(key);
    if (!found) {
        co_return found.error();
    }
    const int64_t now = clock_.now_ms();
    if (!*found || (*found)->expires_ms <= now || !may_have(**found, retriever_id)) {
        co_return gone();
    }
    if (!(*found)->once) {
        co_return std::move(**found);
    }
    // A once blob: whoever's write finds it still there, and still live when the write runs
    // (it may have waited in the queue past the expiry), takes it and removes it in that write.
    auto taken = std::make_shared<std::optional<Blob>>();
    const Clock* clock = &clock_;
    const Vault::WriteFn write = [key, clock, retriever_id, taken](WriteTxn& txn) -> Status {
        taken->reset();
        TRY_ASSIGN(auto value, txn.get(Table::blobs, key));
        if (!value) {
            return gone();
        }
        TRY_ASSIGN(Blob b, parse_blob(as_view(*value)));
        if (b.expires_ms <= clock->now_ms() || !may_have(b, retriever_id)) {
            return gone();
        }
        TRY(erase_blob(txn, key, b));
        taken->emplace(std::move(b));
        return {};
    };
    const Status s = co_await async_write(vault_, write);
    if (!s) {
        co_return s.error();
    }
    co_return std::move(**taken);
}

boost::asio::awaitable<Status> Hub::remove(std::string_view token,
                                           const std::string& requester_id) {
    if (token.size() != k_token_chars) {
        co_return gone();
    }
    const std::string key = blob_key(token);
    const Clock* clock = &clock_;
    const Vault::WriteFn write = [key, clock, requester_id](WriteTxn& txn) -> Status {
        TRY_ASSIGN(auto value, txn.get(Table::blobs, key));
        if (!value) {
            return gone();
        }
        TRY_ASSIGN(Blob b, parse_blob(as_view(*value)));
        if (b.expires_ms <= clock->now_ms() ||
            (!requester_id.empty() && b.publisher_id != requester_id)) {
            return gone();
        }
        return erase_blob(txn, key, b);
    };
    co_return co_await async_write(vault_, write);
}

boost::asio::awaitable<Result<size_t>> Hub::sweep() {
    const int64_t now = clock_.now_ms();
    const size_t batch = limits_.sweep_batch;
    auto removed = std::make_shared<size_t>(0);
    const Vault::WriteFn write = [now, batch, removed](WriteTxn& txn) -> Status {
        *removed = 0;
        std::vector<std::string> doomed;  // index keys, oldest first
        std::map<std::string, Usage> freed;
        Status inner;
        TRY(txn.scan(Table::blob_expiry, "", [&](std::string_view key, SecretBytes value) {
            if (expiry_of(key) > now || doomed.size() >= batch) {
                return false;
            }
            const json j = json::parse(as_view(value), nullptr, false);
            if (!j.is_object()) {
                inner = make_error(Code::corrupt, "a hub expiry record is malformed");
                return false;
            }
            Usage& u = freed[j.value("agent", "")];
            ++u.blobs;
            u.bytes += j.value("bytes", uint64_t{0});
            doomed.emplace_back(key);
            return true;
        }));
        TRY(std::move(inner));
        for (const auto& key : doomed) {
            TRY(txn.erase(Table::blob_expiry, key));
            TRY(txn.erase(Table::blobs, std::string_view(key).substr(8)));
        }
        for (const auto& [agent, f] : freed) {
            TRY_ASSIGN(Usage usage, read_usage(txn, agent));
            usage.blobs -= std::min(usage.blobs, f.blobs);
            usage.bytes -= std::min(usage.bytes, f.bytes);
            TRY(write_usage(txn, agent, usage));
        }
        *removed = doomed.size();
        return {};
    };
    const Status s = co_await async_write(vault_, write);
    if (!s) {
        co_return s.error();
    }
    co_return *removed;
}

}  // namespace agentgw
