// The control API (docs/control-api.md): the routes served on the Unix socket. Each handler
// validates its input, does its work through the registry, credential store and service
// directory, and records the action in the audit log with the peer's uid as the actor.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "daemon/audit/audit_log.hpp"
#include "daemon/credentials/credential_store.hpp"
#include "daemon/http/router.hpp"
#include "daemon/hub/hub.hpp"
#include "daemon/identity/registry.hpp"
#include "daemon/services/service_catalog.hpp"

namespace agentgw {

namespace oauth {
class DeviceFlows;
}

// The services in force, replaced whole on reload. Thread-safe.
class ServiceDirectory {
  public:
    explicit ServiceDirectory(std::filesystem::path file) : file_(std::move(file)) {}
    // Loads the file (no file configured: no services). On failure the old services stay.
    Status reload();
    std::shared_ptr<const ServiceCatalog> current() const;
    const std::filesystem::path& file() const noexcept { return file_; }

  private:
    std::filesystem::path file_;
    mutable std::mutex mutex_;  // guards catalog_
    std::shared_ptr<const ServiceCatalog> catalog_ = std::make_shared<const ServiceCatalog>();
};

struct ControlContext {
    Registry& registry;
    CredentialStore& credentials;
    AuditLog& audit;
    ServiceDirectory& services;
    Vault& vault;
    Hub& hub;
    oauth::DeviceFlows& device_flows;
    // Daemon facts for /v1/status.
    std::function<nlohmann::json()> status;
};

void add_control_routes(http::Router& router, ControlContext& ctx);

}  // namespace agentgw
