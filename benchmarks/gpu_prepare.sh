#!/usr/bin/env bash
# Before the GPU run's device call, here, with network: put what it carries in place and
# check that the working tree plus the carried folders fit the device's 64 MiB.
#
#   bash benchmarks/gpu_prepare.sh             # .data/ <- CIFAR-10 archive, .whl/ <- wheels, measure
#   bash benchmarks/gpu_prepare.sh --measure   # only measure what would travel now
#
# The device machine has torch 2.11 on Python 3.12 but not albumentations, which s9lib's
# training imports: its wheels, and those of its dependencies the machine lacks, travel in
# .whl/ (git-ignored). CIFAR-10 travels as the JPEG archive in .data/ (git-ignored): the
# device gets the working tree only, not ../shared. README.md, "On a GPU", has the call.
# Environment: S9LIB_DATA (the archive to copy) [../shared/data/cifar10-jpeg.tar.gz].
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LIMIT=$((64 * 1024 * 1024))
ARCHIVE=.data/cifar10-jpeg.tar.gz
EXACT=.data/cifar10_test_exact_first1017.npz  # optional: the original-pixel test images
# albumentations 2.0.8 and what it needs that the device image lacks (its package list is in
# the device tool's KINDS.md; numpy, scipy, PyYAML and opencv-python-headless are there).
# stringzilla 3.12.6 rather than 5.x: 0.3 MB instead of 4.2 MB, and albucore 0.0.24 (which
# asks for >= 3.10.4) passes tests/test_augment.py with it. typing-extensions: pydantic-core
# needs >= 4.14.1, a version the device list does not give. platformdirs: s9lib's cache dir.
WHEELS=(albumentations==2.0.8 albucore==0.0.24 stringzilla==3.12.6 simsimd==6.5.16
        pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
        typing-extensions==4.15.0 platformdirs==4.14.9)

sizes() { xargs -0 -r stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }

measure() {
    local tree carried=0 n total
    tree=$(git ls-files -z -c -o --exclude-standard | sizes)
    printf '%12d bytes  working tree (tracked and untracked files git does not ignore)\n' "$tree"
    for dir in .whl .data; do
        if [[ -d $dir ]]; then
            n=$(find "$dir" -type f -print0 | sizes)
            printf '%12d bytes  %s/ (carried)\n' "$n" "$dir"
            carried=$((carried + n))
        else
            printf '%12s        %s/ absent (run this script without --measure)\n' - "$dir"
        fi
    done
    total=$((tree + carried))
    printf '%12d bytes  in all, of %d (64 MiB): %d left\n' "$total" "$LIMIT" $((LIMIT - total))
    if ((total > LIMIT)); then
        echo "error: over the device's 64 MiB; nothing can be dropped from .whl/ or .data/" \
             "(training imports albumentations, the fast recipe needs all of CIFAR-10):" \
             "make the tracked tree smaller first" >&2
        return 1
    fi
}

if [[ ${1:-} == --measure ]]; then
    measure
    exit
fi

for path in .whl/x.whl .data/x; do
    git check-ignore -q "$path" || { echo "error: $path is not git-ignored; add /${path%/*}/ to .gitignore" >&2; exit 2; }
done

source=${S9LIB_DATA:-../shared/data/cifar10-jpeg.tar.gz}
[[ -f $source ]] || { echo "error: no CIFAR-10 archive at $source; set S9LIB_DATA" >&2; exit 2; }
mkdir -p .data
if ! cmp -s "$source" "$ARCHIVE"; then
    install -m 644 "$source" "$ARCHIVE"
fi
echo "$ARCHIVE: $(stat -c %s "$ARCHIVE") bytes from $source"
exact=$(dirname "$source")/cifar10_test_exact_first1017.npz  # for export --exact, if it fits
[[ -f $exact ]] && install -m 644 "$exact" "$EXACT"

mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
shopt -s nullglob
for spec in "${WHEELS[@]}"; do  # one version of each: two stop the whole install there
    name=${spec%%==*}
    matches=(.whl/"${name//-/_}"-*.whl)
    ((${#matches[@]} == 1)) || { echo "error: ${#matches[@]} wheels of $name in .whl/; keep one" >&2; exit 2; }
done
ls -l .whl
if ! measure >/dev/null 2>&1 && [[ -f $EXACT ]]; then
    rm "$EXACT"
    echo "over 64 MiB with $EXACT: removed it (export then measures no --exact accuracy)"
fi
measure
