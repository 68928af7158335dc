// AWS Signature Version 4 (header form) for the S3 REST API:
// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dwcp::obs::pprof {

struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // temporary credentials only; sent as x-amz-security-token
};

// The parts of an HTTP request that SigV4 signs.
struct SigV4Request {
  std::string method;  // "GET", "PUT", ...
  std::string path;    // already URI-encoded, as sent: "/bucket/dwcp-v3/node-a/cpu.prof"
  // Decoded query parameters; they are encoded and sorted for signing (and must be sent
  // encoded the same way, see CanonicalQueryString).
  std::vector<std::pair<std::string, std::string>> query;
  // Every header to sign, at least "host" and "x-amz-date"; names in any case.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string payload_sha256;  // lowercase hex SHA-256 of the body ("UNSIGNED-PAYLOAD" allowed)
};

// Lowercase hex of SHA-256(data).
std::string Sha256Hex(std::string_view data);
// Raw HMAC-SHA256(key, data).
std::string HmacSha256(std::string_view key, std::string_view data);
std::string HexEncode(std::string_view bytes);

// RFC 3986 encoding as SigV4 wants it: unreserved characters (A-Z a-z 0-9 - _ . ~) stay,
// everything else becomes %XX (uppercase); '/' stays when `keep_slash`.
std::string UriEncode(std::string_view s, bool keep_slash);

// "a=1&b=x%20y": names and values encoded, sorted by name then value.
std::string CanonicalQueryString(const std::vector<std::pair<std::string, std::string>>& query);

// The canonical request: method, path, query, headers, signed header names, payload hash.
std::string CanonicalRequest(const SigV4Request& request);
// "host;range;x-amz-content-sha256;x-amz-date"
std::string SignedHeaderNames(const SigV4Request& request);

// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request"),
// raw bytes. `date` is YYYYMMDD.
std::string SigningKey(std::string_view secret, std::string_view date, std::string_view region,
                       std::string_view service);

// The Authorization header value for `request` signed at `amz_date` (YYYYMMDDTHHMMSSZ, the
// same value as the request's x-amz-date header):
// "AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request,
//  SignedHeaders=host;x-amz-date,Signature=<hex>".
std::string Authorization(const SigV4Request& request, const AwsCredentials& credentials,
                          std::string_view amz_date, std::string_view region,
                          std::string_view service);

// YYYYMMDDTHHMMSSZ of a Unix time in milliseconds.
std::string AmzDate(int64_t wall_millis);

}  // namespace dwcp::obs::pprof
