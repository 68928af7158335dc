// dwcp: the command line for DWCP v3 (see src/cli/commands.h).
#include "cli/commands.h"

int main(int argc, char** argv) { return dwcp::cli::RunCli(argc, argv); }
