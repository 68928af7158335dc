// Comparing secrets (tokens, passwords) without leaking them through timing.
#pragma once

#include <string_view>

namespace dwcp {

// True iff `presented` equals `secret`. Compares SHA-256 digests with CRYPTO_memcmp, so
// neither the content nor the length of the secret leaks through timing. An empty secret
// matches nothing.
bool SecretEquals(std::string_view presented, std::string_view secret);

// The credentials of an "Authorization" header value of the Bearer scheme (the scheme
// case-insensitive), or an empty view when the header is absent or of another scheme.
std::string_view BearerCredentials(std::string_view authorization);

}  // namespace dwcp
