#!/usr/bin/env bash
# Regenerates runtime/link-order.txt, the functions the `credence` binary runs on its hot
# paths (stored answer, warm provider run, git and docker front ends, an HTTP fetch), so a
# release build links them side by side (see runtime/build.rs). Rerun after updating
# dependencies or the compiler: symbol names carry their crates' hashes.
#
# Needs valgrind and nm (binutils). Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo build --release -p credence-tests --bins
# Same symbols as the release build, just not stripped, so nm can name them.
cargo rustc --release -p credence --bin credence -- -C strip=none
nm --defined-only target/release/credence | awk '$2 ~ /^[tTwW]$/ { print $3 }' >"$out/symbols"

CREDENCE_BENCH_PROFILE="valgrind --tool=callgrind --demangle=no --compress-strings=no --callgrind-out-file=$out/cg.%q{CREDENCE_BENCH_CASE}" \
  target/release/credence-bench 1 >/dev/null

# Every function of ours that ran, in order of cases, each once.
for f in $(cd "$out" && ls cg.* | sort -t. -k2 -n); do
  grep -E '^c?fn=' "$out/$f" | cut -d= -f2-
done | awk 'NR == FNR { ours[$0] = 1; next } ($0 in ours) && !seen[$0]++' "$out/symbols" - >runtime/link-order.txt

echo "runtime/link-order.txt: $(wc -l <runtime/link-order.txt) functions"
cargo build --release -p credence # relink, stripped, with the new order
