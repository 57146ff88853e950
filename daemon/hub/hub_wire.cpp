#include "daemon/hub/hub_wire.hpp"

#include <fmt/format.h>

#include "daemon/util/clock.hpp"

namespace agentgw {

using nlohmann::json;

namespace {

constexpr size_t k_max_recipients = 100;

}  // namespace

Result<BlobInput> blob_input_from(const JsonBody& body, const Agent& publisher,
                                  const Registry& registry, const HubLimits& limits) {
    BlobInput in;
    in.publisher_id = publisher.id;
    in.publisher_name = publisher.name;
    TRY_ASSIGN(in.name, body.string("name"));
    TRY_ASSIGN(in.data, body.string("data"));
    TRY_ASSIGN(auto ttl, body.optional_int("ttl", 1, limits.max_ttl_secs));
    in.ttl_secs = ttl.value_or(std::min(limits.default_ttl_secs, limits.max_ttl_secs));
    TRY_ASSIGN(auto once, body.optional_bool("once"));
    in.once = once.value_or(false);
    TRY_ASSIGN(auto recipients, body.string_list("recipients"));
    if (recipients.size() > k_max_recipients) {
        return make_error(Code::invalid_argument,
                          fmt::format("field \"recipients\": at most {} agents", k_max_recipients));
    }
    for (const auto& name : recipients) {
        auto agent = registry.find_agent(name);
        if (!agent) {
            if (agent.error().code != Code::not_found) {
                return agent.error();
            }
            return make_error(
                Code::invalid_argument,
                fmt::format("field \"recipients\": no agent named {}", name.substr(0, 64)));
        }
        if (std::find(in.recipient_ids.begin(), in.recipient_ids.end(), agent->id) ==
            in.recipient_ids.end()) {
            in.recipient_ids.push_back(agent->id);
        }
    }
    return in;
}

json publish_receipt(const PublishedBlob& published) {
    return {{"status", "ok"},
            {"token", published.token},
            {"expires_at", rfc3339(published.expires_ms / 1000)}};
}

json blob_json(std::string_view token, const Blob& blob) {
    return {{"token", token},
            {"name", blob.name},
            {"data", blob.data},
            {"ttl", blob.ttl_secs},
            {"created_at", rfc3339(blob.created_ms / 1000)},
            {"expires_at", rfc3339(blob.expires_ms / 1000)},
            {"publisher", blob.publisher_name},
            {"once", blob.once}};
}

}  // namespace agentgw
