# Sourced by the GPU scripts: makes the carried .deps/ usable. ICU's data
# library travels xz-compressed (30 MB -> 7.5 MB: `xz -9 -k` it, then delete
# the original) so the tree, models/ and .deps/ fit the 64 MiB a call
# carries; it is unpacked here on the first call.
icu_data="$root/.deps/usr/lib/x86_64-linux-gnu/libicudata.so.72.1"
[ -f "$icu_data" ] || python3 -c 'import lzma, sys
open(sys.argv[1], "wb").write(lzma.open(sys.argv[1] + ".xz").read())' "$icu_data"
export LD_LIBRARY_PATH="$root/.deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
