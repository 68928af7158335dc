// dwcp-guest: the memory-dirtying workload of the project's test guest (scripts/build-guest.sh,
// docs/qemu.md). Runs inside the guest, started by its init.
//
// It allocates mem_mib MiB and writes every page once, then every tick_ms it dirties
// dirty_mib_s * tick_ms / 1000 worth of pages (one write of a page's header dirties the
// page), checks every page's header against what it last wrote there, and prints one line
// to the console:
//
//   dwcp-guest counter=<ticks> dirtied_mib=<total> bad_pages=<total>
//
// The counter lives in guest memory and advances only while the guest's vCPUs run, so a test
// sees a paused guest stop and a migrated guest continue where it left off; bad_pages counts
// pages whose content was not what the guest wrote (a broken migration).
//
// Settings come from the kernel command line (dwcp.mem_mib=64 dwcp.dirty_mib_s=8
// dwcp.tick_ms=100), and may be overridden by arguments of the same form without the prefix
// (mem_mib=16).
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { kPageSize = 4096 };

struct Settings {
  unsigned long mem_mib;
  unsigned long dirty_mib_s;
  unsigned long tick_ms;
};

static void ApplySetting(struct Settings* s, const char* key, const char* value) {
  char* end = NULL;
  errno = 0;
  unsigned long v = strtoul(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0') {
    printf("dwcp-guest: ignoring %s=%s (not a number)\n", key, value);
    return;
  }
  if (strcmp(key, "mem_mib") == 0) {
    s->mem_mib = v;
  } else if (strcmp(key, "dirty_mib_s") == 0) {
    s->dirty_mib_s = v;
  } else if (strcmp(key, "tick_ms") == 0) {
    s->tick_ms = v;
  }
}

// Applies "key=value" (with `prefix` stripped when given) to the settings.
static void ApplyWord(struct Settings* s, char* word, const char* prefix) {
  if (prefix != NULL) {
    size_t n = strlen(prefix);
    if (strncmp(word, prefix, n) != 0) return;
    word += n;
  }
  char* eq = strchr(word, '=');
  if (eq == NULL) return;
  *eq = '\0';
  ApplySetting(s, word, eq + 1);
}

static void ReadKernelCommandLine(struct Settings* s) {
  FILE* f = fopen("/proc/cmdline", "r");
  if (f == NULL) return;
  char line[4096];
  if (fgets(line, sizeof line, f) != NULL) {
    for (char *save = NULL, *w = strtok_r(line, " \t\n", &save); w != NULL;
         w = strtok_r(NULL, " \t\n", &save)) {
      ApplyWord(s, w, "dwcp.");
    }
  }
  fclose(f);
}

// What the header of page `index` holds after its `generation`-th write: distinct per page
// and per write, never zero.
static uint64_t Expected(uint64_t index, uint32_t generation) {
  uint64_t x = (index + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)generation << 32 | generation);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return x | 1;
}

static void WritePage(uint8_t* page, uint64_t index, uint32_t generation) {
  uint64_t header[8];
  for (int i = 0; i < 8; ++i) header[i] = Expected(index, generation) + (uint64_t)i;
  memcpy(page, header, sizeof header);
}

static void SleepUntil(struct timespec* t, unsigned long add_ms) {
  t->tv_nsec += (long)(add_ms % 1000) * 1000000L;
  t->tv_sec += (time_t)(add_ms / 1000) + t->tv_nsec / 1000000000L;
  t->tv_nsec %= 1000000000L;
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, t, NULL) == EINTR) {
  }
}

int main(int argc, char** argv) {
  struct Settings s = {64, 8, 100};
  ReadKernelCommandLine(&s);
  for (int i = 1; i < argc; ++i) ApplyWord(&s, argv[i], NULL);
  if (s.mem_mib == 0 || s.tick_ms == 0) {
    printf("dwcp-guest: mem_mib and tick_ms must be > 0\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  const uint64_t pages = (uint64_t)s.mem_mib * (1024 * 1024 / kPageSize);
  uint8_t* mem =
      mmap(NULL, pages * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  uint32_t* generation = calloc(pages, sizeof *generation);
  if (mem == MAP_FAILED || generation == NULL) {
    printf("dwcp-guest: cannot allocate %lu MiB: %s\n", s.mem_mib, strerror(errno));
    return 1;
  }
  // Every page holds data, so the whole working set is resident and has to be migrated.
  for (uint64_t i = 0; i < pages; ++i) WritePage(mem + i * kPageSize, i, 0);
  printf("dwcp-guest ready mem_mib=%lu dirty_mib_s=%lu tick_ms=%lu\n", s.mem_mib, s.dirty_mib_s,
         s.tick_ms);

  // Pages to dirty per tick, carried over in 1/1000 page units so low rates still dirty.
  const uint64_t milli_pages_per_tick =
      (uint64_t)s.dirty_mib_s * (1024 * 1024 / kPageSize) * s.tick_ms;
  uint64_t carry = 0, next = 0, dirtied_pages = 0, bad_pages = 0, counter = 0;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  for (;;) {
    SleepUntil(&t, s.tick_ms);
    carry += milli_pages_per_tick;
    uint64_t n = carry / 1000;
    carry %= 1000;
    for (uint64_t k = 0; k < n; ++k) {
      // A prime stride visits every page once per pass (unless it divides the page count),
      // not in address order.
      uint64_t index = next;
      next = (next + 4099) % pages;
      WritePage(mem + index * kPageSize, index, ++generation[index]);
    }
    dirtied_pages += n;
    for (uint64_t i = 0; i < pages; ++i) {
      uint64_t got;
      memcpy(&got, mem + i * kPageSize, sizeof got);
      if (got != Expected(i, generation[i])) {
        if (bad_pages < 10) printf("dwcp-guest bad page %llu\n", (unsigned long long)i);
        ++bad_pages;
        WritePage(mem + i * kPageSize, i, generation[i]);  // count each corruption once
      }
    }
    ++counter;
    printf("dwcp-guest counter=%llu dirtied_mib=%llu bad_pages=%llu\n", (unsigned long long)counter,
           (unsigned long long)(dirtied_pages * kPageSize / (1024 * 1024)),
           (unsigned long long)bad_pages);
  }
}
