# Sourced by the GPU scripts, in the repository root on the GPU machine:
# appends the rest of the script's output to $OUT/log, makes the carried
# .deps/ usable, prints the GPU and PyTorch, and defines
#   configure_ldm BUILD_DIR [cmake args...]
# which configures the model library (service off; pass
# -DLDMSERVE_BUILD_SERVICE=ON for the whole tree) against the machine's
# PyTorch, printing only its errors (with what CMake says after them). ICU's data library travels xz-compressed (30 MB -> 7.5 MB: `xz -9
# -k` it, then delete the original) so the tree, models/ and .deps/ fit the
# 64 MiB a call carries; it is unpacked here on the first call.
set -uo pipefail
root=$(pwd)
out=${OUT:-/tmp}
exec > >(tee -a "$out/log") 2>&1
# .deps.tar.xz (tools/device/make_deps.sh) carries everything at once; a
# .deps/ carried as a folder is used as it is.
if [ -f "$root/.deps.tar.xz" ] && [ ! -f "$root/.deps/.unpacked" ]; then
  mkdir -p "$root/.deps" && tar -C "$root/.deps" -xJf "$root/.deps.tar.xz" &&
    touch "$root/.deps/.unpacked"
fi
icu_data="$root/.deps/usr/lib/x86_64-linux-gnu/libicudata.so.72.1"
# Unpacked beside and renamed into place: two scripts may start at once.
[ -f "$icu_data" ] || [ ! -f "$icu_data.xz" ] || python3 -c 'import lzma, os, sys
part = "%s.%d" % (sys.argv[1], os.getpid())
open(part, "wb").write(lzma.open(sys.argv[1] + ".xz").read())
os.replace(part, sys.argv[1])' "$icu_data"
export LD_LIBRARY_PATH="$root/.deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
# Debian's glog finds its FindUnwind module at an absolute /usr path: point
# it inside .deps/ (the runtime build needs glog).
glog_modules="$root/.deps/usr/lib/x86_64-linux-gnu/cmake/glog/glog-modules.cmake"
[ -f "$glog_modules" ] && sed -i \
  's|"/usr/share/glog/cmake"|"${CMAKE_CURRENT_LIST_DIR}/../../../../share/glog/cmake"|' \
  "$glog_modules"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

configure_ldm() {
  local build=$1
  shift
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLDMSERVE_BUILD_SERVICE=OFF "$@" \
    -DCMAKE_PREFIX_PATH="$torch_prefix;$root/.deps/usr" \
    -Dnlohmann_json_DIR="$root/.deps/usr/share/cmake/nlohmann_json" \
    -DICU_ROOT="$root/.deps/usr" 2>&1 | grep -iE -A8 "error" | head -40
}
