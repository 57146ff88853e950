#include "cli/exit_codes.hpp"

namespace agentgw::cli {

int exit_code_for(Code code) noexcept {
    switch (code) {
        case Code::invalid_argument:
            return k_exit_usage;
        case Code::not_found:
            return k_exit_not_found;
        case Code::permission_denied:
        case Code::unauthenticated:
            return k_exit_denied;
        case Code::unavailable:
            return k_exit_unreachable;
        case Code::conflict:
        case Code::upstream:
        case Code::exhausted:
        case Code::io_error:
        case Code::corrupt:
        case Code::internal:
            return k_exit_failure;
    }
    return k_exit_failure;
}

}  // namespace agentgw::cli
