#!/usr/bin/env bash
# Packages for bench/h200.sh that the GPU machine lacks, into .whl-quack/ (ignored by git):
# quack-kernels 0.2.4 and what it needs, and Liger-Kernel. Run here, where the registry is reachable.
#   bash bench/quack-wheels.sh        # then carry .whl-quack in the device call
# nvidia-cutlass-dsl's wheel (59 MB, zip-deflated) does not fit the device call's 64 MiB carry beside
# the tree, so its unpacked files travel as an xz tarball instead (about 40 MB), and bench/h200.sh
# extracts them where pip --target would have put them. For a split over two calls, also:
#   bash bench/quack-wheels.sh split   # .whl-quack-a/ (first half) and .whl-quack-b/ (the rest)
set -euo pipefail
top=$(git rev-parse --show-toplevel)
cd "$top"
for d in /.whl-quack/ /.whl-quack-a/ /.whl-quack-b/; do
  grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done
dest=.whl-quack
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the flags of ../shared/tools/device-wheels.sh: the GPU machine's python 3.12 on x86-64
for spec in quack-kernels==0.2.4 nvidia-cutlass-dsl==4.3.4 apache-tvm-ffi==0.1.15.post2 torch-c-dlpack-ext==0.1.5 \
    liger-kernel==0.8.5; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$tmp" "$spec" 2>&1 | grep -v "^WARNING: Location" || true
done
cutlass=$(ls "$tmp"/nvidia_cutlass_dsl-*.whl)
mkdir "$tmp/tree"
python3 -m zipfile -e "$cutlass" "$tmp/tree"
chmod -R u+rwX,go+rX "$tmp/tree"
find "$tmp"/tree -name '*.so' -exec chmod 755 {} +
# the .pth file only matters to site-packages; bench/h200.sh puts its directory on PYTHONPATH instead
tar -C "$tmp/tree" --owner=0 --group=0 --sort=name -cf - . | xz -9 -T2 > "$dest/cutlass-dsl.tar.xz"
sha256sum "$dest/cutlass-dsl.tar.xz" | cut -d' ' -f1 > "$dest/cutlass-dsl.tar.xz.sha256"
rm -f "$dest"/*.whl
mv "$tmp"/*.whl "$dest"/
rm -f "$dest"/nvidia_cutlass_dsl-*.whl
if [ "${1:-}" = split ]; then
  rm -rf .whl-quack-a .whl-quack-b
  mkdir .whl-quack-a .whl-quack-b
  half=$(( $(stat -c %s "$dest/cutlass-dsl.tar.xz") / 2 + 1 ))
  split -b "$half" -a 2 "$dest/cutlass-dsl.tar.xz" "$tmp/cutlass-dsl.tar.xz.part-"
  mv "$tmp/cutlass-dsl.tar.xz.part-aa" .whl-quack-a/
  mv "$tmp/cutlass-dsl.tar.xz.part-ab" .whl-quack-b/
  cp "$dest"/*.whl "$dest/cutlass-dsl.tar.xz.sha256" .whl-quack-b/
fi
du -b "$dest" .whl-quack-a .whl-quack-b 2>/dev/null
ls -la "$dest"
