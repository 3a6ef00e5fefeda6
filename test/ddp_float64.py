"""`imkd train` in float64, for test_ddp.py: `python test/ddp_float64.py ARGS...` (under torchrun
or alone) runs `imkd ARGS...` with the model and every batch in double precision.

Why: N processes x batch b and one process x batch N*b sum the same terms in another order.
In float32 that rounding (1e-3 relative in gradients that nearly cancel, such as those of the
BatchNorm biases) is amplified by AdamW, which divides each gradient by its own magnitude, so
parameters drift apart by a tenth of their update within four steps although the maths is the
same. In float64 the rounding is ~1e-13, so the test can tell the maths (sharded sampler, global
loss normalisers, synchronised BatchNorm, averaged gradients) from the rounding.
"""

from __future__ import annotations

import sys

import torch

import imkd_core.train.loop as loop
from imkd_core.cli import main


def _double_batch(batch, device):
    return {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in original_to_device(batch, device).items()}


torch.set_default_dtype(torch.float64)
original_to_device, original_build = loop.to_device, loop.build_model
loop.to_device = _double_batch
loop.build_model = lambda kind, config: original_build(kind, config).double()

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
