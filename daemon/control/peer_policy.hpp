// PeerPolicy: who may use the control socket (SPEC §4): the daemon's own uid, root, and
// members of one configured group. Thread-safe after construction.
#pragma once

#include <optional>
#include <string>
#include <sys/types.h>

#include "common/result.hpp"
#include "daemon/http/router.hpp"

namespace agentgw {

class PeerPolicy {
  public:
    // `group` empty: only the daemon's uid and root. Fails when the group does not exist.
    static Result<PeerPolicy> create(const std::string& group);

    // Checked per connection, from SO_PEERCRED and SO_PEERGROUPS: the peer process's own
    // primary and supplementary groups.
    bool allows(const http::Peer& peer) const;

    std::optional<gid_t> gid() const noexcept { return gid_; }

  private:
    std::optional<gid_t> gid_;
};

}  // namespace agentgw
