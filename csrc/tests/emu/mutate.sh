#!/bin/bash
# Mutation check of the emulated suites: each mutation below breaks csrc/cuda/mlp_cuda.cu on purpose
# (the mma.sync kernel, then the wgmma kernel: wg-*)
# (in a copy under a temporary folder) and the fast suites of the logic and float16 builds must fail.
# Usage: csrc/tests/emu/mutate.sh   (from the repository root; ~1 minute per mutation on 2 cores)
set -u
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CXX=${CXX:-g++}

names=(no-tile-scaling no-relu-mask missing-tile no-barrier-before-gradients no-output-bias-gradient
       no-barrier-between-tiles no-shared-memory-row bias-columns-misplaced
       wg-no-relu-mask wg-no-rescale wg-no-final-flush wg-no-proxy-fence wg-store-rows-swapped
       wg-stale-accumulators wg-no-wait-before-stores wg-no-barrier-before-stores)
from=(
  '  const int shift = m > 0.0f ? max(-125, min(125, 12 - ilogbf(m))) : 0;'
  '          if (!((m4 >> e) & 1u)) d[t][n][e] = 0.0f;'
  '  t1 = t0 + tiles_per_chunk < ntiles ? t0 + tiles_per_chunk : ntiles;'
  "  __syncthreads();  // every warp's act and dlt rows of the tile are in shared memory"
  '    add_bias_grad<2>(v, gbw + s.b_off[D]);'
  "      if (grads && tile > t0) __syncthreads();  // the previous tile's gradients have read act and dlt"
  '            sts_f(at, lds_f(at) + tmp[jj][n][e] * ia * id);'
  '    if (hi) base += H;'
  '        if (!((m4 >> e) & 1u)) d[4 * n + e] = 0.0f;'
  '        for (int j = 0; j < wg_count<K0>(l); ++j) *wg_reg(ac, l, j) *= f;'
  '      if (++since_flush == cl::kWgFlushTiles || tile + 1 == t1) {'
  '  fence_proxy_async();  // the tile'"'"'s act and dlt, written by stmatrix, are read by wgmma below'
  '  stsm_features(m, cl::kWgTile, j, r0, lo0, hi0, lo1, hi1);'
  '    const bool on = acc_on || k > 0;'
  '  wgmma_wait<0>();
  if (!first) __syncthreads();'
  '  if (!first) __syncthreads();'
)
to=(
  '  const int shift = 0 * ilogbf(m);'
  '          if (false) d[t][n][e] = 0.0f;'
  '  t1 = (t0 + tiles_per_chunk < ntiles ? t0 + tiles_per_chunk : ntiles) - (ntiles > 1);'
  '  /* barrier removed */'
  '    (void)v;'
  '      /* barrier removed */'
  '            (void)at;'
  '    (void)hi;'
  '        if (false) d[4 * n + e] = 0.0f;'
  '        (void)f;'
  '      if (++since_flush == cl::kWgFlushTiles) {'
  '  /* fence removed */'
  '  stsm_features(m, cl::kWgTile, j, r0, hi0, lo0, lo1, hi1);'
  '    const bool on = true;'
  '  if (!first) __syncthreads();'
  '  /* barrier removed */'
)

escaped=0
for i in "${!names[@]}"; do
  rm -rf "$WORK/csrc" && cp -r "$ROOT/csrc" "$WORK/csrc"
  if ! python3 - "$WORK/csrc/cuda/mlp_cuda.cu" "${from[$i]}" "${to[$i]}" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
if text.count(old) != 1:
    sys.exit(1)
open(path, "w").write(text.replace(old, new))
PY
  then
    echo "${names[$i]}: the mutation no longer applies (kernel changed); update this script"
    escaped=1
    continue
  fi
  caught=""
  for build in logic half; do
    defs=""
    [ "$build" = logic ] && defs="-DINR_EMU_HALF_IS_FLOAT"
    "$CXX" -std=c++17 -O2 -Wno-unknown-pragmas -DINR_FAST_EMU -DINR_FAST_WITH_CUDA=1 $defs \
      -I"$WORK/csrc/tests/emu/include" -I"$WORK/csrc/include" "$WORK/csrc/tests/emu/test_emu_mlp.cpp" \
      "$WORK/csrc/tests/emu/mlp_cuda_emu.cpp" "$WORK/csrc/cpu/mlp_cpu.cpp" -o "$WORK/t_$build" || continue
    "$WORK/t_$build" fast > "$WORK/out_$build" 2>&1 || caught="$caught $build($(grep -c '^FAIL' "$WORK/out_$build") cases)"
  done
  if [ -n "$caught" ]; then echo "${names[$i]}: caught by$caught"; else echo "${names[$i]}: NOT CAUGHT"; escaped=1; fi
done
exit $escaped
