// Hub: data one agent publishes for others (SPEC §3.3), sealed in the vault and handed out by
// data token until its TTL runs out.
//
// A blob is stored under the keyed hash of its token (the token itself is never stored), with
// an expiry index ordered by time (`blob_expiry`: be64(expiry ms) | blob key) that the sweeper
// walks in bounded batches, and a per-agent usage record (`blob_usage`) that the quotas are
// checked against inside the same write transaction. Writes go through the vault's group
// commit and return once durable; reads of reusable blobs never touch the writer. A `once`
// blob is removed in the write that hands it out, so of any number of concurrent retrievals
// exactly one gets it.
//
// Thread-safety: every member may be called from any thread; the coroutines resume on the
// caller's executor.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "common/result.hpp"
#include "daemon/util/clock.hpp"
#include "daemon/vault/vault.hpp"

namespace agentgw {

struct HubLimits {
    size_t max_data = 1024 * 1024;            // bytes of `data` per blob (hub_max_data)
    int64_t default_ttl_secs = 86400;         // when a publish names none
    int64_t max_ttl_secs = 30 * 86400;        // hub_max_ttl
    uint64_t quota_blobs = 1000;              // live blobs per publishing agent
    uint64_t quota_bytes = 64 * 1024 * 1024;  // live bytes of data per publishing agent
    size_t sweep_batch = 500;                 // expired blobs removed per sweep transaction

    // The body a publish request may have: room for the largest blob even with every byte of its
    // data JSON-escaped as \u00XX (six bytes), and at least 1 MiB.
    size_t publish_body_limit() const noexcept {
        return std::max<size_t>(6 * max_data + 65536, 1024 * 1024);
    }
};

// A blob to publish. The route has resolved names to ids; Hub::publish checks the rest.
struct BlobInput {
    std::string publisher_id;
    std::string publisher_name;
    std::string name;
    std::string data;
    int64_t ttl_secs = 0;
    bool once = false;
    std::vector<std::string> recipient_ids;  // empty: any agent holding the token
    ~BlobInput();                            // wipes data
};

struct PublishedBlob {
    std::string token;  // the data token: shown to the publisher once, stored nowhere
    std::string fingerprint;
    int64_t created_ms = 0;
    int64_t expires_ms = 0;
    PublishedBlob() = default;
    PublishedBlob(PublishedBlob&&) = default;
    PublishedBlob& operator=(PublishedBlob&&) = default;
    ~PublishedBlob();  // wipes the token
};

struct Blob {
    std::string name;
    std::string data;
    std::string publisher_id;
    std::string publisher_name;  // as it was at publishing time
    int64_t created_ms = 0;
    int64_t expires_ms = 0;
    int64_t ttl_secs = 0;
    bool once = false;
    std::vector<std::string> recipient_ids;
    Blob() = default;
    Blob(Blob&&) = default;
    Blob& operator=(Blob&&) = default;
    ~Blob();  // wipes data
};

class Hub {
  public:
    // `clock` must outlive the vault: writes the hub queued read it when they run.
    Hub(Vault& vault, const Clock& clock, HubLimits limits);

    const HubLimits& limits() const noexcept { return limits_; }

    // The input's own faults: Code::invalid_argument (name, ttl) or Code::exhausted (data
    // larger than max_data).
    Status check(const BlobInput& input) const;

    // Stores the blob and resumes once it is durable. Code::conflict names the quota it would
    // exceed.
    boost::asio::awaitable<Result<PublishedBlob>> publish(const BlobInput& input);

    // The blob for `token`, when it is live and `retriever_id` may have it (the publisher, a
    // recipient, or anyone when it names no recipients; an empty `retriever_id` is the
    // operator, who may have any). A `once` blob is removed durably before this resumes.
    // Every refusal is the same Code::not_found, so it tells nothing about the token.
    boost::asio::awaitable<Result<Blob>> retrieve(std::string_view token,
                                                  const std::string& retriever_id);

    // Removes the blob; only its publisher may (anyone else gets Code::not_found). An empty
    // `requester_id` is the operator, who may remove any.
    boost::asio::awaitable<Status> remove(std::string_view token, const std::string& requester_id);

    // Removes up to limits().sweep_batch expired blobs in one write; returns how many.
    boost::asio::awaitable<Result<size_t>> sweep();

    // A short keyed fingerprint of a token, for audit entries and logs.
    std::string fingerprint(std::string_view token) const;

    // Blobs stored, expired ones not yet swept included.
    Result<uint64_t> stored() const;

  private:
    std::string blob_key(std::string_view token) const;
    Result<std::optional<Blob>> find(std::string_view key) const;

    Vault& vault_;
    const Clock& clock_;
    HubLimits limits_;
};

}  // namespace agentgw
