#!/usr/bin/env bash
# CMake flags for building llama.cpp (make bench-peer): the x86 instruction sets this CPU lists in /proc/cpuinfo,
# named one by one instead of -march=native, leaving AMX out. A CPU can list AMX that its (virtual) machine does not
# let a process use: llama.cpp built natively there dies of SIGILL on its first tile instruction, so its fastest
# usable build is the one without AMX (AMX speeds up prompt batches, not one-token decode steps).
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
if [ -z "$flags" ] || [ "$(uname -m)" != x86_64 ]; then
  echo "-DGGML_NATIVE=ON"  # elsewhere the native build, as llama.cpp's own default
  exit 0
fi
args="-DGGML_NATIVE=OFF"
has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }
has avx && args+=" -DGGML_AVX=ON"
has avx2 && args+=" -DGGML_AVX2=ON"
has fma && args+=" -DGGML_FMA=ON"
has f16c && args+=" -DGGML_F16C=ON"
has bmi2 && args+=" -DGGML_BMI2=ON"
has avx_vnni && args+=" -DGGML_AVX_VNNI=ON"
if has avx512f avx512cd avx512vl avx512dq avx512bw; then
  args+=" -DGGML_AVX512=ON"
  has avx512vbmi && args+=" -DGGML_AVX512_VBMI=ON"
  has avx512_vnni && args+=" -DGGML_AVX512_VNNI=ON"
  has avx512_bf16 && args+=" -DGGML_AVX512_BF16=ON"
fi
echo "$args"
