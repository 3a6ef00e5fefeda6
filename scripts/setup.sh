#!/usr/bin/env bash
# Create or refresh the project environment in .venv (idempotent).
#
# 1. a Python 3.11 venv with the pinned dependencies (requirements/*.txt, pip -c constraints);
# 2. the project itself, editable;
# 3. the ROS 2 interface packages this install lacks (interfaces/*), built with the PyPI wheels'
#    own rosidl toolchain and installed into the venv prefix, where the wheels' bootstrapper
#    already puts <venv>/lib on LD_LIBRARY_PATH. A package that a sourced ROS 2 distro already
#    provides is not built: the distro's is used.
# 4. where no sourced distro has its own `ros2` and `launch`, the venv is made an ament prefix
#    like a colcon install, so `ros2 launch|run|topic|param|...` work as on a distro:
#    - the ROS 2 command line and launch (`launch*`, `ros2*`, `rosidl_runtime_py`,
#      `sensor_msgs_py`) from the wheels in $ROS2CLI_WHEELS (default: ../shared/wheels/ros2cli
#      beside the repo; none there: setup says so and goes on), with the PyPI packages they need
#      (requirements/ros2cli.txt) and the composition_interfaces package that launch_ros
#      imports, built as in 3.;
#    - imkd_ros in the venv's ament index: every file setup.py's data_files installs, as a link
#      to the source, and lib/imkd_ros/<console script> as a link to pip's bin/<script>;
#    - bin/activate appends the venv to AMENT_PREFIX_PATH (deactivate restores it).
# A stamp over every input makes a second run a no-op that returns in well under a second.
#
# ROS_DISTRO_WHEELS=jazzy (`make setup-jazzy`) builds instead the ROS 2 Jazzy venv of the
# cross-distro test (test/test_jazzy.py) in $IMKD_JAZZY_VENV (default
# ${XDG_CACHE_HOME:-~/.cache}/imkd_ros/venv-jazzy, outside the clone so that it outlives it):
# requirements/jazzy.txt (the node's runtime only) with the Jazzy pins of
# requirements/constraints-jazzy.txt over the other pins of constraints.txt, and the
# interfaces built with Jazzy's toolchain; not the project (run it with PYTHONPATH=<repo>), not
# the command line, no ament prefix. Runs on one such venv take turns (a lock beside it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DISTRO=${ROS_DISTRO_WHEELS:-kilted}
case $DISTRO in
    kilted)
        VENV=${IMKD_VENV:-$ROOT/.venv}
        REQUIREMENTS=requirements/requirements.txt
        # every input of the venv but interfaces/ and scripts/setup.sh (inputs_hash adds those)
        INPUTS=(requirements/requirements.txt requirements/constraints.txt
                requirements/ros2cli.txt setup.py setup.cfg package.xml) ;;
    jazzy)
        VENV=${IMKD_JAZZY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/imkd_ros/venv-jazzy}
        REQUIREMENTS=requirements/jazzy.txt
        INPUTS=(requirements/jazzy.txt requirements/constraints-jazzy.txt
                requirements/constraints.txt) ;;
    *)
        echo "setup: ROS_DISTRO_WHEELS=$DISTRO: expected kilted (the default) or jazzy" >&2
        exit 1 ;;
esac
STAMP=$VENV/.imkd-setup-stamp
if [[ $DISTRO == jazzy ]]; then
    mkdir -p "$(dirname "$VENV")"
    exec {lock_fd}>"$VENV.lock"
    flock "$lock_fd"
fi
WHEELS=$(realpath -m "${ROS2CLI_WHEELS:-$ROOT/../shared/wheels/ros2cli}")

# AMENT_PREFIX_PATH without this venv (which bin/activate adds): the sourced distros, one a line.
foreign_prefixes() {
    local prefix
    IFS=: read -ra prefixes <<<"${AMENT_PREFIX_PATH:-}"
    for prefix in "${prefixes[@]}"; do
        if [[ -n $prefix && $(realpath -m "$prefix") != $(realpath -m "$VENV") ]]; then
            echo "$prefix"
        fi
    done
}

# Is $1 provided by a ROS 2 prefix other than our own venv (i.e. a sourced distro)?
provided_by_distro() {
    local prefix
    while read -r prefix; do
        [[ -f $prefix/share/$1/package.xml ]] && { echo "$prefix"; return 0; }
    done < <(foreign_prefixes)
    return 1
}

inputs_hash() {
    {
        (cd "$ROOT" && cat "${INPUTS[@]}" scripts/setup.sh $(find interfaces -type f | sort))
        if [[ $DISTRO == kilted ]]; then
            # a file added to or removed from what setup.py installs changes the venv's links
            (cd "$ROOT" && find launch config resource models -type f | sort)
            echo "$WHEELS"
            if [[ -d $WHEELS ]]; then
                (cd "$WHEELS" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
            fi
        fi
    } | sha256sum | cut -d' ' -f1
    # A distro sourced or unsourced since the last run changes what must be built.
    foreign_prefixes
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

CONSTRAINTS=$ROOT/requirements/constraints.txt
if [[ $DISTRO == jazzy ]]; then
    # constraints-jazzy.txt, then constraints.txt's pins of everything else (no Kilted ros-*)
    CONSTRAINTS=$VENV/constraints.txt
    awk 'function name(line) {
             line = tolower(line); sub(/[<>=!~;[ ].*/, "", line); gsub(/[-_.]+/, "-", line)
             return line
         }
         /^[[:space:]]*(#|$)/ { next }
         FNR == NR { jazzy[name($0)]; print; next }
         !(name($0) in jazzy) && name($0) !~ /^ros-/' \
        "$ROOT/requirements/constraints-jazzy.txt" "$ROOT/requirements/constraints.txt" \
        >"$CONSTRAINTS"
fi

echo "setup: installing pinned dependencies ($DISTRO)"
"$PY" -m pip install --quiet --disable-pip-version-check \
    -c "$CONSTRAINTS" -r "$ROOT/$REQUIREMENTS" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
if [[ $DISTRO == kilted ]]; then
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
        -e "$ROOT"
fi

# --- interfaces ------------------------------------------------------------------------------
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

# Build the interface package in folder $1 into the venv, unless a distro has it.
build_interface() {
    local pkg_dir=${1%/} pkg distro build pkg_hash log
    pkg=$(basename "$pkg_dir")
    if distro=$(provided_by_distro "$pkg"); then
        echo "setup: $pkg comes from $distro; not building it"
        return
    fi
    build=$VENV/build/interfaces/$pkg
    pkg_hash=$(cd "$pkg_dir" && find . -type f -print0 | sort -z | xargs -0 cat | sha256sum)
    if [[ -f $build.stamp && "$(cat "$build.stamp")" == "$pkg_hash" ]]; then
        echo "setup: $pkg is built and unchanged"
        return
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
}

for pkg_dir in "$ROOT"/interfaces/*/; do
    build_interface "$pkg_dir"
done

# --- the ROS 2 command line and the venv as an ament prefix ----------------------------------
# The command line wheels ($WHEELS/*.whl): the PyPI packages they need first, then the wheels
# without dependencies (launch_ros names `ament_index_python`, which the PyPI wheels install
# under another distribution name, and `launch` on PyPI is an unrelated project). Reinstalled
# only when the wheels change.
install_ros2cli() {
    local wheels_hash stamp=$VENV/build/ros2cli-wheels.stamp
    "$PY" -m pip install --quiet --disable-pip-version-check \
        -c "$ROOT/requirements/constraints.txt" -r "$ROOT/requirements/ros2cli.txt" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    wheels_hash=$(cat "$WHEELS"/*.whl | sha256sum)
    if [[ ! -f $stamp || "$(cat "$stamp")" != "$wheels_hash" ]]; then
        echo "setup: installing the ROS 2 command line from $WHEELS"
        "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall \
            "$WHEELS"/*.whl
        mkdir -p "$(dirname "$stamp")"
        echo "$wheels_hash" >"$stamp"
    fi
    build_interface "$WHEELS/composition_interfaces"
}

unregister_package() {
    rm -rf "$VENV/share/imkd_ros" "$VENV/lib/imkd_ros" \
        "$VENV/share/ament_index/resource_index/packages/imkd_ros"
}

# imkd_ros in the venv's ament index, laid out as `colcon build --symlink-install` lays it out:
# links, not copies, so edits to launch/ and config/ take effect at once, as edits to the
# editable Python code do, and the venv holds exactly what setup.py installs (a file the launch
# file needs but setup.py misses fails here as it would on a distro). Links to files, not to
# folders: `ros2 launch` finds launch files with os.walk, which does not enter linked folders.
register_package() {
    local layout kind target source
    layout=$(cd "$ROOT" && "$PY" - <<'PYLAYOUT'
import runpy

import setuptools

kwargs = {}
setuptools.setup = lambda **given: kwargs.update(given)
runpy.run_path("setup.py", run_name="__main__")
for target, sources in kwargs["data_files"]:
    for source in sources:
        print(f"data\t{target}\t{source}")
for spec in kwargs["entry_points"]["console_scripts"]:
    print(f"script\tlib/imkd_ros\t{spec.split('=')[0].strip()}")
PYLAYOUT
    )
    unregister_package
    while IFS=$'\t' read -r kind target source; do
        mkdir -p "$VENV/$target"
        if [[ $kind == data ]]; then
            ln -sfn "$ROOT/$source" "$VENV/$target/$(basename "$source")"
        else  # `ros2 run` and launch_ros look for executables in lib/<package>
            ln -s "../../bin/$source" "$VENV/$target/$source"
        fi
    done <<<"$layout"
    echo "setup: imkd_ros is in $VENV's ament index (share/imkd_ros links to the sources)"
}

# Add ($1 = add) or remove ($1 = remove) the AMENT_PREFIX_PATH lines of bin/activate.
activate_hook() {
    "$PY" - "$VENV/bin/activate" "$1" <<'PYHOOK'
import re
import sys
from pathlib import Path

path, mode = Path(sys.argv[1]), sys.argv[2]
restore = """\
    # >>> imkd_ros (scripts/setup.sh)
    if [ -n "${_IMKD_OLD_AMENT_PREFIX_PATH+set}" ] ; then
        AMENT_PREFIX_PATH="$_IMKD_OLD_AMENT_PREFIX_PATH"
        export AMENT_PREFIX_PATH
        [ -n "$AMENT_PREFIX_PATH" ] || unset AMENT_PREFIX_PATH
        unset _IMKD_OLD_AMENT_PREFIX_PATH
    fi
    # <<< imkd_ros
"""
append = """\
# >>> imkd_ros (scripts/setup.sh): this venv is an ament prefix (ros2 launch|run find imkd_ros)
_IMKD_OLD_AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:-}"
case ":${AMENT_PREFIX_PATH:-}:" in
    *":$VIRTUAL_ENV:"*) ;;
    *) AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:+$AMENT_PREFIX_PATH:}$VIRTUAL_ENV"
       export AMENT_PREFIX_PATH ;;
esac
# <<< imkd_ros
"""
text = re.sub(r"[ \t]*# >>> imkd_ros .*?# <<< imkd_ros\n", "", path.read_text(), flags=re.S)
if mode == "add":
    head = "deactivate () {\n"
    if head not in text:
        sys.exit(f"setup: {path} has no '{head.strip()}' line to restore AMENT_PREFIX_PATH in")
    text = text.replace(head, head + restore, 1) + append
path.write_text(text)
PYHOOK
}

checks=(rclpy vision_msgs.msg tf2_msgs.msg sensor_msgs.msg visualization_msgs.msg torch rosbags)
check_path=
if [[ $DISTRO == jazzy ]]; then
    # the node from the sources, as test/test_jazzy.py runs it
    checks+=(diagnostic_msgs.msg imkd_ros.detector_node)
    check_path=$ROOT
elif distro=$(provided_by_distro ros2cli || provided_by_distro launch); then
    echo "setup: the ROS 2 command line and launch come from $distro; not installing them"
    checks+=(nuscenes imkd_core imkd_ros)
    unregister_package
    activate_hook remove
else
    checks+=(nuscenes imkd_core imkd_ros)
    if [[ -d $WHEELS ]]; then
        install_ros2cli
        checks+=(launch_ros.actions launch_testing launch_xml launch_yaml ros2cli.cli
                 composition_interfaces.srv rosidl_runtime_py sensor_msgs_py.point_cloud2)
    else
        echo "setup: no ROS 2 command line wheels in $WHEELS (ROS2CLI_WHEELS=... names" \
            "another folder); not installing \`ros2\` and launch (README: \`ros2 launch\`" \
            "without a distro)"
    fi
    register_package
    activate_hook add
fi

env ${check_path:+PYTHONPATH=$check_path} "$PY" - "${checks[@]}" <<'PYCHECK'
import importlib
import sys
for module in sys.argv[1:]:
    importlib.import_module(module)
print("setup: all imports work")
PYCHECK

inputs_hash >"$STAMP"
echo "setup: done ($VENV)"
