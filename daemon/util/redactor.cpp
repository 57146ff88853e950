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

void Redactor::add(std::string_view secret) {
    if (secret.empty()) {
        return;
    }
    std::vector<std::string> forms;
    forms.emplace_back(secret);
    std::string encoded = boost::urls::encode(secret, boost::urls::unreserved_chars);
    if (encoded != secret) {
        // The same escapes with lower-case hex digits, as some servers write them back.
        std::string lower = encoded;
        for (size_t at = lower.find('%'); at != std::string::npos; at = lower.find('%', at + 1)) {
            for (size_t i = at + 1; i < at + 3 && i < lower.size(); ++i) {
                lower[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(lower[i])));
            }
        }
        if (lower != encoded) {
            forms.push_back(std::move(lower));
        } else {
            wipe(lower);
        }
        forms.push_back(std::move(encoded));
    } else {
        wipe(encoded);
    }
    for (auto& form : forms) {
        if (std::find(secrets_.begin(), secrets_.end(), form) == secrets_.end()) {
            secrets_.push_back(std::move(form));
        } else {
            wipe(form);
        }
    }
    std::stable_sort(
        secrets_.begin(), secrets_.end(),
        [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
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
        const auto found = std::find_if(secrets_.begin(), secrets_.end(), [&](const auto& secret) {
            return text.substr(at, secret.size()) == secret;
        });
        if (found != secrets_.end()) {
            out.append("[redacted]");
            at += found->size();
        } else {
            out.push_back(text[at++]);
        }
    }
    return out;
}

}  // namespace agentgw
