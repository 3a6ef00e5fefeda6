"""Who and what is on one scene's street: the population steps, in order, that build a scene.

Objects of the 10 detection classes get class-typical sizes (nuScenes means, per-instance
variation), speeds and behaviour: cars, trucks, buses, motorcycles and truck+trailer combinations
drive in lanes (some slow to a stop or pull away), cars, trucks and trailers park, cyclists ride
the bike lane, pedestrians walk the sidewalks, wait at and cross zebra crossings, a construction
zone closes the parking lane with barriers, cones, a construction vehicle and workers in hi-vis.
Each step places its objects with `layout.SceneLayout._add` (free trajectories only) on the
street `layout` lays out; the result is the `scene.SceneModel` the sensors read.
"""

from __future__ import annotations

import numpy as np

from imkd_core.data.world import shapes
from imkd_core.data.world.config import WorldConfig
from imkd_core.data.world.layout import (
    ATTR,
    CLASS_SPECS,
    EGO_CENTRE_AHEAD,
    SceneLayout,
    integrate,
    sized,
    speed_profile,
)
from imkd_core.data.world.road import Road
from imkd_core.data.world.scene import LOCATIONS, SceneModel


class SceneBuilder(SceneLayout):
    """Lays out one scene's street and populates it (deterministic given the rng)."""

    def build(self) -> SceneModel:
        """Draw the road, lay out the street, populate it. Every step draws from the one rng in
        turn, so this order is part of the world's bytes."""
        rng, cfg = self.rng, self.cfg
        loc_name, left_hand, _ = LOCATIONS[self.index % len(LOCATIONS)]
        self.condition = cfg.conditions[self.index % len(cfg.conditions)]
        lanes = int(rng.choice([1, 2, 2, 3]))
        parking = 2.5 if rng.random() < 0.85 else 0.0
        bike = 1.6 if rng.random() < 0.6 else 0.0
        kappa = 0.0 if rng.random() < 0.4 else float(rng.choice([-1, 1]) * rng.uniform(1 / 600,
                                                                                         1 / 160))
        self.road_params = dict(lanes=lanes, lane_width=float(rng.uniform(3.2, 3.7)),
                                bike_lane=bike, parking=parking,
                                sidewalk=float(rng.uniform(2.5, 4.0)),
                                verge=float(rng.uniform(2.5, 6.0)), left_hand_traffic=left_hand,
                                yellow_centre=not left_hand)
        # the road's start is placed after the ego track is known (needs the s-span)
        self.road = Road(0.0, 0.0, 0.0, kappa, crosswalks=(), **self.road_params)
        self._ego()
        self._place_road_in_map()
        self._construction_zone()
        self._crosswalks()
        self._structure()
        self._ensure_all_classes()  # the rarer classes first, then the fill
        self._parked()
        self._traffic()
        self._cyclists()
        self._crossers()  # pedestrians cross where the traffic leaves a gap
        self._sidewalk_people()
        return self._model(loc_name, left_hand)

    def _construction_zone(self) -> None:
        """Barriers close the parking lane (or, without one, an oncoming lane) and the sidewalk
        behind it; cones taper in at both ends; a construction vehicle and workers inside."""
        rng, road = self.rng, self.road
        # without a parking lane the zone closes a driving lane: never the ego's side
        forward_side = bool(rng.random() < 0.5) and road.parking > 0
        sgn = road.forward_sign if forward_side else -road.forward_sign
        length = float(rng.uniform(14, 24))
        if self.s_hi - self.s_lo > 10:
            s0 = self._s_near_ego(-5.0, 20.0)
        else:
            s0 = self.s_lo + float(rng.uniform(8, 25)) * float(rng.choice([-1, 1]))
        self.zone = (s0 - 3.0, s0 + length + 3.0, sgn)
        if road.parking > 0:
            d_in = road.lanes_edge + road.bike_lane + 0.35
        else:
            d_in = road.lanes_edge - road.lane_width + 0.35
        d_out = road.sidewalk_outer - 0.3
        self.zone_lateral = (d_in, d_out)
        self.features.append("construction zone")
        bar = CLASS_SPECS["barrier"]
        s = s0
        while s < s0 + length:
            size = sized(rng, bar)
            x, y, th = road.to_world(s + size[1] / 2, sgn * (d_in + 0.1))
            self._add("barrier", size, shapes.barrier_parts(*size), x, y, th + np.pi / 2, -1,
                      margin=0.02)
            s += size[1] + float(rng.uniform(0.1, 0.4))
        cone = CLASS_SPECS["traffic_cone"]
        for end, direction in ((s0, -1.0), (s0 + length, 1.0)):
            n_c = int(rng.integers(3, 6))
            for k in range(n_c):
                frac = (k + 1) / n_c
                s_c = end + direction * (1.2 + 1.6 * k)
                d_c = sgn * (d_in - 0.1 + (d_out - d_in) * frac * 0.7)
                size = sized(rng, cone)
                x, y, th = road.to_world(s_c, d_c)
                self._add("traffic_cone", size, shapes.cone_parts(*size), x, y,
                          th + rng.uniform(0, 6.3), -1, margin=0.05)
        self._zone_vehicle()
        for _ in range(int(rng.integers(1, 4))):
            size = sized(rng, cone)
            x, y, th = road.to_world(rng.uniform(s0 + 1, s0 + length - 1),
                                     sgn * rng.uniform(d_in + 0.6, d_out - 0.3))
            self._add("traffic_cone", size, shapes.cone_parts(*size), x, y, th, -1, margin=0.1)
        self._zone_workers()

    def _zone_vehicle(self, tries: int = 8) -> bool:
        """The construction vehicle: parked in the zone, or creeping along it."""
        rng, road = self.rng, self.road
        lo, hi, sgn = self.zone
        s0, length = lo + 3.0, hi - lo - 6.0
        d_in, d_out = self.zone_lateral
        cv = CLASS_SPECS["construction_vehicle"]
        for _ in range(tries):
            size = sized(rng, cv)
            d_cv = sgn * min(d_in + 0.5 + size[1] / 2, d_out - size[1] / 2)
            lo_c, hi_c = s0 + size[0] / 2 + 0.3, max(s0 + length - size[0] / 2 - 0.3,
                                                    s0 + size[0] / 2 + 0.4)
            s_c = rng.uniform(lo_c, hi_c)
            if rng.random() < 0.35:
                v = speed_profile(rng, "wavy", rng.uniform(*cv.speed), self.t, 1)
                v = np.where(self.t < rng.uniform(0, self.horizon), 0.0, v)
                ss = np.clip(integrate(v, self.dt, self.i0, s_c), lo_c, hi_c)
            else:
                ss = np.full(self.n, s_c)
            x, y, th = road.to_world(ss, np.full(self.n, d_cv))
            heading = 0.0 if rng.random() < 0.5 else np.pi
            speed = np.abs(np.gradient(ss, self.dt))
            attr = (self._vehicle_attr(speed, parked=False) if speed.max() > 0.1
                    else np.full(self.n, ATTR["vehicle.parked"], np.int8))
            if self._add("construction_vehicle", size, self._vehicle_shape(
                    "construction_vehicle", size), x, y, np.unwrap(th + heading), attr,
                    margin=0.1):
                return True
        return False

    def _zone_workers(self) -> None:
        rng, road = self.rng, self.road
        lo, hi, sgn = self.zone
        s0, length = lo + 3.0, hi - lo - 6.0
        d_in, d_out = self.zone_lateral
        ped = CLASS_SPECS["pedestrian"]
        for _ in range(int(rng.integers(1, 4))):
            for _try in range(6):
                size = sized(rng, ped)
                shirt, trousers, skin = self._person_colours()
                s_w = rng.uniform(s0 + 0.5, s0 + length - 0.5)
                d_w = sgn * rng.uniform(d_in + 0.5, d_out - 0.3)
                moving = rng.random() < 0.4
                v = rng.uniform(0.3, 0.8) * rng.choice([-1, 1])
                if moving:
                    ss = np.clip(s_w + v * self.t, s0 + 0.3, s0 + length - 0.3)
                else:
                    ss = np.full(self.n, s_w)
                x, y, th = road.to_world(ss, np.full(self.n, d_w))
                speed = np.abs(np.gradient(ss, self.dt))
                yaw = th + ((0.0 if v > 0 else np.pi) if moving else rng.uniform(-np.pi, np.pi))
                attr = np.where(speed > 0.2, ATTR["pedestrian.moving"],
                                ATTR["pedestrian.standing"])
                if self._add("pedestrian", size, shapes.pedestrian_parts(
                        *size, shirt, trousers, skin, moving, hivis=True), x, y, yaw, attr,
                        margin=0.1, category="human.pedestrian.construction_worker"):
                    break

    def _crosswalks(self) -> None:
        rng, road = self.rng, self.road
        zone_lo, zone_hi, _ = self.zone
        candidates = []
        if self.ego_kind == "stop":  # the ego stops in front of a zebra crossing
            i_stop = int(np.argmax(self.ego_v < 0.05)) if (self.ego_v < 0.05).any() else None
            if i_stop is not None:
                candidates.append(float(self.ego_s[i_stop]) + EGO_CENTRE_AHEAD + 6.0)
        n_extra = int(rng.integers(1, 3))
        for _ in range(n_extra):
            candidates.append(self._s_near_ego(-15.0, 35.0))
        crosswalks = []
        for sc in candidates:
            if zone_lo - 4 < sc < zone_hi + 4 or any(abs(sc - c) < 15 for c in crosswalks):
                continue
            crosswalks.append(sc)
        self.road = Road(road.x0, road.y0, road.heading0, road.kappa,
                         crosswalks=tuple(crosswalks), **self.road_params)
        if crosswalks:
            self.features.append("zebra crossing")

    def _crossers(self) -> None:
        rng, road = self.rng, self.road
        ped = CLASS_SPECS["pedestrian"]
        for sc in road.crosswalks:
            for _ in range(int(rng.integers(2, 5))):
                for attempt in range(10):
                    size = sized(rng, ped, (1.0, 1.0, 0.7) if rng.random() < 0.1 else (1, 1, 1))
                    v = rng.uniform(*ped.speed)
                    direction = float(rng.choice([-1.0, 1.0]))
                    d_start = -direction * (road.edge + rng.uniform(0.4, 1.2))
                    t_go = rng.uniform(-1.0, self.horizon)
                    if attempt >= 7:  # no gap in the traffic: wait at the kerb
                        t_go = self.horizon + 10.0
                    tt = np.clip(self.t - t_go, 0, None)
                    d = d_start + direction * v * tt
                    d_end = direction * (road.edge + rng.uniform(0.6, 1.4))
                    crossing_done = direction * (d - d_end) > 0
                    walk_dir = float(rng.choice([-1.0, 1.0]))
                    t_done = t_go + abs(d_end - d_start) / v
                    s_off = rng.uniform(-1.5, 1.5)
                    s = sc + s_off + np.where(crossing_done, walk_dir * v * (self.t - t_done), 0)
                    d = np.where(crossing_done, d_end, d)
                    _, _, th = road.to_world(s, d)
                    yaw = np.where(crossing_done, th + (0 if walk_dir > 0 else np.pi),
                                   th + direction * np.pi / 2)
                    x, y, _ = road.to_world(s, d)
                    speed = np.hypot(np.gradient(x, self.dt), np.gradient(y, self.dt))
                    attr = np.where(speed > 0.2, ATTR["pedestrian.moving"],
                                    ATTR["pedestrian.standing"])
                    shirt, trousers, skin = self._person_colours()
                    category = ("human.pedestrian.child" if size[2] < 1.4
                                else "human.pedestrian.adult")
                    if self._add("pedestrian", size, shapes.pedestrian_parts(
                            *size, shirt, trousers, skin, True, False), x, y, np.unwrap(yaw),
                            attr, margin=0.35, category=category):
                        break

    def _parked(self) -> None:
        rng, road = self.rng, self.road
        if road.parking <= 0:
            return
        self.features.append("parked cars")
        for forward in (True, False):
            d = road.side_offset(forward, road.lanes_edge + road.bike_lane + road.parking / 2)
            heading = 0.0 if forward else np.pi
            s = self.s_lo - 70 + rng.uniform(0, 8)
            while s < self.s_hi + 90:
                kind = rng.choice(["car", "truck", "trailer", "bus"], p=[0.86, 0.08, 0.04, 0.02])
                size = sized(rng, CLASS_SPECS[kind])
                if rng.random() < 0.3:  # empty slot
                    s += rng.uniform(4, 12)
                    continue
                sc = s + size[0] / 2
                x, y, th = road.to_world(sc, d + rng.uniform(-0.15, 0.15))
                yaw = th + heading + rng.uniform(-0.04, 0.04)
                self._add(kind, size, self._vehicle_shape(kind, size), x, y, yaw,
                          self._vehicle_attr(None, parked=True), margin=0.2)
                s += size[0] + rng.uniform(0.8, 4.0)

    def _parked_vehicle(self, kind: str) -> bool:
        """One parked vehicle near the ego's path (parking lane only)."""
        rng, road = self.rng, self.road
        if road.parking <= 0:
            return False
        forward = bool(rng.random() < 0.5)
        size = sized(rng, CLASS_SPECS[kind])
        d = road.side_offset(forward, road.lanes_edge + road.bike_lane + road.parking / 2)
        x, y, th = road.to_world(self._s_near_ego(25.0, 40.0), d)
        return self._add(kind, size, self._vehicle_shape(kind, size), x, y,
                         th + (0.0 if forward else np.pi),
                         self._vehicle_attr(None, parked=True), margin=0.2)

    def _lane_vehicle(self, kind: str, forward: bool, lane: int, platoon_gap: float | None = None,
                      tow_trailer: bool = False) -> bool:
        rng, road = self.rng, self.road
        spec = CLASS_SPECS[kind]
        size = sized(rng, spec)
        direction = 1.0 if forward else -1.0
        d = road.lane_center(lane, forward) + rng.uniform(-0.2, 0.2)
        if platoon_gap is not None:
            s = self.ego_s + EGO_CENTRE_AHEAD + platoon_gap
        else:
            v0 = rng.uniform(*spec.speed)
            kind_v = rng.choice(["constant", "wavy", "stop", "go"], p=[0.5, 0.3, 0.1, 0.1])
            v = speed_profile(rng, kind_v, v0, self.t, self.horizon)
            i_ref = self.i0 + int(rng.integers(0, int(self.horizon / self.dt) + 1))
            s_ref = float(self.ego_s[i_ref]) + rng.uniform(-70, 70)
            s = integrate(direction * v, self.dt, i_ref, s_ref)
        x, y, th = road.to_world(s, np.full(self.n, d))
        yaw = np.unwrap(th + (0.0 if forward else np.pi))
        speed = np.abs(np.gradient(s, self.dt))
        trailer = None
        if tow_trailer:
            tspec = CLASS_SPECS["trailer"]
            tsize = sized(rng, tspec)
            st = s - direction * (size[0] / 2 + 0.8 + tsize[0] / 2)
            tx, ty, tth = road.to_world(st, np.full(self.n, d))
            trailer = (tsize, tx, ty, np.unwrap(tth + (0.0 if forward else np.pi)))
            if not self.occ.free(tx, ty, trailer[3], tsize[0], tsize[1], 0.6):
                return False
        attr = (np.full(self.n, ATTR["cycle.with_rider"], np.int8) if kind == "motorcycle"
                else self._vehicle_attr(speed, parked=False))
        if not self._add(kind, size, self._vehicle_shape(kind, size), x, y, yaw, attr,
                         margin=0.6):
            return False
        if trailer is not None:
            tsize, tx, ty, tyaw = trailer
            self._add("trailer", tsize, self._vehicle_shape("trailer", tsize), tx, ty, tyaw,
                      self._vehicle_attr(speed, parked=False), check=False)
        return True

    def _traffic(self) -> None:
        rng, road, cfg = self.rng, self.road, self.cfg
        span = self.s_hi - self.s_lo + 140.0
        mix = (["car", "truck", "bus", "motorcycle", "truck+trailer"],
               [0.76, 0.09, 0.05, 0.06, 0.04])
        # the ego's own lane: a platoon in front of and behind the ego
        for gap in sorted(rng.uniform(9, 60, int(rng.integers(0, 3)))):
            self._lane_vehicle("car", True, self.ego_lane, platoon_gap=float(gap))
        if rng.random() < 0.5:
            self._lane_vehicle("car", True, self.ego_lane, platoon_gap=-float(rng.uniform(9, 25)))
        for forward in (True, False):
            for lane in range(road.lanes):
                n = rng.poisson(cfg.density * span / 45.0)
                for _ in range(n):
                    kind = rng.choice(mix[0], p=mix[1])
                    for _try in range(4):
                        if kind == "truck+trailer":
                            ok = self._lane_vehicle("truck", forward, lane, tow_trailer=True)
                        else:
                            ok = self._lane_vehicle(str(kind), forward, lane)
                        if ok:
                            break

    def _cyclists(self) -> None:
        rng, road = self.rng, self.road
        bike = CLASS_SPECS["bicycle"]
        n = rng.poisson(self.cfg.density * 2.5) + 1
        for _ in range(n):
            for _try in range(6):
                forward = bool(rng.random() < 0.6)
                if road.bike_lane > 0:
                    d = road.side_offset(forward, road.lanes_edge + road.bike_lane / 2)
                else:
                    d = road.side_offset(forward, road.lanes_edge - 0.55)
                size = sized(rng, bike)
                v = speed_profile(rng, "wavy", rng.uniform(*bike.speed), self.t, self.horizon)
                i_ref = self.i0 + int(rng.integers(0, int(self.horizon / self.dt) + 1))
                direction = 1.0 if forward else -1.0
                s = integrate(direction * v, self.dt, i_ref,
                               float(self.ego_s[i_ref]) + rng.uniform(-40, 50))
                x, y, th = road.to_world(s, np.full(self.n, d + rng.uniform(-0.1, 0.1)))
                shirt, trousers, skin = self._person_colours()
                parts = shapes.cycle_parts(*size, self._colour(shapes.CAR_COLOURS), True, False,
                                           shirt, trousers, skin)
                if self._add("bicycle", size, parts, x, y, np.unwrap(th + (1 - direction) *
                                                                      np.pi / 2),
                             ATTR["cycle.with_rider"], margin=0.4):
                    break

    def _parked_cycle(self, kind: str) -> bool:
        rng, road = self.rng, self.road
        spec = CLASS_SPECS[kind]
        size = sized(rng, spec, (1.0, 1.0, 0.68 if kind == "bicycle" else 0.8))
        s = self._s_near_ego(30.0, 45.0)
        side = float(rng.choice([-1.0, 1.0]))
        d = side * (road.edge + 0.5 + size[1])
        x, y, th = road.to_world(s, d)
        yaw = th + (rng.uniform(-0.2, 0.2) if rng.random() < 0.6 else np.pi / 2 * side)
        parts = shapes.cycle_parts(*size, self._colour(shapes.CAR_COLOURS), False,
                                   kind == "motorcycle", None, None, None)
        return self._add(kind, size, parts, x, y, yaw, ATTR["cycle.without_rider"], margin=0.15)

    def _sidewalk_people(self) -> None:
        rng, road, cfg = self.rng, self.road, self.cfg
        ped = CLASS_SPECS["pedestrian"]
        span = self.s_hi - self.s_lo + 110.0
        n = rng.poisson(cfg.density * span / 9.0)
        for _ in range(n):
            for _try in range(5):
                side = float(rng.choice([-1.0, 1.0]))
                d = side * rng.uniform(road.edge + 0.8, road.sidewalk_outer - 0.4)
                kind = rng.choice(["walk", "stand", "sit"], p=[0.7, 0.25, 0.05])
                size = sized(rng, ped, (1.0, 1.0, 0.7) if rng.random() < 0.08 else (1, 1, 1))
                if kind == "sit":
                    size[2] = rng.uniform(1.15, 1.35)
                shirt, trousers, skin = self._person_colours()
                s0 = self._s_near_ego(50.0, 60.0)
                if kind == "walk":
                    v = rng.uniform(*ped.speed) * rng.choice([-1.0, 1.0])
                    s = s0 + v * self.t
                    x, y, th = road.to_world(s, np.full(self.n, d))
                    yaw = th + (0.0 if v > 0 else np.pi)
                    attr = ATTR["pedestrian.moving"]
                else:
                    x, y, th = road.to_world(s0, d)
                    yaw = th + rng.uniform(-np.pi, np.pi)
                    attr = ATTR["pedestrian.standing" if kind == "stand"
                                else "pedestrian.sitting_lying_down"]
                category = "human.pedestrian.child" if size[2] < 1.3 and kind != "sit" else (
                    "human.pedestrian.police_officer" if rng.random() < 0.02
                    else "human.pedestrian.adult")
                if self._add("pedestrian", size, shapes.pedestrian_parts(
                        *size, shirt, trousers, skin, kind == "walk", False, kind == "sit"),
                        x, y, yaw, attr, margin=0.25, category=category):
                    break
        for _ in range(int(rng.integers(1, 3))):
            self._parked_cycle("bicycle")
        for _ in range(int(rng.integers(1, 3))):
            self._parked_cycle("motorcycle")
        binspec = CLASS_SPECS["bin"]
        for _ in range(rng.poisson(cfg.density * span / 40.0)):
            size = sized(rng, binspec)
            side = float(rng.choice([-1.0, 1.0]))
            x, y, th = road.to_world(self._s_near_ego(40, 60), side * (road.edge + 0.6))
            self._add("bin", size, shapes.bin_parts(*size), x, y, th, -1, margin=0.1)

    def _ensure_all_classes(self) -> None:
        """Every scene gets every detection class near the ego's path, so any val split can
        be evaluated on all 10 classes."""
        def count(kind):
            return sum(1 for a in self.actors if a.kind == kind)

        def lane():
            return int(self.rng.integers(0, self.road.lanes))

        def vehicle(kind, tow=False):
            if self.rng.random() < 0.5 and self._parked_vehicle("trailer" if tow else kind):
                return True
            return self._lane_vehicle(kind, bool(self.rng.random() < 0.5), lane(),
                                      tow_trailer=tow)

        fallbacks = {
            "car": lambda: vehicle("car"),
            "truck": lambda: vehicle("truck"),
            "bus": lambda: vehicle("bus"),
            "trailer": lambda: vehicle("truck", tow=True),
            "motorcycle": lambda: (self._lane_vehicle("motorcycle", bool(self.rng.random() < 0.5),
                                                      0) if self.rng.random() < 0.5
                                   else self._parked_cycle("motorcycle")),
            "bicycle": lambda: self._parked_cycle("bicycle"),
        }
        fallbacks["construction_vehicle"] = lambda: self._zone_vehicle(tries=1)
        for kind, fn in fallbacks.items():
            tries = 0
            while count(kind) == 0 and tries < 25:
                fn()
                tries += 1


def build_scene(cfg: WorldConfig, index: int, name: str, rng: np.random.Generator) -> SceneModel:
    return SceneBuilder(cfg, index, name, rng).build()


__all__ = ["SceneBuilder", "build_scene"]
