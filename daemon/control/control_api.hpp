// The control API (docs/control-api.md): the routes served on the Unix socket. Each handler
// validates its input, does its work through the registry, credential store and service
// directory, and records the action in the audit log with the peer's uid as the actor.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/any_io_executor.hpp>

#include "daemon/audit/audit_log.hpp"
#include "daemon/credentials/credential_store.hpp"
#include "daemon/http/router.hpp"
#include "daemon/hub/hub.hpp"
#include "daemon/identity/registry.hpp"
#include "daemon/services/service_catalog.hpp"
#include "daemon/util/clock.hpp"

namespace agentgw {

namespace oauth {
class DeviceFlows;
}

// The services in force, replaced whole on reload. Thread-safe.
class ServiceDirectory {
  public:
    ServiceDirectory(std::filesystem::path file, const Clock& clock)
        : file_(std::move(file)), clock_(clock) {}
    // Loads the file (no file configured: no services). On failure the old services stay,
    // and the failure is kept for state() until a reload succeeds. `trigger` says what asked
    // for the reload ("received SIGHUP"), for the observer.
    Status reload(std::string_view trigger = {});
    // Called after each reload (not under the lock) with its trigger and outcome: the daemon
    // logs it and updates the status it reports to systemd. Set before requests are served.
    void on_reload(std::function<void(std::string_view trigger, const Status&)> observer) {
        observer_ = std::move(observer);
    }
    std::shared_ptr<const ServiceCatalog> current() const;
    const std::filesystem::path& file() const noexcept { return file_; }
    // {file, services, loaded_at, last_error?, last_error_at?} for the status report.
    nlohmann::json state() const;

  private:
    std::filesystem::path file_;
    const Clock& clock_;
    mutable std::mutex mutex_;  // guards the members below
    std::shared_ptr<const ServiceCatalog> catalog_ = std::make_shared<const ServiceCatalog>();
    int64_t loaded_at_ = 0;  // Unix seconds of the last successful load
    std::optional<std::string> last_error_;
    int64_t last_error_at_ = 0;
    std::function<void(std::string_view, const Status&)> observer_;
};

struct ControlContext {
    Registry& registry;
    CredentialStore& credentials;
    AuditLog& audit;
    ServiceDirectory& services;
    Vault& vault;
    Hub& hub;
    oauth::DeviceFlows& device_flows;
    // Where reads that may scan the whole audit log run (listing with a filter, verifying),
    // so that the event loop goes on serving meanwhile: a thread of its own.
    boost::asio::any_io_executor slow_reads;
    // Daemon facts for /v1/status.
    std::function<nlohmann::json()> status;
};

void add_control_routes(http::Router& router, ControlContext& ctx);

}  // namespace agentgw
