// Where the continuous profiler keeps its profiles: a local directory (file:///path/) or an
// S3 bucket (s3://bucket/prefix/, any S3-compatible endpoint, path-style requests signed with
// AWS Signature V4). Keys are relative to the store's root: "node-a/cpu-20251110T180000.000Z.prof".
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "obs/pprof/sigv4.h"

namespace dwcp::obs::pprof {

// Implementations are thread-compatible: one caller at a time.
class ProfileStore {
 public:
  virtual ~ProfileStore() = default;
  // Stores `data` under `key`, replacing what was there. Readers never see a partial object.
  virtual Status Put(const std::string& key, std::string_view data) = 0;
  // The object under `key`; NotFound when there is none.
  virtual Result<std::string> Get(const std::string& key) = 0;
  // Every key starting with `prefix`, sorted.
  virtual Result<std::vector<std::string>> List(const std::string& prefix) = 0;
  // Removes `key`; OK when it does not exist.
  virtual Status Delete(const std::string& key) = 0;
  // The store's URL, for logs: "file:///var/lib/dwcp/profiles/", "s3://bucket/prefix/".
  virtual std::string Describe() const = 0;
};

// A directory; keys map to files below it, their '/' to subdirectories (created on Put).
class FileProfileStore final : public ProfileStore {
 public:
  explicit FileProfileStore(std::string root);
  Status Put(const std::string& key, std::string_view data) override;
  Result<std::string> Get(const std::string& key) override;
  Result<std::vector<std::string>> List(const std::string& prefix) override;
  Status Delete(const std::string& key) override;
  std::string Describe() const override { return "file://" + root_ + "/"; }

 private:
  std::string root_;  // no trailing '/'
};

// How to reach S3.
struct S3Options {
  // Scheme, host and port: "http://127.0.0.1:4568". Empty: https://s3.<region>.amazonaws.com.
  std::string endpoint;
  std::string region = "us-east-1";
  AwsCredentials credentials;

  // AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION or AWS_DEFAULT_REGION (default
  // us-east-1), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
  static S3Options FromEnv();
};

// An S3 bucket (or a prefix in it). Requests are path-style (endpoint/bucket/key), time out
// after 30 s, and are signed with `clock`'s wall time.
class S3ProfileStore final : public ProfileStore {
 public:
  // `prefix` is "" or ends in '/'.
  S3ProfileStore(S3Options options, std::string bucket, std::string prefix,
                 const Clock& clock = RealClock::Instance());
  ~S3ProfileStore() override;
  Status Put(const std::string& key, std::string_view data) override;
  Result<std::string> Get(const std::string& key) override;
  // ListObjectsV2, following continuation tokens.
  Result<std::vector<std::string>> List(const std::string& prefix) override;
  Status Delete(const std::string& key) override;
  std::string Describe() const override { return "s3://" + bucket_ + "/" + prefix_; }

 private:
  struct Response {
    int status = 0;
    std::string body;
  };
  // Signs and sends one request; Unavailable when no HTTP response came back.
  Result<Response> Send(const std::string& method, const std::string& key,
                        std::vector<std::pair<std::string, std::string>> query,
                        std::string_view body);
  // A Status for a non-2xx S3 response, with S3's <Code> and <Message>.
  Status ErrorOf(const std::string& what, const Response& r) const;

  S3Options options_;
  std::string bucket_;
  std::string prefix_;
  const Clock& clock_;
  std::string scheme_host_port_;  // "http://127.0.0.1:4568"
  std::string host_header_;       // "127.0.0.1:4568"
};

// Opens "file:///absolute/dir/" or "s3://bucket/prefix/" (S3 settings from S3Options::FromEnv
// unless `s3` is given). InvalidArgument for any other URL.
Result<std::unique_ptr<ProfileStore>> OpenProfileStore(const std::string& url,
                                                       const S3Options* s3 = nullptr,
                                                       const Clock& clock = RealClock::Instance());

}  // namespace dwcp::obs::pprof
