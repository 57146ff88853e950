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
    // together do not all refresh at the same moment).
    boost::asio::awaitable<void> refresh_if_due(const Service& service, const std::string& key);

  private:
    struct Flight;
    boost::asio::awaitable<Status> run(const Service& service, const std::string& key,
                                       uint64_t seen);

    upstream::UpstreamClient& client_;
    CredentialStore& credentials_;
    AuditLog& audit_;
    Metrics& metrics_;
    const Clock& clock_;
    std::map<std::string, std::shared_ptr<Flight>> flights_;  // by credential key
};

}  // namespace agentgw::oauth
