// The web dashboard (web/, docs/dashboard.md), compiled into dwcpd: the build runs Vite and
// cmake/build_web_assets.cmake turns every built file into a WebAsset. dwcpd serves it at "/"
// (index.html) and "/assets/..." (content-hashed scripts and styles).
#pragma once

#include <cstddef>
#include <string_view>

namespace httplib {
struct Request;
struct Response;
}  // namespace httplib

namespace dwcp::api {

// One built file. Static storage; never changes while the process runs.
struct WebAsset {
  const char* path;           // "/index.html", "/assets/index-Bx9a3kQe.js"
  const unsigned char* data;  // `size` bytes
  size_t size;
  const char* etag;  // strong ETag, quoted: a prefix of the content's SHA-256

  std::string_view body() const { return {reinterpret_cast<const char*>(data), size}; }
};

// Defined by the generated web_assets_data.cc.
extern const WebAsset kWebAssets[];
extern const size_t kWebAssetCount;

// The embedded file at `path` ("/" means "/index.html"), or nullptr. Thread-safe.
const WebAsset* FindWebAsset(std::string_view path);

// The Content-Type for a file name by its extension; application/octet-stream if unknown.
std::string_view WebContentType(std::string_view path);

// The Cache-Control for an embedded file: Vite's content-hashed files under /assets/ never
// change under their name (immutable for a year); everything else is revalidated each time.
std::string_view WebCacheControl(std::string_view path);

// Answers GET of the dashboard: the file with its content type, ETag and Cache-Control, or
// 304 when If-None-Match carries its ETag, or a JSON 404.
void ServeWebAsset(const httplib::Request& req, httplib::Response& res);

}  // namespace dwcp::api
