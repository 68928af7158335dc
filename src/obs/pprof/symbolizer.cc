#include "obs/pprof/symbolizer.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string_view>

namespace dwcp::obs::pprof {
namespace {

struct Symbol {
  uint64_t addr;
  uint64_t size;
  std::string name;  // mangled
};

// One ELF file's function symbols and the load segments that map file offsets to addresses.
struct ElfSymbols {
  struct Segment {
    uint64_t offset, vaddr, filesz;
  };
  std::vector<Segment> segments;
  std::vector<Symbol> symbols;  // sorted by addr

  const Symbol* Find(uint64_t file_offset) const {
    uint64_t vaddr = 0;
    bool found = false;
    for (const auto& s : segments) {
      if (file_offset >= s.offset && file_offset < s.offset + s.filesz) {
        vaddr = file_offset - s.offset + s.vaddr;
        found = true;
        break;
      }
    }
    if (!found) return nullptr;
    auto it = std::upper_bound(symbols.begin(), symbols.end(), vaddr,
                               [](uint64_t a, const Symbol& s) { return a < s.addr; });
    if (it == symbols.begin()) return nullptr;
    --it;
    // Zero-sized symbols (hand-written assembly) cover up to the next symbol.
    if (it->size != 0 && vaddr >= it->addr + it->size) return nullptr;
    return &*it;
  }
};

bool ReadAt(int fd, uint64_t offset, void* buf, size_t len) {
  auto* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = pread(fd, p, len, static_cast<off_t>(offset));
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return true;
}

std::unique_ptr<ElfSymbols> LoadElf(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  auto out = std::make_unique<ElfSymbols>();
  auto fail = [&]() -> std::unique_ptr<ElfSymbols> {
    close(fd);
    return nullptr;
  };
  Elf64_Ehdr eh;
  if (!ReadAt(fd, 0, &eh, sizeof eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
      eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_shentsize != sizeof(Elf64_Shdr) ||
      eh.e_phentsize != sizeof(Elf64_Phdr)) {
    return fail();
  }
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  if (!ReadAt(fd, eh.e_phoff, ph.data(), ph.size() * sizeof(Elf64_Phdr))) return fail();
  for (const auto& p : ph) {
    if (p.p_type == PT_LOAD) out->segments.push_back({p.p_offset, p.p_vaddr, p.p_filesz});
  }
  std::vector<Elf64_Shdr> sh(eh.e_shnum);
  if (!ReadAt(fd, eh.e_shoff, sh.data(), sh.size() * sizeof(Elf64_Shdr))) return fail();
  const Elf64_Shdr* table = nullptr;
  for (const auto& s : sh) {
    if (s.sh_type == SHT_SYMTAB) table = &s;
  }
  if (table == nullptr) {
    for (const auto& s : sh) {
      if (s.sh_type == SHT_DYNSYM) table = &s;
    }
  }
  if (table == nullptr || table->sh_link >= sh.size() || table->sh_entsize != sizeof(Elf64_Sym)) {
    close(fd);
    return out;  // no symbols: lookups fall back to dladdr
  }
  const Elf64_Shdr& strtab = sh[table->sh_link];
  std::vector<Elf64_Sym> syms(table->sh_size / sizeof(Elf64_Sym));
  std::string strings(strtab.sh_size, '\0');
  if (!ReadAt(fd, table->sh_offset, syms.data(), syms.size() * sizeof(Elf64_Sym)) ||
      !ReadAt(fd, strtab.sh_offset, strings.data(), strings.size())) {
    return fail();
  }
  close(fd);
  out->symbols.reserve(syms.size() / 2);
  for (const auto& s : syms) {
    int type = ELF64_ST_TYPE(s.st_info);
    if ((type != STT_FUNC && type != STT_GNU_IFUNC) || s.st_value == 0 || s.st_shndx == SHN_UNDEF ||
        s.st_name >= strings.size()) {
      continue;
    }
    out->symbols.push_back({s.st_value, s.st_size, std::string(strings.c_str() + s.st_name)});
  }
  std::sort(out->symbols.begin(), out->symbols.end(), [](const Symbol& a, const Symbol& b) {
    // At equal addresses prefer the sized, global name (aliases are common).
    return a.addr != b.addr ? a.addr < b.addr : a.size > b.size;
  });
  out->symbols.erase(std::unique(out->symbols.begin(), out->symbols.end(),
                                 [](const Symbol& a, const Symbol& b) { return a.addr == b.addr; }),
                     out->symbols.end());
  return out;
}

// Symbol tables by "<dev>:<inode>", loaded on first use and kept: the files stay mapped.
const ElfSymbols* CachedElf(const std::string& key, const std::string& file,
                            const std::string& path) {
  static std::mutex mu;
  static auto* cache = new std::map<std::string, std::unique_ptr<ElfSymbols>>();
  std::lock_guard lock(mu);
  auto it = cache->find(key);
  if (it == cache->end()) {
    std::unique_ptr<ElfSymbols> elf = LoadElf(file);
    if (elf == nullptr) elf = LoadElf(path);
    it = cache->emplace(key, std::move(elf)).first;
  }
  return it->second.get();
}

}  // namespace

std::string Demangle(const std::string& name) {
  if (name.rfind("_Z", 0) != 0) return name;
  int status = 0;
  char* out = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  if (status != 0 || out == nullptr) return name;
  std::string result(out);
  std::free(out);
  return result;
}

Symbolizer::Symbolizer() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    unsigned long start = 0, end = 0, offset = 0, inode = 0;
    char perms[8] = {}, dev[32] = {};
    int range_end = 0, path_pos = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx%n %7s %lx %31s %lu %n", &start, &end, &range_end, perms,
                    &offset, dev, &inode, &path_pos) < 6) {
      continue;
    }
    if (perms[2] != 'x' || inode == 0 || path_pos <= 0 ||
        static_cast<size_t>(path_pos) >= line.size() || line[path_pos] != '/') {
      continue;  // not executable, or anonymous ([vdso], JIT pages)
    }
    std::string path = line.substr(path_pos);
    constexpr std::string_view kDeleted = " (deleted)";
    if (path.size() > kDeleted.size() &&
        path.compare(path.size() - kDeleted.size(), kDeleted.size(), kDeleted) == 0) {
      path.resize(path.size() - kDeleted.size());
    }
    mappings_.push_back({start, end, offset, "/proc/self/map_files/" + line.substr(0, range_end),
                         std::string(dev) + ":" + std::to_string(inode), path});
  }
  std::sort(mappings_.begin(), mappings_.end(),
            [](const Mapping& a, const Mapping& b) { return a.start < b.start; });
}

std::string Symbolizer::Symbolize(uintptr_t pc) const {
  auto it = std::upper_bound(mappings_.begin(), mappings_.end(), pc,
                             [](uintptr_t a, const Mapping& m) { return a < m.start; });
  if (it != mappings_.begin()) {
    --it;
    if (pc < it->end) {
      if (const ElfSymbols* elf = CachedElf(it->key, it->file, it->path)) {
        if (const Symbol* s = elf->Find(pc - it->start + it->file_offset)) return Demangle(s->name);
      }
    }
  }
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(pc), &info) != 0 && info.dli_sname != nullptr) {
    return Demangle(info.dli_sname);
  }
  return "";
}

}  // namespace dwcp::obs::pprof

namespace dwcp::obs::pprof {

std::string Symbolizer::Describe(uintptr_t pc) const {
  std::string name = Symbolize(pc);
  if (!name.empty()) return name;
  auto it = std::upper_bound(mappings_.begin(), mappings_.end(), pc,
                             [](uintptr_t a, const Mapping& m) { return a < m.start; });
  if (it == mappings_.begin() || pc >= (it - 1)->end) return "?";
  --it;
  char offset[32];
  std::snprintf(offset, sizeof offset, "+0x%" PRIx64,
                static_cast<uint64_t>(pc - it->start + it->file_offset));
  return it->path.substr(it->path.rfind('/') + 1) + offset;
}

}  // namespace dwcp::obs::pprof
