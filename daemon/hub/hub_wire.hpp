// The hub's JSON on the wire, shared by the agent API (SPEC §3.3) and the control API: a
// publish body read into a BlobInput, and a blob or a publish receipt written out.
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.hpp"
#include "daemon/control/json_body.hpp"
#include "daemon/hub/hub.hpp"
#include "daemon/identity/registry.hpp"

namespace agentgw {

// Reads "name", "data", "ttl", "once" and "recipients" (agent names or ids) of a publish body
// for `publisher`. Checks what the body alone decides; Hub::publish checks the quotas.
Result<BlobInput> blob_input_from(const JsonBody& body, const Agent& publisher,
                                  const Registry& registry, const HubLimits& limits);

// {"status": "ok", "token", "expires_at"}
nlohmann::json publish_receipt(const PublishedBlob& published);

// {"token", "name", "data", "ttl", "created_at", "expires_at", "publisher", "once"}
nlohmann::json blob_json(std::string_view token, const Blob& blob);

}  // namespace agentgw
