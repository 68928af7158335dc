#include "cli/console.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>

#include "cli/format.h"

namespace dwcp::cli {
namespace {

size_t TerminalColumns() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

}  // namespace

Console::Console(bool quiet_stdout)
    : interactive_(!quiet_stdout && isatty(STDOUT_FILENO) == 1), quiet_stdout_(quiet_stdout) {}

Console::~Console() { KeepProgress(); }

void Console::ClearProgress() {
  if (!progress_open_) return;
  std::fputs("\r\033[K", stdout);
  std::fflush(stdout);
  progress_open_ = false;
}

void Console::KeepProgress() {
  if (!progress_open_) return;
  std::fputs("\n", stdout);
  std::fflush(stdout);
  progress_open_ = false;
}

void Console::Info(const std::string& line) {
  ClearProgress();
  FILE* out = quiet_stdout_ ? stderr : stdout;
  std::fputs(line.c_str(), out);
  std::fputc('\n', out);
  std::fflush(out);
}

void Console::Error(const std::string& line) {
  ClearProgress();
  std::fflush(stdout);
  std::fputs(line.c_str(), stderr);
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

void Console::Data(const std::string& text) {
  ClearProgress();
  std::fputs(text.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void Console::Progress(const std::string& line) {
  if (!interactive_) return;
  size_t columns = TerminalColumns();
  std::string shown = TruncateToWidth(line, columns > 1 ? columns - 1 : columns);
  std::fputs("\r", stdout);
  std::fputs(shown.c_str(), stdout);
  std::fputs("\033[K", stdout);
  std::fflush(stdout);
  progress_open_ = true;
}

}  // namespace dwcp::cli
