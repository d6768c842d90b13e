#!/usr/bin/env bash
# Writes a stand-in gpu-carry/ into $1 for run-on-device.sh's own test: its
# programs print one line (and a benchmark figure where the real ones
# print figures), and fail or hang (a child process that sleeps, holding
# the log's pipe open) when $STUB_FAIL or $STUB_HANG names their step
# (suite, bench, rows, tune, runtime, nccl, sample).
set -euo pipefail
carry="$1"
mkdir -p "$carry/suite" "$carry/deepseek-v3" "$carry/kimi-k2" \
  "$carry/deepseek-v3-moe" "$carry/bench" "$carry/include"
echo 0123456789abcdef > "$carry/commit"
stub() { # NAME, then the shell code that sets $what from "$@"
  cat > "$carry/$1" <<STUB
#!/usr/bin/env bash
$2
echo "stub \$what: \$*"
case " \${STUB_HANG:-} " in *" \$what "*) sleep 60; echo "not killed" ;; esac
case " \${STUB_FAIL:-} " in *" \$what "*) exit 1 ;; esac
case "\$what" in
  bench|rows) echo "stub_route, E = 8, k = 2, route"
              echo "T=64: 1.50 us/call (median of 3)" ;;
  tune) for a in "\$@"; do [[ \$prev == --db ]] && echo '{"entries": []}' > "\$a"; prev="\$a"; done ;;
esac
exit 0
STUB
  chmod +x "$carry/$1"
}
stub moegen-gpu-check 'case "$*" in *deepseek-v3-moe*) what=rows ;; *--bench*) what=bench ;; *--tune*) what=tune ;; *) what=suite ;; esac; prev='
stub MoEGenRuntimeTests 'case "$*" in *EpNccl*) what=nccl ;; *) what=runtime ;; esac'
stub moegen-sample-capture-replay-rt 'what=sample'
mkdir -p "$carry/tmp/gpu-tune-candidates"
tar -cJf "$carry/tune-candidates.tar.xz" -C "$carry/tmp" gpu-tune-candidates
rm -rf "$carry/tmp"
