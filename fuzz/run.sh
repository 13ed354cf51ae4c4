#!/usr/bin/env bash
# Fuzzes credence's parsers: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Defaults: 600 s per target, every target in fuzz/Cargo.toml. FUZZ_JOBS=N runs N targets at
# once (default 1; each takes one core and up to 2 GiB). Each target starts from its seeds
# (fuzz/seeds/<t>, copied into fuzz/corpus/<t>), logs to fuzz/logs/<t>.log, and leaves what
# crashed it in fuzz/artifacts/<t>/. Exits non-zero if any target crashed or failed.
set -euo pipefail

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz_dir")
cd "$root"

seconds=600
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
jobs=${FUZZ_JOBS:-1}
# The parsers under test are safe Rust, where AddressSanitizer finds little that a panic or
# libFuzzer's own checks would not, and instrumenting wasmtime with it costs a long build.
# FUZZ_SANITIZER=address turns it back on.
sanitizer=${FUZZ_SANITIZER:-none}
if ! [[ $jobs =~ ^[1-9][0-9]*$ ]]; then
  echo "FUZZ_JOBS must be a positive number, not '$jobs'" >&2
  exit 2
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz on a nightly toolchain is needed:" >&2
  echo "  rustup toolchain install nightly && cargo install cargo-fuzz" >&2
  exit 2
fi

mapfile -t all_targets < <(cargo +nightly fuzz list)
if [[ $# -gt 0 ]]; then
  targets=("$@")
  for t in "${targets[@]}"; do
    if ! printf '%s\n' "${all_targets[@]}" | grep -qx -- "$t"; then
      echo "unknown target '$t'; targets: ${all_targets[*]}" >&2
      exit 2
    fi
  done
else
  targets=("${all_targets[@]}")
fi

# Once, so concurrent runs find everything built and do not queue on cargo's lock.
cargo +nightly fuzz build -O --sanitizer "$sanitizer"

mkdir -p "$fuzz_dir/logs"
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

# Writes "<rc> <seconds>" to $results/<t>; never fails, so one target cannot stop the rest.
run_target() {
  local t=$1
  local corpus="$fuzz_dir/corpus/$t" log="$fuzz_dir/logs/$t.log"
  mkdir -p "$corpus" "$fuzz_dir/artifacts/$t"
  if [[ -d "$fuzz_dir/seeds/$t" ]]; then
    cp -R "$fuzz_dir/seeds/$t/." "$corpus/"
  fi
  # Artifacts older than this run are not this run's crashes.
  touch "$results/$t.start"
  local start rc
  start=$(date +%s)
  echo "fuzzing $t for ${seconds}s (log: fuzz/logs/$t.log)"
  if cargo +nightly fuzz run -O --sanitizer "$sanitizer" "$t" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    >"$log" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  echo "$rc $(($(date +%s) - start))" >"$results/$t"
  echo "finished $t (exit $rc)"
}

if [[ $jobs -eq 1 ]]; then
  for t in "${targets[@]}"; do
    run_target "$t"
  done
else
  running=0
  for t in "${targets[@]}"; do
    if [[ $running -ge $jobs ]]; then
      wait -n || true
      running=$((running - 1))
    fi
    run_target "$t" &
    running=$((running + 1))
  done
  wait || true
fi

failed=0
echo
printf '%-10s %8s %14s %8s  %s\n' target seconds executions corpus result
for t in "${targets[@]}"; do
  log="$fuzz_dir/logs/$t.log"
  read -r rc secs <"$results/$t" || { rc=255; secs=0; }
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" 2>/dev/null | tail -n 1 | grep -oE '[0-9]+$' || true)
  if [[ -z $execs ]]; then
    # No final stats (killed before printing them): the last status line's count.
    execs=$(grep -oE '^#[0-9]+' "$log" 2>/dev/null | tail -n 1 | tr -d '#' || true)
  fi
  corpus_files=$(find "$fuzz_dir/corpus/$t" -type f 2>/dev/null | wc -l | tr -d ' ')
  crashes=$(find "$fuzz_dir/artifacts/$t" -type f -name 'crash-*' -newer "$results/$t.start" 2>/dev/null | wc -l | tr -d ' ')
  if [[ $crashes -gt 0 ]]; then
    result="CRASH: $crashes in fuzz/artifacts/$t/ (see fuzz/logs/$t.log)"
    failed=1
  elif [[ $rc -ne 0 ]]; then
    result="FAILED: exit $rc, no crash-* artifact (timeout, oom or leak?), see fuzz/logs/$t.log"
    failed=1
  else
    result="ok"
  fi
  printf '%-10s %8s %14s %8s  %s\n' "$t" "$secs" "${execs:-?}" "$corpus_files" "$result"
done
exit "$failed"
