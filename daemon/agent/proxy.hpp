// The credential-injecting proxy (SPEC §3.2): ANY /api/{service}/{path...}. A request passes
// through small stages in order (target → authenticate → service → grant → rate limits →
// credential), any of which may answer instead; then it is forwarded through the upstream
// client with both bodies streamed, and audited off the request path.
//
// Thread-safety: runs on the io_context thread only.
#pragma once

#include <boost/asio/awaitable.hpp>

#include "daemon/agent/agent_api.hpp"
#include "daemon/http/server.hpp"

namespace agentgw {

// The Takeover that routes "/api/..." to the proxy; `ctx` must outlive the server.
http::Takeover proxy_takeover(AgentApiContext& ctx);

}  // namespace agentgw
