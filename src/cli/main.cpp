#include "src/cli/commands.h"

int main(int argc, char** argv) { return ablate::cli::run(argc, argv); }
