#include "daemon/control/peer_policy.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
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
    // The entry holds every member's name: a large group needs a larger buffer (ERANGE).
    std::vector<char> buf(16384);
    struct group entry {};
    struct group* found = nullptr;
    int rc = 0;
    while ((rc = ::getgrnam_r(group.c_str(), &entry, buf.data(), buf.size(), &found)) == ERANGE &&
           buf.size() < (size_t{16} << 20)) {
        buf.resize(buf.size() * 4);
    }
    if (rc != 0) {
        return make_error(Code::io_error, fmt::format("--socket-group {}: cannot look it up: {}",
                                                      group, std::strerror(rc)));
    }
    if (found == nullptr) {
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
