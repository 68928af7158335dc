// Names the functions at code addresses of this process, for /debug/pprof/symbol (what
// google-pprof asks when it has no binary) and for the human-readable profiles. Reads the
// ELF symbol tables (.symtab, else .dynsym) of the objects mapped in /proc/self/maps, so
// functions that are not exported are named too; falls back to dladdr.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dwcp::obs::pprof {

// A snapshot of the process's executable mappings, taken at construction; symbol tables are
// loaded once per mapped file (by device and inode, so a binary rebuilt on disk while the
// process runs is still read from what is mapped) and cached for the life of the process. Not
// thread-safe itself; the shared cache behind it is.
class Symbolizer {
 public:
  Symbolizer();

  // The demangled name of the function containing `pc` ("dwcp::Foo::Bar(int)"), or "" when
  // no symbol covers it.
  std::string Symbolize(uintptr_t pc) const;
  // Symbolize(pc), else "libc.so.6+0x8a4a3" (file name and offset), else "?".
  std::string Describe(uintptr_t pc) const;

 private:
  struct Mapping {
    uintptr_t start;
    uintptr_t end;
    uint64_t file_offset;
    std::string file;  // /proc/self/map_files/<range>: the mapped file even if replaced since
    std::string key;   // "<dev>:<inode>", the symbol cache's key
    std::string path;  // as /proc/self/maps names it, the fallback for `file`
  };
  std::vector<Mapping> mappings_;  // executable, file-backed; sorted by start
};

// Demangles an Itanium C++ ABI name; returns it unchanged when it is not one.
std::string Demangle(const std::string& name);

}  // namespace dwcp::obs::pprof
