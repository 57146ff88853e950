// SecureBuffer: a fixed-size block of sodium_malloc'd memory for long-lived key material
// (guard pages, canary, mlock where allowed), wiped and freed on destruction.
// SecretBytes: a growable byte vector whose storage is wiped when released, for decrypted
// record values. Neither is thread-safe; a const SecureBuffer may be read from many threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>
#include <sodium.h>

namespace agentgw {

// Zeroes a string that held a secret (before it is reused or freed).
inline void wipe(std::string& s) {
    if (!s.empty()) {
        sodium_memzero(s.data(), s.size());
    }
}

// Zeroes every string in a JSON tree (a parsed record or answer holds copies of secrets)
// before the tree is freed.
void wipe_json(nlohmann::json& j);

class SecureBuffer {
  public:
    SecureBuffer() = default;
    // Allocates `size` bytes (zero-filled). Throws std::bad_alloc when sodium_malloc fails.
    explicit SecureBuffer(size_t size);
    SecureBuffer(SecureBuffer&& other) noexcept;
    SecureBuffer& operator=(SecureBuffer&& other) noexcept;
    SecureBuffer(const SecureBuffer&) = delete;
    SecureBuffer& operator=(const SecureBuffer&) = delete;
    ~SecureBuffer();

    // A buffer of `size` random bytes.
    static SecureBuffer random(size_t size);

    uint8_t* data() noexcept { return data_; }
    const uint8_t* data() const noexcept { return data_; }
    size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    std::span<const uint8_t> span() const noexcept { return {data_, size_}; }
    std::string_view view() const noexcept { return {reinterpret_cast<const char*>(data_), size_}; }

    // After this the memory traps on write; use for keys that never change once derived.
    void make_readonly() noexcept;

  private:
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

// An allocator that wipes memory before handing it back, so decrypted values do not linger
// in freed heap blocks.
template <typename T>
struct WipingAllocator {
    using value_type = T;
    WipingAllocator() = default;
    template <typename U>
    WipingAllocator(const WipingAllocator<U>&) noexcept {}
    T* allocate(size_t n) { return std::allocator<T>{}.allocate(n); }
    void deallocate(T* p, size_t n) noexcept {
        sodium_memzero(p, n * sizeof(T));
        std::allocator<T>{}.deallocate(p, n);
    }
    template <typename U>
    bool operator==(const WipingAllocator<U>&) const noexcept {
        return true;
    }
};

using SecretBytes = std::vector<uint8_t, WipingAllocator<uint8_t>>;

inline std::string_view as_view(const SecretBytes& bytes) noexcept {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

}  // namespace agentgw
