// Base64url (no padding) and hex via libsodium's constant-time codecs. Thread-safe.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace agentgw {

std::string base64url_encode(std::span<const unsigned char> bytes);
inline std::string base64url_encode(std::string_view bytes) {
    return base64url_encode({reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()});
}
// Strict: rejects padding, whitespace and characters outside the URL-safe alphabet.
std::optional<std::string> base64url_decode(std::string_view text);

}  // namespace agentgw
