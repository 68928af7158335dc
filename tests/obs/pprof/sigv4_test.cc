// AWS Signature V4 against the examples AWS publishes: the signing-key derivation example,
// the SigV4 test suite's get-vanilla, and the S3 API reference's GET Object, PUT Object and
// ListObjects examples (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html).
#include "obs/pprof/sigv4.h"

#include <gtest/gtest.h>

namespace dwcp::obs::pprof {
namespace {

constexpr char kEmptySha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

TEST(S3SigV4Test, Sha256AndHmac) {
  EXPECT_EQ(Sha256Hex(""), kEmptySha256);
  // RFC 4231 test case 2.
  EXPECT_EQ(HexEncode(HmacSha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(S3SigV4Test, SigningKeyDerivationExamples) {
  EXPECT_EQ(HexEncode(SigningKey("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215",
                                 "us-east-1", "iam")),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
  EXPECT_EQ(HexEncode(SigningKey("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830",
                                 "us-east-1", "iam")),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
}

TEST(S3SigV4Test, TestSuiteGetVanilla) {
  SigV4Request r;
  r.method = "GET";
  r.path = "/";
  r.headers = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
  r.payload_sha256 = kEmptySha256;
  EXPECT_EQ(CanonicalRequest(r),
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
            "host;x-amz-date\n" +
                std::string(kEmptySha256));
  AwsCredentials creds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""};
  EXPECT_EQ(Authorization(r, creds, "20150830T123600Z", "us-east-1", "service"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,"
            "SignedHeaders=host;x-amz-date,"
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

const AwsCredentials kS3Example{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                ""};

TEST(S3SigV4Test, S3GetObjectExample) {
  SigV4Request r;
  r.method = "GET";
  r.path = "/test.txt";
  r.payload_sha256 = kEmptySha256;
  r.headers = {{"Host", "examplebucket.s3.amazonaws.com"},
               {"Range", "bytes=0-9"},
               {"x-amz-content-sha256", kEmptySha256},
               {"x-amz-date", "20130524T000000Z"}};
  EXPECT_EQ(Authorization(r, kS3Example, "20130524T000000Z", "us-east-1", "s3"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(S3SigV4Test, S3PutObjectExample) {
  std::string body = "Welcome to Amazon S3.";
  SigV4Request r;
  r.method = "PUT";
  r.path = "/" + UriEncode("test$file.text", true);
  EXPECT_EQ(r.path, "/test%24file.text");
  r.payload_sha256 = Sha256Hex(body);
  EXPECT_EQ(r.payload_sha256, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  r.headers = {{"Host", "examplebucket.s3.amazonaws.com"},
               {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
               {"x-amz-date", "20130524T000000Z"},
               {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
               {"x-amz-content-sha256", r.payload_sha256}};
  EXPECT_EQ(SignedHeaderNames(r), "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class");
  EXPECT_EQ(Authorization(r, kS3Example, "20130524T000000Z", "us-east-1", "s3"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,"
            "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

TEST(S3SigV4Test, S3ListObjectsExample) {
  SigV4Request r;
  r.method = "GET";
  r.path = "/";
  r.query = {{"prefix", "J"}, {"max-keys", "2"}};  // sorted for signing
  r.payload_sha256 = kEmptySha256;
  r.headers = {{"Host", "examplebucket.s3.amazonaws.com"},
               {"x-amz-date", "20130524T000000Z"},
               {"x-amz-content-sha256", kEmptySha256}};
  EXPECT_EQ(CanonicalQueryString(r.query), "max-keys=2&prefix=J");
  EXPECT_EQ(Authorization(r, kS3Example, "20130524T000000Z", "us-east-1", "s3"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;x-amz-content-sha256;x-amz-date,"
            "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST(S3SigV4Test, EncodingAndDates) {
  EXPECT_EQ(UriEncode("a b/c~d_e.f-g+h=", false), "a%20b%2Fc~d_e.f-g%2Bh%3D");
  EXPECT_EQ(UriEncode("node-a/cpu-20251110T180000.000Z.prof", true),
            "node-a/cpu-20251110T180000.000Z.prof");
  EXPECT_EQ(CanonicalQueryString({{"b", "2"}, {"a", "x y"}, {"a", "1"}}), "a=1&a=x%20y&b=2");
  EXPECT_EQ(AmzDate(1369353600000), "20130524T000000Z");
  // Header values are trimmed and inner runs of spaces collapsed.
  SigV4Request r;
  r.method = "GET";
  r.path = "/";
  r.headers = {{"My-Header", "  a   b  "}, {"host", "h"}};
  r.payload_sha256 = kEmptySha256;
  EXPECT_NE(CanonicalRequest(r).find("my-header:a b\n"), std::string::npos) << CanonicalRequest(r);
}

}  // namespace
}  // namespace dwcp::obs::pprof
