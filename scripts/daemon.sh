#!/bin/sh
# Starts a platform daemon (up | server | node | …: the arguments of scripts/daemon.mjs) with the
# process settings it is measured with (ADR 0024), replacing this shell (exec: no extra process).
#  - glibc malloc: two heaps instead of one per thread, and allocations of 128 KiB or more (bus
#    message buffers) mapped and given back when freed, instead of fragmenting the heap for good.
#  - V8: a young generation of at most 2 × 4 MB (SHELLWEGO_SEMI_SPACE_MB). The old generation's
#    growth is set by scripts/daemon.mjs itself.
# Values already in the environment win; SHELLWEGO_NODE_FLAGS adds node flags (e.g. --inspect).
: "${MALLOC_ARENA_MAX:=2}" "${MALLOC_MMAP_THRESHOLD_:=131072}" "${MALLOC_TRIM_THRESHOLD_:=131072}"
export MALLOC_ARENA_MAX MALLOC_MMAP_THRESHOLD_ MALLOC_TRIM_THRESHOLD_
# shellcheck disable=SC2086 # SHELLWEGO_NODE_FLAGS is a list of flags
exec node --max-semi-space-size="${SHELLWEGO_SEMI_SPACE_MB:-4}" ${SHELLWEGO_NODE_FLAGS:-} "$(dirname "$0")/daemon.mjs" "$@"
