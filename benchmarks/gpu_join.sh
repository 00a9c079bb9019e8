#!/usr/bin/env bash
# Put the weights that benchmarks/gpu_run.sh split into 15 MiB parts together again, and
# check them against the sha256 it recorded.
#
#   bash benchmarks/gpu_join.sh DIR [DEST]
#
# DIR holds weights.sha256 and NAME.part-00, NAME.part-01, ... (the device's files_at folder,
# read-only there); DEST is the file to write [./NAME]. An existing DEST is never replaced.
# Then: python -c "import s9lib; print(s9lib.pretrained('DEST').meta)"
set -euo pipefail

dir=${1:?usage: bash benchmarks/gpu_join.sh DIR [DEST]}
read -r hash name <"$dir/weights.sha256"
dest=${2:-$name}
if [[ -e $dest ]]; then
    echo "error: $dest exists; pass another DEST" >&2
    exit 2
fi
parts=("$dir/$name".part-*)
[[ -f ${parts[0]} ]] || { echo "error: no $dir/$name.part-* files" >&2; exit 2; }
cat "${parts[@]}" >"$dest.partial"
if ! echo "$hash  $dest.partial" | sha256sum --check --status; then
    rm -f "$dest.partial"
    echo "error: the ${#parts[@]} parts do not add up to the weights gpu_run.sh split (sha256)" >&2
    exit 1
fi
mv "$dest.partial" "$dest"
echo "$dest: ${#parts[@]} parts joined, sha256 $hash matches"
