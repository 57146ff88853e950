#include <set>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "daemon/crypto/record_cipher.hpp"

using namespace agentgw;

namespace {

std::string to_string(const SecretBytes& b) {
    return std::string(as_view(b));
}

}  // namespace

TEST_CASE("sealed records open to their plaintext", "[crypto]") {
    const auto key = SecureBuffer::random(RecordCipher::k_key_size);
    const RecordCipher cipher(key, 1);
    for (const std::string& plain : {std::string(), std::string("x"), std::string(5000, 'q')}) {
        const std::string sealed = cipher.seal("credentials", "openai", plain);
        CHECK(sealed.size() == plain.size() + RecordCipher::k_overhead);
        auto opened = cipher.open("credentials", "openai", sealed);
        REQUIRE(opened);
        CHECK(to_string(*opened) == plain);
    }
}

TEST_CASE("sealing twice gives different ciphertexts", "[crypto]") {
    const auto key = SecureBuffer::random(RecordCipher::k_key_size);
    const RecordCipher cipher(key, 1);
    CHECK(cipher.seal("users", "k", "same") != cipher.seal("users", "k", "same"));
}

TEST_CASE("no two records sealed on any thread share a nonce", "[crypto]") {
    const auto key = SecureBuffer::random(RecordCipher::k_key_size);
    const RecordCipher cipher(key, 1);
    constexpr size_t k_per_thread = 2000;
    // The nonce follows the format byte and the key id.
    auto nonces_of = [&](std::vector<std::string>& out) {
        for (size_t i = 0; i < k_per_thread; ++i) {
            out.push_back(cipher.seal("audit", "k", "same").substr(5, 24));
        }
    };
    std::vector<std::string> here;
    std::vector<std::string> there;
    nonces_of(here);
    std::thread other([&] { nonces_of(there); });
    other.join();
    std::set<std::string> all(here.begin(), here.end());
    all.insert(there.begin(), there.end());
    CHECK(all.size() == 2 * k_per_thread);
}

TEST_CASE("any flipped byte makes a record fail to open", "[crypto]") {
    const auto key = SecureBuffer::random(RecordCipher::k_key_size);
    const RecordCipher cipher(key, 1);
    const std::string sealed = cipher.seal("credentials", "openai", "sk-secret-value");
    for (size_t i = 0; i < sealed.size(); ++i) {
        std::string tampered = sealed;
        tampered[i] = static_cast<char>(tampered[i] ^ 0x01);
        auto opened = cipher.open("credentials", "openai", tampered);
        REQUIRE_FALSE(opened);
        CHECK(opened.error().code == Code::corrupt);
    }
    CHECK_FALSE(cipher.open("credentials", "openai", sealed.substr(0, sealed.size() - 1)));
    CHECK_FALSE(cipher.open("credentials", "openai", ""));
}

TEST_CASE("a record fails to open under another key", "[crypto]") {
    const auto key = SecureBuffer::random(RecordCipher::k_key_size);
    const auto other = SecureBuffer::random(RecordCipher::k_key_size);
    const std::string sealed = RecordCipher(key, 1).seal("users", "alice", "payload");
    CHECK_FALSE(RecordCipher(other, 1).open("users", "alice", sealed));
    // The same key under another key id is another key as far as records are concerned.
    CHECK_FALSE(RecordCipher(key, 2).open("users", "alice", sealed));
}

TEST_CASE("a record moved to another key or table fails to open", "[crypto]") {
    const auto key = SecureBuffer::random(RecordCipher::k_key_size);
    const RecordCipher cipher(key, 1);
    const std::string sealed = cipher.seal("credentials", "openai", "sk-secret-value");
    CHECK(cipher.open("credentials", "openai", sealed));
    CHECK_FALSE(cipher.open("credentials", "github", sealed));
    CHECK_FALSE(cipher.open("users", "openai", sealed));
    // Table and key are separated, so shifting bytes between them does not collide.
    const std::string a = cipher.seal("ab", "c", "v");
    CHECK_FALSE(cipher.open("a", "bc", a));
}

TEST_CASE("lookup hashes are keyed and domain-separated", "[crypto]") {
    const auto key = SecureBuffer::random(RecordCipher::k_key_size);
    const auto other = SecureBuffer::random(RecordCipher::k_key_size);
    const RecordCipher cipher(key, 1);
    const auto h = cipher.lookup_hash("agent-key", "agw_secret");
    CHECK(h == cipher.lookup_hash("agent-key", "agw_secret"));
    CHECK(h != cipher.lookup_hash("data-token", "agw_secret"));
    CHECK(h != cipher.lookup_hash("agent-key", "agw_secreT"));
    CHECK(h != RecordCipher(other, 1).lookup_hash("agent-key", "agw_secret"));
}
