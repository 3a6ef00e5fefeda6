#!/usr/bin/env bash
# The GPU check of issue 14, for a machine with an NVIDIA GPU and a copy of this repository
# (it may have no internet): checks the setup, exports the r50_256x704 student to ONNX, then
# times at batch 1 (random weights: speed only)
#   - the student forward: torch eager fp32, torch eager fp16 (autocast), ONNX Runtime CUDA
#     fp32, and ONNX Runtime TensorRT fp16 where TensorRT's execution provider is installed;
#   - the node's pipeline (DetectorPipeline: preprocess 6 x 900x1600 images + 5 radars ->
#     model -> decode) with backend torch and backend onnxruntime, device cuda;
# and prints FPS against the paper's 25 FPS (R50, 256x704). Budget: under 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # uses .venv/bin/python if present, else python3
#   PYTHON=/opt/venv/bin/python REPEATS=50 bash benchmarks/gpu_check.sh
#
# Exit status: 0 done; 2 something it needs is missing (said which, on stderr): no NVIDIA
# driver, a torch without CUDA, onnx/onnxruntime missing. An onnxruntime without the CUDA
# execution provider is not fatal: it tries `pip install onnxruntime-gpu` (offline: a wheel
# in $WHEELS, if given), and otherwise times the torch rows only and says so.
set -u -o pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
REPEATS=${REPEATS:-30}
OUT=${OUT_DIR:-$(mktemp -d /tmp/imkd_gpu_check.XXXXXX)}
fail() { echo "gpu_check: FAILED: $*" >&2; exit 2; }
say() { echo "gpu_check [$(( $(date +%s) - START )) s]: $*"; }

say "python $PY; output in $OUT"
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: no NVIDIA driver on this machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    || fail "nvidia-smi cannot talk to the driver"
"$PY" - <<'EOF' || fail "the Python environment is incomplete (see above)"
import importlib, sys
missing = []
for mod in ("numpy", "torch", "onnx", "onnxscript", "onnxruntime", "yaml"):
    try:
        m = importlib.import_module(mod)
        print(f"  ok       {mod} {getattr(m, '__version__', '')}")
    except Exception as exc:
        missing.append(mod)
        print(f"  MISSING  {mod}: {exc}", file=sys.stderr)
if "torch" not in missing:
    import torch
    if not torch.cuda.is_available():
        print(f"  torch {torch.__version__} has no CUDA (torch.version.cuda="
              f"{torch.version.cuda}): install a CUDA build of torch", file=sys.stderr)
        missing.append("torch+cuda")
sys.exit(1 if missing else 0)
EOF

has_cuda_ep() {
    "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"
}
if ! has_cuda_ep; then
    say "onnxruntime has no CUDAExecutionProvider; trying pip install onnxruntime-gpu"
    PIP_ARGS=(--quiet --disable-pip-version-check)
    [ -n "${WHEELS:-}" ] && PIP_ARGS+=(--no-index --find-links "$WHEELS")
    if timeout 120 "$PY" -m pip install "${PIP_ARGS[@]}" onnxruntime-gpu; then
        # onnxruntime and onnxruntime-gpu share the module: the CPU one must go
        "$PY" -m pip uninstall --quiet -y onnxruntime >/dev/null 2>&1 || true
        timeout 120 "$PY" -m pip install "${PIP_ARGS[@]}" --force-reinstall --no-deps \
            onnxruntime-gpu || true
    fi
    has_cuda_ep || echo "gpu_check: MISSING onnxruntime-gpu (no internet or no wheel;" \
        "set WHEELS=DIR with an onnxruntime-gpu wheel): the ONNX Runtime CUDA rows are" \
        "skipped" >&2
fi

"$PY" - "$OUT" "$REPEATS" <<'EOF'
import statistics, sys, time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, ".")
from imkd_core.checkpoint import save_checkpoint
from imkd_core.config import load_model_config
from imkd_core.data.synthetic import make_sample
from imkd_core.export import OUTPUTS, export_checkpoint, flat_inputs, geometry_lift
from imkd_core.pipeline import DetectorPipeline

out, repeats = Path(sys.argv[1]), int(sys.argv[2])
TARGET_FPS = 25.0
dev = torch.device("cuda")
print(f"torch {torch.__version__} CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}; "
      f"onnxruntime {ort.__version__} providers {ort.get_available_providers()}")
cfg = load_model_config("r50_256x704")
pipe = DetectorPipeline.from_config(cfg, device="cuda", seed=0)
save_checkpoint(out / "r50.pt", pipe.model, cfg)
t0 = time.perf_counter()
export_checkpoint(out / "r50.pt", "onnx", out / "r50.onnx")
print(f"ONNX export {time.perf_counter() - t0:.0f} s")
sample = make_sample(0, num_objects=12, image_hw=(900, 1600))
batch = pipe.preprocess(sample)
rows = []


def timed(name, fn, sync=True):
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    ms = 1e3 * statistics.median(times)
    rows.append((name, ms))
    print(f"  {name:52s} {ms:8.2f} ms  {1e3 / ms:7.1f} FPS", flush=True)


print(f"student forward, batch 1, {repeats} repeats (median):")
with torch.inference_mode():
    timed("torch eager fp32", lambda: pipe.model(batch))
    with torch.autocast("cuda", dtype=torch.float16):
        timed("torch eager fp16 (autocast)", lambda: pipe.model(batch))
    ref = pipe.model(batch)

cpu_inputs = {k: v.cpu() for k, v in flat_inputs({k: v.cpu() for k, v in batch.items()},
                                                 geometry_lift(cfg)).items()}
available = ort.get_available_providers()
if "CUDAExecutionProvider" in available:
    feeds = {k: v.numpy() for k, v in cpu_inputs.items()}
    sess = ort.InferenceSession(str(out / "r50.onnx"), providers=["CUDAExecutionProvider"])
    got = sess.run(list(OUTPUTS), feeds)
    diff = max(float(np.abs(g - ref[n].float().cpu().numpy()).max())
               for g, n in zip(got, OUTPUTS))
    print(f"  ORT CUDA vs torch CUDA head maps: max abs diff {diff:.2e}")
    # inputs on the GPU already (IOBinding): the forward alone, as torch's rows
    binding = sess.io_binding()
    for k, v in feeds.items():
        binding.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0))
    for n in OUTPUTS:
        binding.bind_output(n, "cuda")
    timed("ORT CUDA fp32 (IOBinding)", lambda: sess.run_with_iobinding(binding), sync=False)
    if "TensorrtExecutionProvider" in available:
        try:
            trt = ort.InferenceSession(str(out / "r50.onnx"), providers=[
                ("TensorrtExecutionProvider", {"trt_fp16_enable": True,
                                               "trt_engine_cache_enable": True,
                                               "trt_engine_cache_path": str(out)}),
                "CUDAExecutionProvider"])
            timed("ORT TensorRT fp16", lambda: trt.run(list(OUTPUTS), feeds), sync=False)
        except Exception as exc:
            print(f"  ORT TensorRT fp16: FAILED {type(exc).__name__}: {exc}")
    else:
        print("  ORT TensorRT: TensorrtExecutionProvider not installed (skipped)")
else:
    print("  ORT CUDA: skipped (no CUDAExecutionProvider, see above)")

print("the node's pipeline (preprocess 6 x 900x1600 + 5 radars -> model -> decode):")
timed("DetectorPipeline torch cuda", lambda: pipe(sample))
if "CUDAExecutionProvider" in available:
    ort_pipe = DetectorPipeline.from_file(out / "r50.onnx", device="cuda",
                                          backend="onnxruntime")
    print(f"  ({ort_pipe.backend.label})")
    timed("DetectorPipeline onnxruntime cuda", lambda: ort_pipe(sample))
best = min(rows, key=lambda r: r[1])
print(f"fastest: {best[0]}: {1e3 / best[1]:.1f} FPS (paper's figure to beat: {TARGET_FPS} FPS "
      f"for R50 at 256x704) -> {'BEATS' if 1e3 / best[1] > TARGET_FPS else 'below'} it")
EOF
status=$?
say "done (status $status)"
exit $status
