// Writes the binary seed corpora of the fuzzers (fuzz/corpus/<target>/, docs/fuzzing.md)
// with the real encoders: frames from amst::EncodeFrameHeader, control messages from
// proto/dwcp.proto, v3 batches from hde::PageEncoder, v1 batches from hde::PageBatchEncoder.
// Deterministic: the same tree gives the same files.
//
//   make_fuzz_corpus OUT_DIR     (make fuzz-corpus: OUT_DIR = fuzz/corpus)
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "amst/frame.h"
#include "common/little_endian.h"
#include "dwcp.pb.h"
#include "fuzz/memory_guest.h"
#include "hde/page_codec.h"
#include "hde/page_encoder.h"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using dwcp::wire::Control;

fs::path g_out;

void Write(const std::string& target, const std::string& name, const Bytes& bytes) {
  fs::create_directories(g_out / target);
  std::ofstream(g_out / target / name, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

Bytes Serialize(const Control& c) {
  std::string s = c.SerializeAsString();
  return Bytes(s.begin(), s.end());
}

std::vector<Control> Conversation() {
  std::vector<Control> out;
  Control c;
  c.mutable_hello()->set_node_id("node-a");
  c.mutable_hello()->add_versions(3);
  c.mutable_hello()->add_versions(1);
  out.push_back(c);
  c.Clear();
  c.mutable_hello_ack()->set_node_id("node-b");
  c.mutable_hello_ack()->set_version(3);
  out.push_back(c);
  c.Clear();
  auto* b = c.mutable_begin();  // matches the store of fuzz/control_fuzzer.cc
  b->set_migration_id("mig-1");
  b->set_vm_id("vm-1");
  b->set_memory_bytes(64 * 4096);
  b->set_page_size(4096);
  b->set_dirty_rate(1 << 20);
  b->set_seed(42);
  b->set_epoch(7);
  b->set_source_node("node-a");
  b->set_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  out.push_back(c);
  c.Clear();
  c.mutable_ready()->set_ok(true);
  c.mutable_ready()->set_stream_token("0123456789abcdef0123456789abcdef");
  c.mutable_ready()->set_max_streams(4);
  out.push_back(c);
  c.Clear();
  c.mutable_round_begin()->set_round(1);
  c.mutable_round_begin()->set_pages(64);
  out.push_back(c);
  c.Clear();
  c.mutable_complete()->set_digest("00112233445566778899aabbccddeeff");
  c.mutable_complete()->set_rounds(2);
  c.mutable_complete()->set_pages_sent(80);
  c.mutable_complete()->set_batches(6);
  out.push_back(c);
  c.Clear();
  c.mutable_verified()->set_ok(true);
  c.mutable_verified()->set_digest("00112233445566778899aabbccddeeff");
  out.push_back(c);
  c.Clear();
  c.mutable_commit()->set_epoch(8);
  out.push_back(c);
  c.Clear();
  c.mutable_resumed()->set_ok(true);
  out.push_back(c);
  c.Clear();
  c.mutable_abort()->set_reason("operator cancelled");
  out.push_back(c);
  c.Clear();
  c.mutable_stream_join()->set_migration_id("mig-1");
  c.mutable_stream_join()->set_stream_token("0123456789abcdef0123456789abcdef");
  c.mutable_stream_join()->set_stream_index(1);
  c.mutable_stream_join()->set_version(3);
  out.push_back(c);
  c.Clear();
  c.mutable_stream_join_ack()->set_ok(false);
  c.mutable_stream_join_ack()->set_error("wrong token");
  out.push_back(c);
  c.Clear();
  c.mutable_stream_end()->set_batches(3);
  out.push_back(c);
  return out;
}

void AppendFrame(Bytes* out, uint8_t protocol, dwcp::amst::FrameType type, uint32_t seq,
                 const Bytes& payload) {
  auto h = dwcp::amst::EncodeFrameHeader(protocol, type, seq, payload);
  out->insert(out->end(), h.begin(), h.end());
  out->insert(out->end(), payload.begin(), payload.end());
}

// A 64-page source guest: distinct pages, zero pages and duplicates.
dwcp::fuzz::MemoryGuest SourceGuest() {
  dwcp::fuzz::MemoryGuest g(64);
  g.Fill();
  for (uint64_t i = 5; i < 64; i += 8) g.WritePage(i, g.PageData(0));  // dedup candidates
  return g;
}

// Round 1 (the first `pages` pages) and round 2 (a few of them changed by a few bytes:
// deltas) as the hde_batch fuzzer's input: flags byte, then (u32 length, payload) per batch.
Bytes HdeSequence(dwcp::hde::CodecPolicy codec, uint32_t batch_pages, uint64_t pages,
                  bool two_rounds) {
  dwcp::fuzz::MemoryGuest guest = SourceGuest();
  dwcp::hde::EncoderConfig config;
  config.codec = codec;
  config.explore_every = 0;
  dwcp::hde::PageEncoder encoder(config, guest.page_count());
  Bytes out = {0};
  auto add = [&](uint32_t round, const std::vector<uint64_t>& pages) {
    for (size_t i = 0; i < pages.size(); i += batch_pages) {
      std::vector<uint64_t> part(pages.begin() + i,
                                 pages.begin() + std::min(pages.size(), i + batch_pages));
      auto batch = encoder.Encode(round, part, guest, 1e9);
      if (!batch.ok()) {
        std::fprintf(stderr, "encode: %s\n", batch.status().ToString().c_str());
        std::exit(1);
      }
      uint8_t len[4];
      dwcp::le::Put32(len, static_cast<uint32_t>(batch->payload().size()));
      out.insert(out.end(), len, len + 4);
      out.insert(out.end(), batch->payload().begin(), batch->payload().end());
    }
  };
  std::vector<uint64_t> all(pages);
  for (uint64_t i = 0; i < all.size(); ++i) all[i] = i;
  add(1, all);
  if (two_rounds) {
    std::vector<uint64_t> dirty = {1, 2, 9, 17, 40};
    std::erase_if(dirty, [&](uint64_t p) { return p >= pages; });
    for (uint64_t p : dirty) {
      std::vector<uint8_t> page(guest.PageData(p), guest.PageData(p) + 4096);
      page[100] ^= 0x5a;
      page[2000] ^= 0xa5;
      guest.WritePage(p, page.data());
    }
    add(2, dirty);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  g_out = argv[1];
  const auto messages = Conversation();

  // control: one message per file.
  for (size_t i = 0; i < messages.size(); ++i) {
    Write("control_fuzzer", "msg-" + std::to_string(i), Serialize(messages[i]));
  }

  // frame: the source's side of a conversation as a receiver reads it (flags byte first).
  {
    Bytes s = {0};
    AppendFrame(&s, 0, dwcp::amst::FrameType::kControl, 0, Serialize(messages[0]));
    Write("frame_fuzzer", "hello", s);
    Bytes v3 = {2};  // negotiated protocol 3
    uint32_t seq = 0;
    AppendFrame(&v3, 3, dwcp::amst::FrameType::kControl, seq++, Serialize(messages[2]));
    AppendFrame(&v3, 3, dwcp::amst::FrameType::kControl, seq++, Serialize(messages[4]));
    Bytes batch = HdeSequence(dwcp::hde::CodecPolicy::kLz4, 8, 64, false);
    Bytes first(batch.begin() + 5, batch.begin() + 5 + dwcp::le::Get32(&batch[1]));
    AppendFrame(&v3, 3, dwcp::amst::FrameType::kPages, seq++, first);
    AppendFrame(&v3, 3, dwcp::amst::FrameType::kControl, seq++, Serialize(messages[5]));
    Write("frame_fuzzer", "v3-round", v3);
    Bytes empty = {1};
    AppendFrame(&empty, 0, dwcp::amst::FrameType::kControl, 0, {});
    Write("frame_fuzzer", "empty-payload-sealed", empty);
  }

  // hde_batch: round 1 and 2 with each codec and batch size.
  Write("hde_batch_fuzzer", "none-12-pages",
        HdeSequence(dwcp::hde::CodecPolicy::kNone, 4, 12, true));
  Write("hde_batch_fuzzer", "lz4-64-pages",
        HdeSequence(dwcp::hde::CodecPolicy::kLz4, 16, 64, true));
  Write("hde_batch_fuzzer", "zstd-64-pages",
        HdeSequence(dwcp::hde::CodecPolicy::kZstd, 64, 64, true));
  Write("hde_batch_fuzzer", "auto-10-pages",
        HdeSequence(dwcp::hde::CodecPolicy::kAuto, 4, 10, true));

  // page_batch_v1: raw and zero pages as v1 sends them (and v3's zero marking).
  {
    dwcp::fuzz::MemoryGuest guest = SourceGuest();
    dwcp::hde::PageBatchEncoder raw(false), zero(true);
    raw.Reset(1);
    zero.Reset(2);
    for (uint64_t i : {0, 1, 3, 63}) {
      raw.Add(i, guest.PageData(i));
      zero.Add(i, guest.PageData(i));
    }
    auto r = raw.Finish();
    Write("page_batch_v1_fuzzer", "raw", Bytes(r.begin(), r.end()));
    auto z = zero.Finish();
    Write("page_batch_v1_fuzzer", "zero", Bytes(z.begin(), z.end()));
    raw.Reset(3);
    auto e = raw.Finish();
    Write("page_batch_v1_fuzzer", "empty", Bytes(e.begin(), e.end()));
  }
  return 0;
}
