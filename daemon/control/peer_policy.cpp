#include "daemon/control/peer_policy.hpp"

#include <algorithm>
#include <grp.h>
#include <unistd.h>
#include <vector>

#include <fmt/format.h>

namespace agentgw {

Result<PeerPolicy> PeerPolicy::create(const std::string& group) {
    PeerPolicy policy;
    if (group.empty()) {
        return policy;
    }
    std::vector<char> buf(16384);
    struct group entry {};
    struct group* found = nullptr;
    if (::getgrnam_r(group.c_str(), &entry, buf.data(), buf.size(), &found) != 0 ||
        found == nullptr) {
        return make_error(Code::not_found, fmt::format("--socket-group {}: no such group", group));
    }
    policy.gid_ = found->gr_gid;
    return policy;
}

bool PeerPolicy::allows(const http::Peer& peer) const {
    if (peer.uid < 0) {
        return false;
    }
    if (peer.uid == static_cast<long>(::geteuid()) || peer.uid == 0) {
        return true;
    }
    if (!gid_) {
        return false;
    }
    const long gid = static_cast<long>(*gid_);
    return peer.gid == gid ||
           std::find(peer.groups.begin(), peer.groups.end(), gid) != peer.groups.end();
}

}  // namespace agentgw
