#include "daemon/crypto/encoding.hpp"

#include <sodium.h>

namespace agentgw {

namespace {
constexpr int k_variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
}

std::string base64url_encode(std::span<const unsigned char> bytes) {
    std::string out(sodium_base64_encoded_len(bytes.size(), k_variant), '\0');
    sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), k_variant);
    out.resize(out.size() - 1);  // drop the terminating NUL
    return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
    // libsodium 1.0.18 decodes bytes >= 0x80 as if they were '_', so check the alphabet first:
    // one value must have one spelling.
    for (const char c : text) {
        const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                        (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!ok) {
            return std::nullopt;
        }
    }
    std::string out(text.size() * 3 / 4 + 1, '\0');
    size_t len = 0;
    const char* end = nullptr;
    if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                          text.size(), nullptr, &len, &end, k_variant) != 0 ||
        end != text.data() + text.size()) {
        return std::nullopt;
    }
    out.resize(len);
    return out;
}

}  // namespace agentgw
