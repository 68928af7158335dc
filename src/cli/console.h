// Terminal output for the CLI: result text, errors and one progress line redrawn in place.
#pragma once

#include <string>

namespace dwcp::cli {

// Writes to stdout/stderr. When stdout is a terminal, Progress() redraws one line in place
// with '\r' (truncated to the terminal width) and the next Info()/Error() first clears it.
// When `quiet_stdout` is set (--json), Info() goes to stderr so stdout carries only data.
// Not thread-safe.
class Console {
 public:
  explicit Console(bool quiet_stdout = false);
  ~Console();

  // True when Progress() draws (stdout is a terminal and not in --json mode).
  bool interactive() const { return interactive_; }
  // A line of human-readable text (stdout, or stderr with quiet_stdout).
  void Info(const std::string& line);
  // A line on stderr.
  void Error(const std::string& line);
  // A line of machine-readable output on stdout (JSON).
  void Data(const std::string& text);
  // Redraws the in-place line; does nothing when not interactive.
  void Progress(const std::string& line);
  // Ends the in-place line, keeping its text on screen.
  void KeepProgress();

 private:
  void ClearProgress();

  bool interactive_ = false;
  bool quiet_stdout_ = false;
  bool progress_open_ = false;
};

}  // namespace dwcp::cli
