#include "daemon/control/peer_policy.hpp"

#include <grp.h>
#include <pwd.h>
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
    if (peer.gid == static_cast<long>(*gid_)) {
        return true;
    }
    // Supplementary groups: SO_PEERCRED carries only the primary gid, so ask the group
    // database about the peer's user.
    std::vector<char> buf(16384);
    struct passwd pw {};
    struct passwd* found = nullptr;
    if (::getpwuid_r(static_cast<uid_t>(peer.uid), &pw, buf.data(), buf.size(), &found) != 0 ||
        found == nullptr) {
        return false;
    }
    int count = 64;
    std::vector<gid_t> groups(static_cast<size_t>(count));
    if (::getgrouplist(found->pw_name, found->pw_gid, groups.data(), &count) < 0) {
        groups.resize(static_cast<size_t>(count));
        if (::getgrouplist(found->pw_name, found->pw_gid, groups.data(), &count) < 0) {
            return false;
        }
    }
    groups.resize(static_cast<size_t>(count));
    return std::find(groups.begin(), groups.end(), *gid_) != groups.end();
}

}  // namespace agentgw
