#!/usr/bin/env bash
# Create or refresh the project environment in .venv (idempotent).
#
# 1. a Python 3.11 venv with the pinned dependencies (requirements/*.txt, pip -c constraints);
# 2. the project itself, editable;
# 3. the ROS 2 interface packages this install lacks (interfaces/*), built with the PyPI wheels'
#    own rosidl toolchain and installed into the venv prefix, where the wheels' bootstrapper
#    already puts <venv>/lib on LD_LIBRARY_PATH. A package that a sourced ROS 2 distro already
#    provides is not built: the distro's is used.
# A stamp over every input makes a second run a no-op that returns in well under a second.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${IMKD_VENV:-$ROOT/.venv}
STAMP=$VENV/.imkd-setup-stamp

inputs_hash() {
    (cd "$ROOT" && cat requirements/*.txt setup.py setup.cfg package.xml scripts/setup.sh \
        $(find interfaces -type f | sort)) | sha256sum | cut -d' ' -f1
    # A distro sourced or unsourced since the last run changes what must be built.
    echo "${AMENT_PREFIX_PATH:-}"
}

if [[ -f $STAMP && "$(cat "$STAMP")" == "$(inputs_hash)" && -x $VENV/bin/python ]]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

pick_python() {
    for candidate in "${PYTHON:-}" python3.11 python3; do
        [[ -n $candidate ]] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            echo "$candidate"
            return
        fi
    done
    echo "setup: Python 3.11 is required (the ROS 2 wheels are cp311); set PYTHON=..." >&2
    exit 1
}

if [[ ! -x $VENV/bin/python ]]; then
    echo "setup: creating $VENV"
    "$(pick_python)" -m venv "$VENV"
fi
PY=$VENV/bin/python

echo "setup: installing pinned dependencies"
"$PY" -m pip install --quiet --disable-pip-version-check \
    -c "$ROOT/requirements/constraints.txt" -r "$ROOT/requirements/requirements.txt" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    -e "$ROOT"

# --- interfaces ------------------------------------------------------------------------------
# Is $1 provided by a ROS 2 prefix other than our own venv (i.e. a sourced distro)?
provided_by_distro() {
    local prefix
    IFS=: read -ra prefixes <<<"${AMENT_PREFIX_PATH:-}"
    for prefix in "${prefixes[@]}"; do
        [[ -n $prefix && $(realpath -m "$prefix") != $(realpath -m "$VENV") ]] || continue
        [[ -f $prefix/share/$1/package.xml ]] && { echo "$prefix"; return 0; }
    done
    return 1
}

# The wheels' exported CMake targets list two include directories of the machine they were
# built on; CMake only checks that they exist.
for dir in /opt/python/cp311-cp311/include/python3.11 \
    /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include; do
    if ! mkdir -p "$dir" 2>/dev/null; then
        echo "setup: cannot create $dir, which the ROS wheels' CMake targets require;" \
            "create it once with: sudo mkdir -p $dir" >&2
        exit 1
    fi
done

for pkg_dir in "$ROOT"/interfaces/*/; do
    pkg=$(basename "$pkg_dir")
    if distro=$(provided_by_distro "$pkg"); then
        echo "setup: $pkg comes from $distro; not building it"
        continue
    fi
    build=$VENV/build/interfaces/$pkg
    pkg_hash=$(cd "$pkg_dir" && find . -type f -print0 | sort -z | xargs -0 cat | sha256sum)
    if [[ -f $build.stamp && "$(cat "$build.stamp")" == "$pkg_hash" ]]; then
        echo "setup: $pkg is built and unchanged"
        continue
    fi
    echo "setup: building interface package $pkg"
    rm -rf "$build"
    mkdir -p "$build"
    log=$build/build.log
    if ! (cd "$build" &&
        AMENT_PREFIX_PATH=$VENV cmake "$pkg_dir" \
            -DCMAKE_PREFIX_PATH="$VENV" \
            -DCMAKE_INSTALL_PREFIX="$VENV" \
            -DPython3_EXECUTABLE="$PY" \
            -DBUILD_TESTING=OFF &&
        AMENT_PREFIX_PATH=$VENV make -j"$(nproc)" install) >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "setup: building $pkg failed; full log: $log" >&2
        exit 1
    fi
    echo "$pkg_hash" >"$build.stamp"
done

"$PY" - <<'PYCHECK'
import importlib
for module in ("rclpy", "vision_msgs.msg", "tf2_msgs.msg", "sensor_msgs.msg",
               "visualization_msgs.msg", "torch", "nuscenes", "rosbags", "imkd_core", "imkd_ros"):
    importlib.import_module(module)
print("setup: all imports work")
PYCHECK

inputs_hash >"$STAMP"
echo "setup: done ($VENV)"
