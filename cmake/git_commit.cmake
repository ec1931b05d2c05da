# Writes OUT, a header defining ABLATE_GIT_COMMIT (HEAD of SRC, "+dirty" when tracked files differ
# from it), at build time: run provenance (run.json) names the code that was built, not the commit
# CMake was configured at. The file is rewritten only when its text changes, so an unchanged tree
# recompiles nothing.
execute_process(COMMAND git -C "${SRC}" rev-parse --short=12 HEAD
  OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT commit)
  set(commit unknown)
else()
  execute_process(COMMAND git -C "${SRC}" status --porcelain --untracked-files=no
    OUTPUT_VARIABLE changes ERROR_QUIET)
  if(changes)
    string(APPEND commit "+dirty")
  endif()
endif()
set(text "#pragma once\n#define ABLATE_GIT_COMMIT \"${commit}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
