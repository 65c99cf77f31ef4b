#!/usr/bin/env bash
# Checks that C++ and CUDA sources are formatted as .clang-format says (Debian 12's clang-format
# 14; another major version formats some constructs differently, so it is refused).
#   tests/lint/check_format.sh [FILE...]
# Without FILEs: every tracked *.cc, *.h, *.cu and *.cuh of the repository (git ls-files, or find
# outside a git checkout). Exit status 0 when all are formatted, 1 with the files and the
# command that fixes them otherwise, 2 when clang-format 14 is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

tool=""
for candidate in clang-format-14 clang-format; do
  if command -v "$candidate" >/dev/null && "$candidate" --version | grep -q "version 14\."; then
    tool="$candidate"
    break
  fi
done
if [ -z "$tool" ]; then
  echo "check_format.sh: clang-format 14 not found (Debian 12: apt-get install clang-format)" >&2
  exit 2
fi

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cu' '*.cuh')
  else
    mapfile -t files < <(find . -path ./build\* -prune -o \
      \( -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -type f -print |
      sed 's|^\./||' | sort)
  fi
fi
[ ${#files[@]} -gt 0 ] || { echo "check_format.sh: no sources found" >&2; exit 2; }

bad=()
for f in "${files[@]}"; do
  "$tool" --dry-run -Werror --style=file "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "check_format.sh: ${#bad[@]} of ${#files[@]} files differ from .clang-format:" >&2
  for f in "${bad[@]}"; do
    echo "  $f" >&2
    "$tool" --style=file "$f" | diff -u --label "$f" --label "$f (formatted)" "$f" - | \
      sed -n '3,12p' | sed 's/^/    /' >&2 || true
  done
  echo "fix with: $tool -i FILE... (or git clang-format on staged changes)" >&2
  exit 1
fi
echo "check_format.sh: ${#files[@]} files formatted as .clang-format says"
