"""The 13 nuScenes tables: fixed vocabularies (category, attribute, visibility, sensor), tokens,
and deterministic JSON writing.

Tokens are 32 hex digits like nuScenes' own: an MD5 of a path of names, so the same seed and
scene always give the same tokens, and the vocabulary tokens are the same in every world.
Descriptions are written here in our own words; the names are nuScenes' (the devkit maps them to
the detection classes).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from imkd_core.sample import ATTRIBUTES, CAMERA_NAMES, LIDAR_NAME, RADAR_NAMES

TABLE_NAMES: tuple[str, ...] = (
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
    "sample_annotation", "sample_data", "scene", "sensor", "visibility",
)

# All 23 nuScenes categories (the world uses the ones that map to the 10 detection classes, plus
# movable_object.pushable_pullable as an unscored distractor).
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("human.pedestrian.adult", "Adult pedestrian."),
    ("human.pedestrian.child", "Child pedestrian."),
    ("human.pedestrian.wheelchair", "Wheelchair, with its occupant."),
    ("human.pedestrian.stroller", "Stroller, with its occupant."),
    ("human.pedestrian.personal_mobility", "Scooter, skateboard or segway with its rider."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.construction_worker", "Construction worker."),
    ("animal", "Animal."),
    ("vehicle.car", "Passenger car, van, SUV."),
    ("vehicle.motorcycle", "Motorcycle or scooter, with its rider if any."),
    ("vehicle.bicycle", "Bicycle, with its rider if any."),
    ("vehicle.bus.bendy", "One section of an articulated bus."),
    ("vehicle.bus.rigid", "Rigid bus."),
    ("vehicle.truck", "Truck, lorry, pick-up."),
    ("vehicle.construction", "Construction vehicle."),
    ("vehicle.emergency.ambulance", "Ambulance."),
    ("vehicle.emergency.police", "Police vehicle."),
    ("vehicle.trailer", "Trailer, hauled or parked."),
    ("movable_object.barrier", "Temporary road barrier."),
    ("movable_object.trafficcone", "Traffic cone."),
    ("movable_object.pushable_pullable", "Bin, trolley or other object a person can push."),
    ("movable_object.debris", "Debris on the road."),
    ("static_object.bicycle_rack", "Bicycle rack."),
)
ATTRIBUTE_DESCRIPTIONS = {
    "vehicle.moving": "Vehicle is moving.",
    "vehicle.stopped": "Vehicle with a driver is standing still but about to move.",
    "vehicle.parked": "Vehicle is parked.",
    "cycle.with_rider": "Bicycle or motorcycle with a rider.",
    "cycle.without_rider": "Bicycle or motorcycle without a rider.",
    "pedestrian.sitting_lying_down": "Person is sitting or lying down.",
    "pedestrian.standing": "Person is standing.",
    "pedestrian.moving": "Person is walking.",
}
VISIBILITY: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of the whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of the whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of the whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of the whole object is between 80 and 100%"),
)
CHANNELS: tuple[tuple[str, str], ...] = (
    *((c, "camera") for c in CAMERA_NAMES), (LIDAR_NAME, "lidar"),
    *((r, "radar") for r in RADAR_NAMES))


def stable_token(*parts: object) -> str:
    """A token that depends only on the names (vocabulary tables)."""
    return hashlib.md5("/".join(["imkd-world", *map(str, parts)]).encode()).hexdigest()


def seeded_token(seed: int, *parts: object) -> str:
    """A token that depends on the world's seed and the record's identity."""
    return stable_token("seed", seed, *parts)


def category_table() -> list[dict]:
    return [{"token": stable_token("category", n), "name": n, "description": d, "index": i}
            for i, (n, d) in enumerate(CATEGORIES)]


def attribute_table() -> list[dict]:
    return [{"token": stable_token("attribute", n), "name": n,
             "description": ATTRIBUTE_DESCRIPTIONS[n]} for n in ATTRIBUTES]


def visibility_table() -> list[dict]:
    return [{"description": d, "token": t, "level": lvl} for t, lvl, d in VISIBILITY]


def sensor_table() -> list[dict]:
    return [{"token": stable_token("sensor", c), "channel": c, "modality": m}
            for c, m in CHANNELS]


def visibility_token(fraction: float) -> str:
    if fraction < 0.4:
        return "1"
    if fraction < 0.6:
        return "2"
    if fraction < 0.8:
        return "3"
    return "4"


def dumps_table(rows: list[dict]) -> str:
    """One record per line: compact, diff-able, byte-stable."""
    if not rows:
        return "[]\n"
    return "[\n" + ",\n".join(json.dumps(r, separators=(", ", ": ")) for r in rows) + "\n]\n"


def write_tables(table_dir: Path, tables: dict[str, list[dict]]) -> None:
    missing = [t for t in TABLE_NAMES if t not in tables]
    if missing:
        raise ValueError(f"tables missing: {missing}")
    table_dir.mkdir(parents=True, exist_ok=True)
    for name in TABLE_NAMES:
        (table_dir / f"{name}.json").write_text(dumps_table(tables[name]), encoding="utf-8")
