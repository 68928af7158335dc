#include "api/web_assets.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

namespace dwcp::api {
namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// True when the comma-separated If-None-Match list names `etag` (or is "*").
bool EtagMatches(std::string_view if_none_match, std::string_view etag) {
  while (!if_none_match.empty()) {
    size_t comma = if_none_match.find(',');
    std::string_view item = if_none_match.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.starts_with("W/")) item.remove_prefix(2);
    if (item == "*" || item == etag) return true;
    if (comma == std::string_view::npos) break;
    if_none_match.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

const WebAsset* FindWebAsset(std::string_view path) {
  if (path == "/") path = "/index.html";
  for (size_t i = 0; i < kWebAssetCount; ++i) {
    if (kWebAssets[i].path == path) return &kWebAssets[i];
  }
  return nullptr;
}

std::string_view WebContentType(std::string_view path) {
  struct Type {
    std::string_view extension, type;
  };
  static constexpr Type kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".woff2", "font/woff2"},
      {".txt", "text/plain; charset=utf-8"},
      {".map", "application/json"},
  };
  for (const Type& t : kTypes) {
    if (EndsWith(path, t.extension)) return t.type;
  }
  return "application/octet-stream";
}

std::string_view WebCacheControl(std::string_view path) {
  if (path.starts_with("/assets/")) return "public, max-age=31536000, immutable";
  return "no-cache";
}

void ServeWebAsset(const httplib::Request& req, httplib::Response& res) {
  const WebAsset* asset = FindWebAsset(req.path);
  if (asset == nullptr) {
    res.status = 404;
    res.set_content(
        nlohmann::json({{"error", "no such file: " + req.path}, {"code", "not_found"}}).dump(),
        "application/json");
    return;
  }
  res.set_header("ETag", asset->etag);
  res.set_header("Cache-Control", std::string(WebCacheControl(asset->path)));
  res.set_header("X-Content-Type-Options", "nosniff");
  if (EtagMatches(req.get_header_value("If-None-Match"), asset->etag)) {
    res.status = 304;
    return;
  }
  res.status = 200;
  // httplib copies the body; the files are small (the whole page is ~100 KiB).
  res.set_content(asset->body().data(), asset->size, std::string(WebContentType(asset->path)));
}

}  // namespace dwcp::api
