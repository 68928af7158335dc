#include "obs/pprof/profile_store.h"

#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

namespace dwcp::obs::pprof {
namespace {

namespace fs = std::filesystem;

// Keys are relative paths of plain segments.
Status CheckKey(const std::string& key) {
  if (key.empty() || key.front() == '/' || key.back() == '/') {
    return InvalidArgument("bad profile key '" + key + "'");
  }
  std::istringstream segments(key);
  std::string seg;
  while (std::getline(segments, seg, '/')) {
    if (seg.empty() || seg == "." || seg == "..") {
      return InvalidArgument("bad profile key '" + key + "'");
    }
  }
  return Status::Ok();
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string XmlUnescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    auto semi = s.find(';', i);
    if (semi == std::string_view::npos) {
      out += s[i];
      continue;
    }
    std::string_view ent = s.substr(i + 1, semi - i - 1);
    if (ent == "amp")
      out += '&';
    else if (ent == "lt")
      out += '<';
    else if (ent == "gt")
      out += '>';
    else if (ent == "quot")
      out += '"';
    else if (ent == "apos")
      out += '\'';
    else if (!ent.empty() && ent[0] == '#') {
      unsigned long cp = ent.size() > 1 && (ent[1] == 'x' || ent[1] == 'X')
                             ? std::strtoul(std::string(ent.substr(2)).c_str(), nullptr, 16)
                             : std::strtoul(std::string(ent.substr(1)).c_str(), nullptr, 10);
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      }
    } else {
      out += s.substr(i, semi - i + 1);
    }
    i = semi;
  }
  return out;
}

// The text of every <tag>...</tag> in `xml`, unescaped. Enough for S3's flat responses.
std::vector<std::string> XmlValues(const std::string& xml, const std::string& tag) {
  std::vector<std::string> out;
  std::string open = "<" + tag + ">", close = "</" + tag + ">";
  size_t pos = 0;
  while ((pos = xml.find(open, pos)) != std::string::npos) {
    size_t start = pos + open.size();
    size_t end = xml.find(close, start);
    if (end == std::string::npos) break;
    out.push_back(XmlUnescape(std::string_view(xml).substr(start, end - start)));
    pos = end + close.size();
  }
  return out;
}

std::string XmlValue(const std::string& xml, const std::string& tag) {
  auto v = XmlValues(xml, tag);
  return v.empty() ? "" : v.front();
}

}  // namespace

// --- FileProfileStore ---------------------------------------------------------------------

FileProfileStore::FileProfileStore(std::string root) : root_(std::move(root)) {
  while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
}

Status FileProfileStore::Put(const std::string& key, std::string_view data) {
  DWCP_RETURN_IF_ERROR(CheckKey(key));
  fs::path path = fs::path(root_) / key;
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) return Unavailable("cannot create " + path.parent_path().string() + ": " + ec.message());
  fs::path tmp = path;
  tmp += ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) {
      fs::remove(tmp, ec);
      return Unavailable("cannot write " + tmp.string());
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return Unavailable("cannot rename into " + path.string() + ": " + ec.message());
  }
  return Status::Ok();
}

Result<std::string> FileProfileStore::Get(const std::string& key) {
  DWCP_RETURN_IF_ERROR(CheckKey(key));
  std::ifstream in(fs::path(root_) / key, std::ios::binary);
  if (!in) return Status(NotFound("no profile " + key + " in " + Describe()));
  std::ostringstream data;
  data << in.rdbuf();
  return data.str();
}

Result<std::vector<std::string>> FileProfileStore::List(const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::exists(root_, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(root_, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    std::string rel = fs::relative(it->path(), root_, ec).generic_string();
    if (ec) break;
    if (rel.find(".tmp.") != std::string::npos) continue;
    if (rel.compare(0, prefix.size(), prefix) == 0) out.push_back(rel);
  }
  if (ec) return Status(Unavailable("cannot list " + root_ + ": " + ec.message()));
  std::sort(out.begin(), out.end());
  return out;
}

Status FileProfileStore::Delete(const std::string& key) {
  DWCP_RETURN_IF_ERROR(CheckKey(key));
  std::error_code ec;
  fs::remove(fs::path(root_) / key, ec);
  if (ec) return Unavailable("cannot delete " + key + " from " + Describe() + ": " + ec.message());
  return Status::Ok();
}

// --- S3ProfileStore -----------------------------------------------------------------------

S3Options S3Options::FromEnv() {
  S3Options o;
  o.endpoint = Env("AWS_ENDPOINT_URL_S3");
  if (o.endpoint.empty()) o.endpoint = Env("AWS_ENDPOINT_URL");
  o.region = Env("AWS_REGION");
  if (o.region.empty()) o.region = Env("AWS_DEFAULT_REGION");
  if (o.region.empty()) o.region = "us-east-1";
  o.credentials.access_key_id = Env("AWS_ACCESS_KEY_ID");
  o.credentials.secret_access_key = Env("AWS_SECRET_ACCESS_KEY");
  o.credentials.session_token = Env("AWS_SESSION_TOKEN");
  return o;
}

S3ProfileStore::S3ProfileStore(S3Options options, std::string bucket, std::string prefix,
                               const Clock& clock)
    : options_(std::move(options)),
      bucket_(std::move(bucket)),
      prefix_(std::move(prefix)),
      clock_(clock) {
  std::string endpoint = options_.endpoint.empty()
                             ? "https://s3." + options_.region + ".amazonaws.com"
                             : options_.endpoint;
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  scheme_host_port_ = endpoint;
  auto scheme_end = endpoint.find("://");
  std::string scheme = scheme_end == std::string::npos ? "http" : endpoint.substr(0, scheme_end);
  host_header_ = scheme_end == std::string::npos ? endpoint : endpoint.substr(scheme_end + 3);
  // The Host header carries the port only when it is not the scheme's default.
  if ((scheme == "https" && host_header_.size() > 4 &&
       host_header_.compare(host_header_.size() - 4, 4, ":443") == 0) ||
      (scheme == "http" && host_header_.size() > 3 &&
       host_header_.compare(host_header_.size() - 3, 3, ":80") == 0)) {
    host_header_.resize(host_header_.rfind(':'));
  }
}

S3ProfileStore::~S3ProfileStore() = default;

Result<S3ProfileStore::Response> S3ProfileStore::Send(
    const std::string& method, const std::string& key,
    std::vector<std::pair<std::string, std::string>> query, std::string_view body) {
  std::string path = "/" + UriEncode(bucket_, false) + "/" + UriEncode(key, true);
  if (key.empty()) path = "/" + UriEncode(bucket_, false);
  std::string amz_date = AmzDate(clock_.WallMillis());
  SigV4Request sig;
  sig.method = method;
  sig.path = path;
  sig.query = query;
  sig.payload_sha256 = Sha256Hex(body);
  sig.headers = {{"host", host_header_},
                 {"x-amz-date", amz_date},
                 {"x-amz-content-sha256", sig.payload_sha256}};
  if (!options_.credentials.session_token.empty()) {
    sig.headers.emplace_back("x-amz-security-token", options_.credentials.session_token);
  }
  httplib::Headers headers;
  for (const auto& [k, v] : sig.headers) headers.emplace(k == "host" ? "Host" : k, v);
  headers.emplace("Authorization",
                  Authorization(sig, options_.credentials, amz_date, options_.region, "s3"));

  std::string target = path;
  std::string qs = CanonicalQueryString(query);
  if (!qs.empty()) target += "?" + qs;

  httplib::Client client(scheme_host_port_);
  if (!client.is_valid()) {
    return Status(InvalidArgument("bad S3 endpoint '" + scheme_host_port_ + "'"));
  }
  client.set_url_encode(false);  // the path is sent exactly as it was signed
  client.set_connection_timeout(std::chrono::seconds(5));
  client.set_read_timeout(std::chrono::seconds(30));
  client.set_write_timeout(std::chrono::seconds(30));
  httplib::Result res = method == "PUT"      ? client.Put(target.c_str(), headers, body.data(),
                                                          body.size(), "application/octet-stream")
                        : method == "DELETE" ? client.Delete(target.c_str(), headers)
                                             : client.Get(target.c_str(), headers);
  if (!res) {
    return Status(Unavailable("S3 " + method + " " + scheme_host_port_ + target +
                              " failed: " + httplib::to_string(res.error())));
  }
  return Response{res->status, res->body};
}

Status S3ProfileStore::ErrorOf(const std::string& what, const Response& r) const {
  std::string code = XmlValue(r.body, "Code");
  std::string message = XmlValue(r.body, "Message");
  std::string text = what + " in " + Describe() + ": HTTP " + std::to_string(r.status) +
                     (code.empty() ? "" : " " + code) + (message.empty() ? "" : ": " + message);
  if (r.status == 401 || r.status == 403) return Status(StatusCode::kUnauthenticated, text);
  if (r.status == 404) return NotFound(text);
  if (r.status == 400) return InvalidArgument(text);
  return Unavailable(text);
}

Status S3ProfileStore::Put(const std::string& key, std::string_view data) {
  DWCP_RETURN_IF_ERROR(CheckKey(key));
  auto r = Send("PUT", prefix_ + key, {}, data);
  if (!r.ok()) return r.status();
  if (r->status / 100 != 2) return ErrorOf("PUT " + key, *r);
  return Status::Ok();
}

Result<std::string> S3ProfileStore::Get(const std::string& key) {
  DWCP_RETURN_IF_ERROR(CheckKey(key));
  auto r = Send("GET", prefix_ + key, {}, "");
  if (!r.ok()) return r.status();
  if (r->status / 100 != 2) return ErrorOf("GET " + key, *r);
  return std::move(r->body);
}

Result<std::vector<std::string>> S3ProfileStore::List(const std::string& prefix) {
  std::vector<std::string> out;
  std::string token;
  for (int page = 0; page < 10000; ++page) {
    std::vector<std::pair<std::string, std::string>> query = {{"list-type", "2"},
                                                              {"prefix", prefix_ + prefix}};
    if (!token.empty()) query.emplace_back("continuation-token", token);
    auto r = Send("GET", "", std::move(query), "");
    if (!r.ok()) return r.status();
    if (r->status / 100 != 2) return ErrorOf("ListObjectsV2 " + prefix, *r);
    for (std::string& k : XmlValues(r->body, "Key")) {
      if (k.compare(0, prefix_.size(), prefix_) == 0) out.push_back(k.substr(prefix_.size()));
    }
    if (XmlValue(r->body, "IsTruncated") != "true") break;
    token = XmlValue(r->body, "NextContinuationToken");
    if (token.empty()) break;
  }
  std::sort(out.begin(), out.end());
  return out;
}

Status S3ProfileStore::Delete(const std::string& key) {
  DWCP_RETURN_IF_ERROR(CheckKey(key));
  auto r = Send("DELETE", prefix_ + key, {}, "");
  if (!r.ok()) return r.status();
  if (r->status / 100 != 2 && r->status != 404) return ErrorOf("DELETE " + key, *r);
  return Status::Ok();
}

// --- OpenProfileStore ---------------------------------------------------------------------

Result<std::unique_ptr<ProfileStore>> OpenProfileStore(const std::string& url, const S3Options* s3,
                                                       const Clock& clock) {
  constexpr std::string_view kFile = "file://", kS3 = "s3://";
  if (url.rfind(kFile, 0) == 0) {
    std::string path = url.substr(kFile.size());
    if (path.empty() || path[0] != '/') {
      return Status(
          InvalidArgument("profiling.storage '" + url +
                          "' must name an absolute directory: file:///var/lib/dwcp/profiles/"));
    }
    return std::unique_ptr<ProfileStore>(std::make_unique<FileProfileStore>(path));
  }
  if (url.rfind(kS3, 0) == 0) {
    std::string rest = url.substr(kS3.size());
    auto slash = rest.find('/');
    std::string bucket = rest.substr(0, slash);
    std::string prefix = slash == std::string::npos ? "" : rest.substr(slash + 1);
    if (bucket.empty()) {
      return Status(InvalidArgument("profiling.storage '" + url + "' names no bucket"));
    }
    if (!prefix.empty() && prefix.back() != '/') prefix += '/';
    S3Options options = s3 ? *s3 : S3Options::FromEnv();
    if (options.credentials.access_key_id.empty() ||
        options.credentials.secret_access_key.empty()) {
      return Status(InvalidArgument("profiling.storage '" + url +
                                    "' needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"));
    }
    return std::unique_ptr<ProfileStore>(
        std::make_unique<S3ProfileStore>(std::move(options), bucket, prefix, clock));
  }
  return Status(InvalidArgument("profiling.storage '" + url +
                                "' must be file:///dir/ or s3://bucket/prefix/"));
}

}  // namespace dwcp::obs::pprof
