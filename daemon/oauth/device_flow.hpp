// DeviceFlows: the OAuth 2.0 device authorization grant (RFC 8628) run by the daemon. start()
// asks the service for a device code and a user code; the daemon then polls the token
// endpoint itself until the user approves, denies, or the code expires, and stores the tokens
// as an oauth2 credential. The flow is kept in the vault (`device_flows`), so it survives the
// CLI being interrupted and the daemon restarting; `agentgw connect` only watches it.
//
// Thread-safety: the io_context thread only.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "daemon/audit/audit_log.hpp"
#include "daemon/control/control_api.hpp"
#include "daemon/credentials/credential_store.hpp"
#include "daemon/upstream/upstream_client.hpp"
#include "daemon/util/clock.hpp"
#include "daemon/vault/vault.hpp"

namespace agentgw::oauth {

class DeviceFlows {
  public:
    DeviceFlows(boost::asio::io_context& ioc, upstream::UpstreamClient& client, Vault& vault,
                CredentialStore& credentials, AuditLog& audit, ServiceDirectory& services,
                const Clock& clock);

    // Starts a flow for `service` whose tokens will be stored at `scope` for `owner_id`.
    // Answers the flow as flow_json() shows it, with the URI and the code for the user.
    boost::asio::awaitable<Result<nlohmann::json>> start(const Service& service,
                                                         CredentialScope scope,
                                                         const std::string& owner_id);

    // {"flow_id", "service", "scope", "owner_id", "status", "message", "verification_uri",
    //  "verification_uri_complete", "user_code", "expires_at", "interval"}; status is
    // pending, complete, denied, expired or failed.
    Result<nlohmann::json> get(const std::string& id) const;

    // Picks up the flows still pending in the vault (after a restart) and drops finished
    // ones older than an hour.
    void resume();

    // Stops polling (shutdown); the flows stay in the vault and resume at the next start.
    void stop();

  private:
    struct Poller;
    void spawn(const std::string& id);
    boost::asio::awaitable<void> poll(const std::shared_ptr<Poller>& poller);

    boost::asio::io_context& ioc_;
    upstream::UpstreamClient& client_;
    Vault& vault_;
    CredentialStore& credentials_;
    AuditLog& audit_;
    ServiceDirectory& services_;
    const Clock& clock_;
    std::map<std::string, std::shared_ptr<Poller>> pollers_;
    bool stopped_ = false;
};

}  // namespace agentgw::oauth
