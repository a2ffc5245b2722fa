#!/usr/bin/env bash
# Lint: shellcheck over every shell script of the repository (tracked or new, not ignored): files named
# *.sh and files whose #! line names sh, bash, dash or ash. Settings: .shellcheckrc.
#   scripts/shellcheck.sh [shellcheck options]
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$RTHIN_TOP"
files=()
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  case $f in
    *.sh) files+=("$f") ;;
    *) if head -n1 -- "$f" | grep -qE '^#!.*(/|env )(ba|da|a)?sh([[:space:]]|$)'; then files+=("$f"); fi ;;
  esac
done < <(git ls-files -z -co --exclude-standard)
[ ${#files[@]} -gt 0 ] || rthin_die "no shell scripts found"
echo "shellcheck $(shellcheck --version | sed -n 's/^version: //p') on ${#files[@]} scripts:"
printf '  %s\n' "${files[@]}"
exec shellcheck "$@" -- "${files[@]}"
