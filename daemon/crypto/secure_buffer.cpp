#include "daemon/crypto/secure_buffer.hpp"

#include <new>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace agentgw {

void wipe_json(nlohmann::json& j) {
    // With a stack of its own, not by recursion: a tree parsed from an answer may be nested
    // far deeper than the call stack allows (256 KiB of '[' are 262,144 levels).
    std::vector<nlohmann::json*> pending{&j};
    while (!pending.empty()) {
        nlohmann::json* node = pending.back();
        pending.pop_back();
        if (node->is_string()) {
            wipe(node->get_ref<std::string&>());
        } else if (node->is_structured()) {
            for (auto& item : *node) {
                pending.push_back(&item);
            }
        }
    }
}

SecureBuffer::SecureBuffer(size_t size) : size_(size) {
    if (size == 0) {
        return;
    }
    data_ = static_cast<uint8_t*>(sodium_malloc(size));
    if (data_ == nullptr) {
        throw std::bad_alloc();
    }
    sodium_memzero(data_, size);
}

SecureBuffer::SecureBuffer(SecureBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SecureBuffer& SecureBuffer::operator=(SecureBuffer&& other) noexcept {
    if (this != &other) {
        if (data_ != nullptr) {
            sodium_free(data_);
        }
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

SecureBuffer::~SecureBuffer() {
    if (data_ != nullptr) {
        // sodium_free wipes the memory (and lifts a read-only protection) before freeing.
        sodium_free(data_);
    }
}

SecureBuffer SecureBuffer::random(size_t size) {
    SecureBuffer buffer(size);
    randombytes_buf(buffer.data(), size);
    return buffer;
}

void SecureBuffer::make_readonly() noexcept {
    if (data_ != nullptr) {
        sodium_mprotect_readonly(data_);
    }
}

}  // namespace agentgw
