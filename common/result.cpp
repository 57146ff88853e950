#include "common/result.hpp"

namespace agentgw {

std::string_view code_name(Code code) noexcept {
    switch (code) {
        case Code::invalid_argument:
            return "invalid_argument";
        case Code::not_found:
            return "not_found";
        case Code::conflict:
            return "conflict";
        case Code::permission_denied:
            return "permission_denied";
        case Code::unauthenticated:
            return "unauthenticated";
        case Code::exhausted:
            return "exhausted";
        case Code::unavailable:
            return "unavailable";
        case Code::upstream:
            return "upstream";
        case Code::io_error:
            return "io_error";
        case Code::corrupt:
            return "corrupt";
        case Code::internal:
            return "internal";
    }
    return "internal";
}

}  // namespace agentgw
