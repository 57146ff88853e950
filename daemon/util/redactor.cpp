#include "daemon/util/redactor.hpp"

#include <algorithm>
#include <cctype>

#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include "daemon/crypto/secure_buffer.hpp"

namespace agentgw {

Redactor::~Redactor() {
    clear();
}

void Redactor::keep(std::string& form) {
    if (std::find(secrets_.begin(), secrets_.end(), form) == secrets_.end()) {
        secrets_.emplace_back(form);  // a copy: the deque's elements never move
    }
    wipe(form);
}

void Redactor::add(std::string_view secret) {
    if (secret.empty()) {
        return;
    }
    std::string raw(secret);
    keep(raw);
    std::string encoded = boost::urls::encode(secret, boost::urls::unreserved_chars);
    if (encoded != secret) {
        // The same escapes with lower-case hex digits, as some servers write them back.
        std::string lower = encoded;
        for (size_t at = lower.find('%'); at != std::string::npos; at = lower.find('%', at + 1)) {
            for (size_t i = at + 1; i < at + 3 && i < lower.size(); ++i) {
                lower[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(lower[i])));
            }
        }
        keep(lower);
    }
    keep(encoded);
}

void Redactor::clear() {
    for (auto& secret : secrets_) {
        wipe(secret);
    }
    secrets_.clear();
}

bool Redactor::found_in(std::string_view text) const {
    return std::any_of(secrets_.begin(), secrets_.end(), [&](const std::string& secret) {
        return text.find(secret) != std::string_view::npos;
    });
}

std::string Redactor::apply(std::string_view text) const {
    std::string out;
    out.reserve(text.size());
    for (size_t at = 0; at < text.size();) {
        // The longest secret that starts here, so that one holding another is replaced whole.
        size_t longest = 0;
        for (const auto& secret : secrets_) {
            if (secret.size() > longest && text.substr(at, secret.size()) == secret) {
                longest = secret.size();
            }
        }
        if (longest > 0) {
            out.append("[redacted]");
            at += longest;
        } else {
            out.push_back(text[at++]);
        }
    }
    return out;
}

}  // namespace agentgw
