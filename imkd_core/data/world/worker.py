"""Worker process of `generate_world`: generates one scene from a job file.

`python -m imkd_core.data.world.worker JOB.json` reads {config, index, name, root, result},
writes the scene's sensor files under `root` and its table rows + timings to `result`.
IMKD_WORLD_FAIL_SCENE=<index> in the environment makes that scene fail (tests the error path).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from imkd_core.data.world.config import WorldConfig
from imkd_core.data.world.scene_writer import run_scene


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m imkd_core.data.world.worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    if os.environ.get("IMKD_WORLD_FAIL_SCENE") == str(job["index"]):
        raise RuntimeError(f"injected failure of scene {job['index']} (IMKD_WORLD_FAIL_SCENE)")
    result = run_scene(WorldConfig.from_dict(job["config"]), job["index"], job["name"],
                       Path(job["root"]))
    tmp = Path(job["result"] + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.rename(job["result"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
