#!/usr/bin/env bash
# make arm-check: the device runner, the FP32 / INT8 TFLite and the FP32 / INT8 ExecuTorch .pte of a trained
# model on aarch64, under qemu-user emulation, compared with x86-64 on the same files and images.
#
#   sudo deploy/arm_check.sh [--fp32 DIR --int8 DIR [--uint8 DIR] [--run RUN_DIR] [--data VAL_DIR]]
#                            [--max-images N] [--rebuild]
#
# Without artifacts it reuses `make demo`'s demo/ when complete, else makes a trained model through the
# CLI (edgeinc data synth, edgeinc train quickstart, edgeinc export) in benchmarks/work/arm-check/.
# --uint8 (or --run, to export one) adds the uint8-input model; --data is the labelled validation split
# (default: the recipe's data.root/val); --max-images caps the validation images (spread over the classes).
# Environment: ARM_CHECK_FP32, _INT8, _UINT8, _RUN, _DATA, _MAX_IMAGES as the options; EDGEINC_CACHE
# (default ~/.cache/edgeinc) holds the aarch64 root file system, keyed by this script's hash and the wheel
# versions, so a second run reuses it; ARM_CHECK_QEMU_NEW=0 skips the newer-qemu SME cross-check (or names
# a static qemu-aarch64 to use for it); ARM_CHECK_RESULTS (default benchmarks/results) gets arm_check.md
# and arm_check.json; ARM_CHECK_EXECUTORCH=0 leaves out the ExecuTorch .pte runs (their Python path is
# PyTorch for aarch64 from PyPI: the CUDA build, about 3 GB of wheels, cached in EDGEINC_CACHE once).
# Needs root (debootstrap, chroot, binfmt_misc), and apt and PyPI the first time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT="$ROOT/deploy/arm_check.sh"
PY=${ARM_CHECK_PYTHON:-$ROOT/.venv/bin/python}
CACHE=${EDGEINC_CACHE:-$HOME/.cache/edgeinc}
WORK=${ARM_CHECK_WORK:-$ROOT/benchmarks/work/arm-check}
RESULTS=${ARM_CHECK_RESULTS:-$ROOT/benchmarks/results}
SUITE=bookworm                 # its python3 is 3.11: the wheels below are cp311
LITERT_VERSION=2.3.0           # tagged manylinux_2_27 only (TOOLCHAIN trap 14)
EXECUTORCH_VERSION=1.5.1 TORCHAO_VERSION=0.18.0
# What ExecuTorch's Python runtime imports besides PyTorch and its declared dependencies (an import trace;
# executorch's own declared dependencies are its exporter's: pandas, hypothesis, hydra, coremltools ...)
EXECUTORCH_RUNTIME_IMPORTS="ruamel.yaml tabulate flatbuffers optree"
WITH_EXECUTORCH=${ARM_CHECK_EXECUTORCH:-1}
FP32=${ARM_CHECK_FP32:-} INT8=${ARM_CHECK_INT8:-} UINT8=${ARM_CHECK_UINT8:-} RUN=${ARM_CHECK_RUN:-}
DATA=${ARM_CHECK_DATA:-} MAX_IMAGES=${ARM_CHECK_MAX_IMAGES:-} REBUILD=0

die() { echo "error: $*" >&2; exit 2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() { printf '\n== %s\n' "$*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --fp32) FP32=${2:?--fp32 needs a folder}; shift 2 ;;
        --int8) INT8=${2:?--int8 needs a folder}; shift 2 ;;
        --uint8) UINT8=${2:?--uint8 needs a folder}; shift 2 ;;
        --run) RUN=${2:?--run needs a run directory}; shift 2 ;;
        --data) DATA=${2:?--data needs a folder}; shift 2 ;;
        --max-images) MAX_IMAGES=${2:?--max-images needs a number}; shift 2 ;;
        --rebuild) REBUILD=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

T0=$(now)
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, binfmt_misc): run it as root or with sudo"
[ -x "$PY" ] || die "$PY not found: make install first (or set ARM_CHECK_PYTHON)"
[ "$(uname -m)" = x86_64 ] || die "this check emulates aarch64 on an x86-64 host; on an Arm machine run the runner directly"

# -- host tools -------------------------------------------------------------------------------------
step "host tools: qemu-user-static, debootstrap, binfmt-support"
T=$(now)
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null || ! command -v update-binfmts >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-user-static debootstrap binfmt-support >/dev/null
fi
# binfmt_misc lets the kernel hand aarch64 ELF files to qemu (debootstrap's second stage and the chroot)
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 2>/dev/null || update-binfmts --import qemu-aarch64
fi
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt_misc: qemu-aarch64 is registered but not enabled"
QEMU_VERSION=$(qemu-aarch64-static --version | head -n1)
HOST_TOOLS_S=$(since "$T")
echo "$QEMU_VERSION; binfmt: $(tr '\n' ' ' </proc/sys/fs/binfmt_misc/qemu-aarch64 | cut -c1-80)"

# -- the cache key: this script and the wheels it installs ---------------------------------------
versions() { "$PY" -c 'import importlib.metadata as m; print(m.version("numpy"), m.version("pillow"), m.version("torch").split("+")[0])'; }
# the workstation's: the same numpy on both sides, and the torch ExecuTorch was built against
read -r NUMPY_VERSION PILLOW_VERSION TORCH_VERSION < <(versions)
KEY=$( { cat "$SCRIPT"; echo "$SUITE litert=$LITERT_VERSION numpy=$NUMPY_VERSION pillow=$PILLOW_VERSION"; } \
       | sha256sum | cut -c1-12)
ROOTFS="$CACHE/arm-rootfs-$KEY"
WHEELS="$CACHE/arm-wheels-$KEY"
VENV=/opt/edgeinc/venv      # inside the root file system
mkdir -p "$CACHE" "$WORK"

MOUNTS=()
unmount_all() {
    local m i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        m=${MOUNTS[i]}
        if mountpoint -q "$m"; then umount "$m" 2>/dev/null || umount -l "$m"; fi
    done
    MOUNTS=()
}
trap unmount_all EXIT
# Anything still mounted below a folder (debootstrap mounts /proc and /sys in its second stage)
unmount_below() { findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r | while read -r m; do umount -l "$m"; done; }
# rm never follows a mount into the host (--one-file-system), and nothing is mounted there by then
remove_tree() { [ -e "$1" ] || return 0; unmount_below "$1"; rm -rf --one-file-system "$1"; }
in_rootfs() { chroot "$1" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 "${@:2}"; }
# A fresh procfs only. NOT the host's /sys: LiteRT's cpuinfo would read the x86 topology there and
# segfault while loading any model (TOOLCHAIN trap 14); the runs get a two-file /sys instead (below).
# NOT /dev: debootstrap made the device nodes.
mount_proc() { mountpoint -q "$1/proc" || { mount -t proc proc "$1/proc"; MOUNTS+=("$1/proc"); }; }

mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "'"$SUITE"'" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

# -- the aarch64 root file system (cached) ----------------------------------------------------------
step "aarch64 root file system: $ROOTFS"
T=$(now)
[ "$REBUILD" = 1 ] && remove_tree "$ROOTFS"
if [ -f "$ROOTFS/.edgeinc-ready" ]; then
    ROOTFS_STATE=cached
    echo "cached (key $KEY; --rebuild to make it again)"
else
    ROOTFS_STATE=built
    for old in "$CACHE"/arm-rootfs-* "$CACHE"/arm-wheels-*; do   # other keys: an older version of this script
        [ -e "$old" ] && [ "$old" != "$ROOTFS" ] && [ "$old" != "$WHEELS" ] && { echo "removing stale $old"; remove_tree "$old"; }
    done
    PARTIAL="$ROOTFS.partial"
    remove_tree "$PARTIAL"
    MIRROR=$(mirror)
    echo "debootstrap --arch=arm64 --variant=minbase $SUITE from $MIRROR (minutes: its second stage runs under qemu)"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv "$SUITE" "$PARTIAL" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
    unmount_below "$PARTIAL"
    echo "wheels for cp311 aarch64, downloaded here (the chroot installs offline)"
    remove_tree "$WHEELS"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --implementation cp --python-version 3.11 \
        --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
        -d "$WHEELS" "ai-edge-litert==$LITERT_VERSION" "numpy==$NUMPY_VERSION" "pillow==$PILLOW_VERSION"
    mkdir -p "$PARTIAL/tmp/wheels"
    cp "$WHEELS"/*.whl "$PARTIAL/tmp/wheels/"
    mount_proc "$PARTIAL"
    # Only numpy, LiteRT and Pillow: --no-deps keeps LiteRT's declared extras (protobuf, tqdm, ...) out,
    # which its Interpreter does not import - the runner must work with exactly this.
    in_rootfs "$PARTIAL" python3 -m venv "$VENV"
    in_rootfs "$PARTIAL" /bin/sh -c "$VENV/bin/pip install --quiet --no-index --no-deps --disable-pip-version-check /tmp/wheels/*.whl"
    in_rootfs "$PARTIAL" "$VENV/bin/python" -c "import numpy, PIL, ai_edge_litert.interpreter"
    in_rootfs "$PARTIAL" "$VENV/bin/pip" list --format json --disable-pip-version-check >"$PARTIAL/.edgeinc-packages.json"
    unmount_all
    rm -rf "$PARTIAL/tmp/wheels"
    du -sm "$PARTIAL" | cut -f1 >"$PARTIAL/.edgeinc-size-mb"
    touch "$PARTIAL/.edgeinc-ready"
    mv "$PARTIAL" "$ROOTFS"   # complete or absent: an interrupted build is never reused
fi
ROOTFS_S=$(since "$T")
echo "root file system $ROOTFS_STATE in ${ROOTFS_S} s"

# -- PyTorch + ExecuTorch for aarch64: a second Python path for the .pte runs (cached) ------------------
# Kept out of the root file system's venv (the TFLite runs must work with numpy, LiteRT and Pillow only)
# and bound into it for the runs. Installed by the host's pip for the aarch64 wheel tags (fast: no pip
# under emulation). PyPI's aarch64 torch is the CUDA build: its NVIDIA wheels come with it.
ET_SITE=/opt/edgeinc/executorch-site
ET_KEY=$(echo "torch=$TORCH_VERSION executorch=$EXECUTORCH_VERSION torchao=$TORCHAO_VERSION $EXECUTORCH_RUNTIME_IMPORTS" | sha256sum | cut -c1-12)
ET_LAYER="$CACHE/arm-executorch-$ET_KEY"
ET_S=0
if [ "$WITH_EXECUTORCH" != 0 ]; then
    step "PyTorch $TORCH_VERSION + ExecuTorch $EXECUTORCH_VERSION for aarch64: $ET_LAYER"
    T=$(now)
    if [ -f "$ET_LAYER/.edgeinc-ready" ]; then
        echo "cached"
    else
        for old in "$CACHE"/arm-executorch-*; do
            [ -e "$old" ] && [ "$old" != "$ET_LAYER" ] && { echo "removing stale $old"; remove_tree "$old"; }
        done
        remove_tree "$ET_LAYER.partial"  # a run stopped half-way
        PLATFORMS=(--platform manylinux2014_aarch64)
        for v in $(seq 17 28); do PLATFORMS+=(--platform "manylinux_2_${v}_aarch64"); done
        PIP_AARCH64=(-m pip install --quiet --disable-pip-version-check --only-binary=:all: --implementation cp
                     --python-version 3.11 "${PLATFORMS[@]}" --target "$ET_LAYER.partial/site")
        "$PY" "${PIP_AARCH64[@]}" "torch==$TORCH_VERSION"
        # shellcheck disable=SC2086
        "$PY" "${PIP_AARCH64[@]}" --no-deps "executorch==$EXECUTORCH_VERSION" "torchao==$TORCHAO_VERSION" $EXECUTORCH_RUNTIME_IMPORTS
        "$PY" -m pip list --disable-pip-version-check --path "$ET_LAYER.partial/site" --format json >"$ET_LAYER.partial/packages.json"
        du -sm "$ET_LAYER.partial/site" | cut -f1 >"$ET_LAYER.partial/size-mb"
        touch "$ET_LAYER.partial/.edgeinc-ready"
        mv "$ET_LAYER.partial" "$ET_LAYER"
    fi
    ET_S=$(since "$T")
fi

# -- the trained model and the payload (runner, manifests, artifacts, images) ----------------------
step "trained model, artifacts and images"
T=$(now)
PAYLOAD="$WORK/payload"
PREPARE=(prepare --work "$WORK" --payload "$PAYLOAD")
[ "$WITH_EXECUTORCH" = 0 ] && PREPARE+=(--no-executorch)
[ -n "$FP32" ] && PREPARE+=(--fp32 "$FP32")
[ -n "$INT8" ] && PREPARE+=(--int8 "$INT8")
[ -n "$UINT8" ] && PREPARE+=(--uint8 "$UINT8")
[ -n "$RUN" ] && PREPARE+=(--run "$RUN")
[ -n "$DATA" ] && PREPARE+=(--data "$DATA")
[ -n "$MAX_IMAGES" ] && PREPARE+=(--max-images "$MAX_IMAGES")
(cd "$ROOT" && "$PY" deploy/arm_check.py "${PREPARE[@]}")
MODEL_S=$(since "$T")

# -- a newer qemu for the SME cross-check (optional) -----------------------------------------------
# qemu 7.2's SME emulation gives XNNPACK wrong INT8 outputs; the same CPU under bookworm-backports' qemu
# tells an emulator bug from a LiteRT one. Fetched once with apt-get download into the cache (the
# host's apt sources are not changed); ARM_CHECK_QEMU_NEW=0 skips it, =PATH uses that qemu-aarch64.
QEMU_NEW=${ARM_CHECK_QEMU_NEW:-$CACHE/qemu-backports/qemu-aarch64}
QEMU_NEW_VERSION=""
if [ "$QEMU_NEW" != 0 ] && [ ! -x "$QEMU_NEW" ] && [ "$QEMU_NEW" = "$CACHE/qemu-backports/qemu-aarch64" ]; then
    step "qemu-user from $SUITE-backports, for the SME cross-check"
    B="$CACHE/qemu-backports"
    remove_tree "$B.partial"
    mkdir -p "$B.partial/lists/partial" "$B.partial/archives/partial"
    echo "deb $(mirror) $SUITE-backports main" >"$B.partial/sources.list"
    APT=(-o "Dir::Etc::SourceList=$B.partial/sources.list" -o Dir::Etc::SourceParts=/dev/null
         -o "Dir::State::Lists=$B.partial/lists" -o "Dir::Cache=$B.partial" -o APT::Sandbox::User=root)
    if apt-get "${APT[@]}" update -qq && (cd "$B.partial" && apt-get "${APT[@]}" download -qq "qemu-user/$SUITE-backports") \
        && dpkg-deb -x "$B.partial"/qemu-user_*.deb "$B.partial/x" && [ -x "$B.partial/x/usr/bin/qemu-aarch64" ]; then
        mkdir -p "$B" && cp "$B.partial/x/usr/bin/qemu-aarch64" "$B/qemu-aarch64.tmp" && mv "$B/qemu-aarch64.tmp" "$B/qemu-aarch64"
    else
        echo "could not fetch qemu-user from $SUITE-backports: the sme-qemu10 profile is skipped"
    fi
    remove_tree "$B.partial"
fi
if [ "$QEMU_NEW" != 0 ] && [ -x "$QEMU_NEW" ]; then
    # static: it runs inside the chroot, started explicitly instead of through binfmt_misc
    if file -L "$QEMU_NEW" 2>/dev/null | grep -q "dynamically linked"; then
        echo "$QEMU_NEW is dynamically linked: the sme-qemu10 profile is skipped"
    else
        QEMU_NEW_VERSION=$("$QEMU_NEW" --version | head -n1)
        echo "$QEMU_NEW_VERSION"
    fi
fi

# -- the plan, on aarch64 (emulated) and on this x86-64 machine ------------------------------------
step "the device runner on aarch64 (qemu-user), then on x86-64"
T=$(now)
GUEST=/opt/edgeinc-check
remove_tree "$ROOTFS$GUEST"
mkdir -p "$ROOTFS$GUEST"
cp -a "$PAYLOAD/." "$ROOTFS$GUEST/"
# cpuinfo (XNNPACK's CPU detection) needs the list of CPUs from /sys, or XNNPACK does not start and LiteRT
# silently runs its own kernels. The host's /sys makes it crash (TOOLCHAIN trap 14), so the root file
# system gets a /sys of two files: which CPUs exist, as the kernel would say.
mountpoint -q "$ROOTFS/sys" && die "$ROOTFS/sys is a mount point: refusing to write the CPU list into it"
mkdir -p "$ROOTFS/sys/devices/system/cpu"
for f in possible present; do echo "0-$(($(nproc) - 1))" >"$ROOTFS/sys/devices/system/cpu/$f"; done
mount_proc "$ROOTFS"
ET_PATH=""
if [ "$WITH_EXECUTORCH" != 0 ]; then   # the .pte runs' Python path, bound in for the runs only
    mkdir -p "$ROOTFS$ET_SITE"
    mount --bind "$ET_LAYER/site" "$ROOTFS$ET_SITE"
    MOUNTS+=("$ROOTFS$ET_SITE")
    ET_PATH=$ET_SITE
fi
SKIPPED=()
while IFS=$'\t' read -r profile qemu cpu cpuinfo; do
    launch=""
    if [ "$qemu" = backports ]; then
        if [ -z "$QEMU_NEW_VERSION" ]; then SKIPPED+=(--skipped "$profile=no newer qemu-user"); continue; fi
        cp "$QEMU_NEW" "$ROOTFS/opt/edgeinc/qemu-new"
        launch="/opt/edgeinc/qemu-new -cpu $cpu"
    fi
    echo "profile $profile: QEMU_CPU=$cpu${launch:+ ($launch)}${cpuinfo:+, /proc/cpuinfo $cpuinfo}"
    if [ "$cpuinfo" != - ]; then   # the core type cpuinfo reads (qemu 7.2 shows the host's x86 cpuinfo)
        mount --bind "$ROOTFS$GUEST/$cpuinfo" "$ROOTFS/proc/cpuinfo"
        MOUNTS+=("$ROOTFS/proc/cpuinfo")
    fi
    et_path=""; [ "$profile" = main ] && et_path=$ET_PATH   # the .pte runs are in the main profile
    in_rootfs "$ROOTFS" QEMU_CPU="$cpu" LAUNCH="$launch" PY="$VENV/bin/python" ET_PYTHONPATH="$et_path" \
        /bin/sh -c "cd $GUEST && sh run.sh out-device device $profile" </dev/null
    if [ "$cpuinfo" != - ]; then umount "$ROOTFS/proc/cpuinfo"; unset 'MOUNTS[${#MOUNTS[@]}-1]'; fi
done <"$PAYLOAD/profiles.tsv"
unmount_all
rm -f "$ROOTFS/opt/edgeinc/qemu-new"
remove_tree "$WORK/out-device"
cp -a "$ROOTFS$GUEST/out-device" "$WORK/out-device"
remove_tree "$ROOTFS$GUEST"
DEVICE_S=$(since "$T")
T=$(now)
remove_tree "$PAYLOAD/out-host"
(cd "$PAYLOAD" && PY="$PY" sh run.sh out-host host)
remove_tree "$WORK/out-host"
mv "$PAYLOAD/out-host" "$WORK/out-host"
HOST_S=$(since "$T")

# -- parity, merge, results -------------------------------------------------------------------------
step "parity and results"
cd "$ROOT"
"$PY" deploy/arm_check.py compare --work "$WORK" --payload "$PAYLOAD" --results "$RESULTS" \
    --device-out "$WORK/out-device" --host-out "$WORK/out-host" --rootfs "$ROOTFS" --key "$KEY" \
    --rootfs-state "$ROOTFS_STATE" --qemu "$QEMU_VERSION" --started "$T0" \
    --stage "host_tools=$HOST_TOOLS_S" --stage "rootfs=$ROOTFS_S" --stage "model_and_payload=$MODEL_S" \
    --stage "aarch64_runs=$DEVICE_S" --stage "x86_runs=$HOST_S" --qemu-new "$QEMU_NEW_VERSION" "${SKIPPED[@]}" \
    --stage "executorch_layer=$ET_S" --executorch-packages "$([ "$WITH_EXECUTORCH" != 0 ] && echo "$ET_LAYER/packages.json")"
