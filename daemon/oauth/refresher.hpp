// TokenRefresher: new access tokens for OAuth2 credentials (SPEC §9), one refresh at a time
// per credential. The first caller for a credential runs the refresh; everyone who asks while
// it runs waits for that same refresh and gets its outcome. The new tokens are stored in one
// durable write before any waiter is released, so nothing ever uses a token that a crash could
// lose, and a rotated refresh token is never sent twice.
//
// Thread-safety: the io_context thread only.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include "common/result.hpp"
#include "daemon/audit/audit_log.hpp"
#include "daemon/credentials/credential_store.hpp"
#include "daemon/metrics/metrics.hpp"
#include "daemon/services/service_catalog.hpp"
#include "daemon/upstream/upstream_client.hpp"
#include "daemon/util/clock.hpp"

namespace agentgw::oauth {

class TokenRefresher {
  public:
    TokenRefresher(upstream::UpstreamClient& client, CredentialStore& credentials, AuditLog& audit,
                   Metrics& metrics, const Clock& clock);

    // Makes the credential stored under `key` fresh. When its generation is no longer `seen`
    // (another refresh, or a new credential, came meanwhile) there is nothing to do. Errors
    // carry the message the proxy answers with ("credential refresh failed: ...").
    boost::asio::awaitable<Status> refresh(const Service& service, const std::string& key,
                                           uint64_t seen);

    // Refreshes the credential under `key` when its access token expires within the service's
    // refresh_before_secs plus a random part of a tenth of it (so that credentials issued
    // together do not all refresh at the same moment), unless a refresh of it is under way.
    // After a failure it leaves the credential alone for a while (k_backoff_first_secs,
    // doubling with each further failure up to k_backoff_max_secs), so that a token endpoint
    // that is down is not asked, and the failure audited, at every look; a success, on demand
    // or here, or a new credential ends the wait.
    boost::asio::awaitable<void> refresh_if_due(const Service& service, const std::string& key);

    static constexpr int64_t k_backoff_first_secs = 30;
    static constexpr int64_t k_backoff_max_secs = 900;

  private:
    struct Flight;
    // Failed refreshes of one credential generation, and when refresh_if_due may try again.
    struct Backoff {
        uint64_t generation = 0;
        int failures = 0;
        int64_t wait_secs = 0;  // the wait the last failure set
        int64_t next_at = 0;    // clock_ seconds
    };
    boost::asio::awaitable<Status> run(const Service& service, const std::string& key,
                                       uint64_t seen);

    upstream::UpstreamClient& client_;
    CredentialStore& credentials_;
    AuditLog& audit_;
    Metrics& metrics_;
    const Clock& clock_;
    std::map<std::string, std::shared_ptr<Flight>> flights_;  // by credential key
    std::map<std::string, Backoff> backoff_;                  // by credential key
};

}  // namespace agentgw::oauth
