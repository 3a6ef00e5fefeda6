"""The synchroniser, without rclpy: triggering, bounds, degraded modes, stamps going back,
duplicate messages and clock jumps."""

from __future__ import annotations

import pytest

from imkd_ros.sync import BACKWARDS, SensorSync, SyncConfig

MS = 1_000_000
CAMS = ("CAM_A", "CAM_B", "CAM_C")
RADARS = ("RADAR_A", "RADAR_B")


def make_sync(**overrides) -> SensorSync:
    settings = dict(cameras=CAMS, radars=RADARS, camera_tolerance_ns=30 * MS, radar_sweeps=2,
                    radar_max_age_ns=300 * MS, stale_timeout_ns=500 * MS, camera_queue=3,
                    radar_queue=4)
    settings.update(overrides)
    return SensorSync(SyncConfig(**settings))


def feed_cameras(sync, t0, offsets=(0, 10, 20), cams=CAMS):
    """Feed one frame per camera at t0 + offset ms; return the sets emitted."""
    out = []
    for cam, off in zip(cams, offsets):
        frame_set, _ = sync.add_camera(cam, t0 + off * MS, f"{cam}@{t0 + off * MS}")
        if frame_set is not None:
            out.append(frame_set)
    return out


def test_triggers_once_on_complete_set_within_tolerance():
    sync = make_sync()
    t0 = 1_000 * MS
    assert sync.add_camera("CAM_A", t0, "a")[0] is None
    assert sync.add_camera("CAM_B", t0 + 10 * MS, "b")[0] is None
    frame_set, reset = sync.add_camera("CAM_C", t0 + 25 * MS, "c")
    assert not reset and frame_set is not None
    assert frame_set.stamp == t0 + 25 * MS  # the newest camera stamp
    assert {c: f.payload for c, f in frame_set.cameras.items()} == {
        "CAM_A": "a", "CAM_B": "b", "CAM_C": "c"}
    assert frame_set.missing_cameras == ()
    # Frames are consumed: a duplicate of the last camera does not trigger again.
    assert sync.add_camera("CAM_C", t0 + 26 * MS, "c2")[0] is None
    assert sync.counters.triggered == 1


def test_set_spread_beyond_tolerance_does_not_trigger_until_matching_frames():
    sync = make_sync()
    t0 = 1_000 * MS
    assert feed_cameras(sync, t0, offsets=(0, 10, 45)) == []  # 45 ms spread > 30 ms
    # The next round at ~83 ms (12 Hz cameras) pairs with the late CAM_C frame's successor.
    sets = feed_cameras(sync, t0 + 83 * MS)
    assert len(sets) == 1
    assert sets[0].cameras["CAM_A"].stamp == t0 + 83 * MS


def test_radar_window_newest_first_and_bounded_cache():
    sync = make_sync()
    t0 = 10_000 * MS
    for k in range(8):  # 8 sweeps into a cache of 4: the oldest 4 are dropped and counted
        sync.add_radar("RADAR_A", t0 - (7 - k) * 70 * MS, k)
    assert sync.counters.radar_sweeps_dropped == 4
    sync.add_radar("RADAR_A", t0 + 50 * MS, "future")  # newer than the trigger: not used
    [frame_set] = feed_cameras(sync, t0 - 20 * MS)
    assert frame_set.stamp == t0
    assert [s.payload for s in frame_set.radars["RADAR_A"]] == [7, 6]  # radar_sweeps=2
    assert frame_set.radars["RADAR_B"] == []
    assert frame_set.missing_radars == ("RADAR_B",)
    assert sync.status()["mode"] == "degraded"
    assert sync.status()["missing_radars"] == ["RADAR_B"]


def test_radar_older_than_max_age_is_missing():
    sync = make_sync()
    t0 = 10_000 * MS
    sync.add_radar("RADAR_A", t0 - 400 * MS, "old")
    sync.add_radar("RADAR_B", t0 - 100 * MS, "fresh")
    [frame_set] = feed_cameras(sync, t0 - 20 * MS)
    assert frame_set.missing_radars == ("RADAR_A",)
    assert [s.payload for s in frame_set.radars["RADAR_B"]] == ["fresh"]


def test_camera_queue_is_bounded_with_drop_counter():
    sync = make_sync(stale_timeout_ns=10**12)  # never stale: CAM_A alone cannot trigger
    t0 = 1_000 * MS
    for k in range(10):  # only CAM_A talks: nothing triggers, the queue holds 3
        sync.add_camera("CAM_A", t0 + k * 83 * MS, k)
    assert len(sync._pending["CAM_A"]) == 3
    assert sync.counters.camera_frames_dropped == 7


@pytest.mark.parametrize("policy", ["blank", "skip"])
def test_stale_camera_degrades_by_policy(policy):
    sync = make_sync(missing_camera=policy)
    t0 = 1_000 * MS
    assert len(feed_cameras(sync, t0)) == 1
    assert sync.status()["mode"] == "degraded"  # no radar at all yet
    # CAM_C goes silent; after the stale timeout the other two keep the node going or not.
    emitted = []
    for k in range(1, 12):
        emitted += feed_cameras(sync, t0 + k * 83 * MS, offsets=(0, 10), cams=CAMS[:2])
    assert "CAM_C" in sync.stale_cameras()
    status = sync.status()
    assert status["stale_cameras"] == ["CAM_C"]
    if policy == "blank":
        assert emitted and all(s.missing_cameras == ("CAM_C",) for s in emitted)
        assert set(emitted[-1].cameras) == {"CAM_A", "CAM_B"}
        assert status["mode"] == "degraded"
    else:
        assert emitted == []
        assert status["mode"] == "skipping" and status["sets_skipped"] > 0
    # CAM_C comes back: from the next round on, complete sets again and no stale camera.
    feed_cameras(sync, t0 + 12 * 83 * MS)
    [back] = feed_cameras(sync, t0 + 13 * 83 * MS)
    assert back.missing_cameras == () and sync.stale_cameras() == ()


def test_camera_never_seen_becomes_stale_after_timeout():
    sync = make_sync()
    t0 = 1_000 * MS
    emitted = []
    for k in range(8):
        emitted += feed_cameras(sync, t0 + k * 83 * MS, offsets=(0, 10), cams=CAMS[:2])
    assert sync.stale_cameras() == ("CAM_C",)
    assert emitted and emitted[-1].missing_cameras == ("CAM_C",)


def test_stamps_going_backwards_reset_cleanly():
    sync = make_sync()
    t_end = 20_000 * MS
    sync.add_radar("RADAR_A", t_end - 50 * MS, "end")
    assert len(feed_cameras(sync, t_end)) == 1
    sync.add_camera("CAM_A", t_end + 83 * MS, "pending")  # half a set left behind
    # The bag loops back to its start: the first old stamp resets everything.
    t0 = 1_000 * MS
    _, reset = sync.add_radar("RADAR_B", t0 - 30 * MS, "start")
    assert not reset  # RADAR_B's first sweep ever: nothing to go back from
    frame_set, reset = sync.add_camera("CAM_A", t0, "a")
    assert reset == BACKWARDS and frame_set is None
    assert sync.counters.resets == 1
    # Pre-loop data is gone (no pairing with the pending frame, no old radar sweep) ...
    frame_set, reset = sync.add_camera("CAM_B", t0 + 10 * MS, "b")
    assert not reset and frame_set is None
    frame_set, _ = sync.add_camera("CAM_C", t0 + 20 * MS, "c")
    assert frame_set is not None and frame_set.stamp == t0 + 20 * MS
    assert frame_set.radars["RADAR_A"] == []
    # ... and the RADAR_B sweep that started the new epoch was cleared with the reset, since it
    # arrived before the camera's backwards stamp was seen.
    assert sync.status()["resets"] == 1 and sync.stale_cameras() == ()


def test_radar_stamp_going_backwards_resets():
    sync = make_sync()
    sync.add_radar("RADAR_A", 5_000 * MS, 1)
    assert sync.add_radar("RADAR_A", 4_000 * MS, 2) == (None, BACKWARDS)
    assert sync.counters.resets == 1
    [frame_set] = feed_cameras(sync, 4_050 * MS)
    assert [s.payload for s in frame_set.radars["RADAR_A"]] == [2]


def test_unknown_sensor_is_counted_not_stored():
    sync = make_sync()
    assert sync.add_camera("CAM_X", 1, "x") == (None, "")
    assert sync.add_radar("RADAR_X", 1, "x") == (None, "")
    assert sync.counters.unknown_sensor == 2


@pytest.mark.parametrize("bad, message", [
    (dict(cameras=()), "cameras"),
    (dict(missing_camera="drop"), "missing_camera"),
    (dict(camera_tolerance_ns=-1), "camera_tolerance_ns"),
    (dict(radar_sweeps=0), "radar_sweeps"),
    (dict(radar_sweeps=5, radar_queue=4), "radar_queue"),
    (dict(trigger="lidar"), "trigger"),
])
def test_config_validation_names_the_setting(bad, message):
    with pytest.raises(ValueError, match=message):
        make_sync(**bad)


# ------------------------------------------------------------------------------ keyframe mode
def test_keyframe_mode_emits_exactly_the_named_messages():
    sync = make_sync(trigger="keyframes", camera_queue=4)
    t0 = 10_000 * MS
    for k in range(6):  # radar sweeps every 77 ms, the keyframe sweep 10 ms after the key
        sync.add_radar("RADAR_A", t0 + 10 * MS - (5 - k) * 77 * MS, k)
    sync.add_radar("RADAR_A", t0 + 87 * MS, "after")  # next sweep: not part of the keyframe
    key = {"CAM_A": t0 - 20 * MS, "CAM_B": t0, "CAM_C": t0 + 15 * MS, "RADAR_A": t0 + 10 * MS}
    # Camera frames of two rounds arrive; cameras alone never trigger in this mode.
    for cam in CAMS:
        assert sync.add_camera(cam, key[cam], f"{cam}-key") == (None, "")
    assert sync.add_camera("CAM_A", key["CAM_A"] + 83 * MS, "next")[0] is None
    frame_set, reset = sync.add_keyframe(t0, t0 - 1 * MS, key)
    assert not reset and frame_set is not None
    assert frame_set.stamp == t0 and frame_set.pose_stamp == t0 - 1 * MS
    assert {c: f.payload for c, f in frame_set.cameras.items()} == {
        c: f"{c}-key" for c in CAMS}
    assert [s.payload for s in frame_set.radars["RADAR_A"]] == [5, 4]  # newest first, <= key
    assert frame_set.missing_radars == ("RADAR_B",)  # not named by the request
    assert sync.add_keyframe(t0 + 500 * MS, t0, key)[0] is None  # frames were consumed


def test_keyframe_request_waits_for_late_messages_and_gives_up_bounded():
    sync = make_sync(trigger="keyframes", keyframe_queue=2)
    t0 = 10_000 * MS
    key = {"CAM_A": t0, "CAM_B": t0 + 5 * MS, "CAM_C": t0 + 9 * MS}
    sync.add_camera("CAM_A", key["CAM_A"], "a")
    assert sync.add_keyframe(t0, t0, key)[0] is None  # the record came before CAM_B, CAM_C
    sync.add_camera("CAM_B", key["CAM_B"], "b")
    frame_set, _ = sync.add_camera("CAM_C", key["CAM_C"], "c")
    assert frame_set is not None and frame_set.stamp == t0
    # Requests whose frames never come are dropped, oldest first, and counted.
    for k in range(1, 4):
        assert sync.add_keyframe(t0 + k * 500 * MS, t0, {"CAM_A": t0 + k * 500 * MS})[0] is None
    assert sync.counters.keyframes_dropped == 1
    assert len(sync._requests) == 2


def test_keyframe_mode_blanks_stale_camera():
    sync = make_sync(trigger="keyframes")
    t0 = 10_000 * MS
    for k in range(8):  # CAM_C never talks; its keyframe stamp is named but never arrives
        t = t0 + k * 500 * MS
        key = {"CAM_A": t, "CAM_B": t + 5 * MS, "CAM_C": t + 9 * MS}
        sync.add_camera("CAM_A", key["CAM_A"], "a")
        frame_set, _ = sync.add_camera("CAM_B", key["CAM_B"], "b")
        frame_set = frame_set or sync.add_keyframe(t, t, key)[0]
    assert frame_set is not None and frame_set.missing_cameras == ("CAM_C",)
    assert sync.status()["stale_cameras"] == ["CAM_C"]
    with pytest.raises(RuntimeError, match="trigger='keyframes'"):
        make_sync().add_keyframe(1, 1, {})


# ------------------------------------------------------------------------ duplicates and time
def test_a_message_delivered_twice_gives_one_frame_set():
    """A one-camera rig (and a stale camera under `blank`) used to emit a second set for a
    repeated image; a repeated radar sweep would have been aggregated twice."""
    sync = make_sync(cameras=("CAM_A",))
    t0 = 1_000 * MS
    sync.add_radar("RADAR_A", t0 - 20 * MS, "sweep")
    assert sync.add_radar("RADAR_A", t0 - 20 * MS, "sweep again") == (None, "")
    first, _ = sync.add_camera("CAM_A", t0, "a")
    assert first is not None
    assert [s.payload for s in first.radars["RADAR_A"]] == ["sweep"]  # not twice
    assert sync.add_camera("CAM_A", t0, "a again") == (None, "")
    assert sync.counters.triggered == 1 and sync.status()["duplicates"] == 2
    assert sync.drop_duplicate("CAM_A", t0) and not sync.drop_duplicate("CAM_A", t0 + 83 * MS)
    assert sync.add_camera("CAM_A", t0 + 83 * MS, "next")[0] is not None  # life goes on


def test_duplicates_interleaved_with_other_sensors_are_dropped_per_sensor():
    sync = make_sync()
    t0 = 1_000 * MS
    sets = []
    for cam, off in (("CAM_A", 0), ("CAM_B", 10), ("CAM_A", 0), ("CAM_C", 20), ("CAM_C", 20),
                     ("CAM_B", 10)):
        frame_set, reset = sync.add_camera(cam, t0 + off * MS, cam)
        assert not reset
        sets += [frame_set] if frame_set is not None else []
    assert len(sets) == 1 and sync.counters.duplicates == 3


def test_keyframe_record_delivered_twice_is_one_request():
    sync = make_sync(trigger="keyframes")
    t0 = 10_000 * MS
    key = {"CAM_A": t0, "CAM_B": t0 + 5 * MS, "CAM_C": t0 + 9 * MS}
    assert sync.add_keyframe(t0, t0, key) == (None, "")
    assert sync.add_keyframe(t0, t0, key) == (None, "")
    assert len(sync._requests) == 1 and sync.counters.duplicates == 1
    for cam in CAMS:
        frame_set, _ = sync.add_camera(cam, key[cam], cam)
    assert frame_set is not None and sync.counters.keyframes_dropped == 0


def test_one_future_stamp_cannot_wedge_the_synchroniser():
    """CAM_A sends one image stamped far in the future, then dies. Before, 'now' stayed in
    the future: every other camera looked stale for good and no set was ever emitted."""
    sync = make_sync(max_jump_ns=5_000 * MS)
    t0 = 1_000 * MS
    assert len(feed_cameras(sync, t0)) == 1
    _, reset = sync.add_camera("CAM_A", t0 + 3600 * 10**9, "future")
    assert reset.startswith("stamp jumped 3600.0 s ahead (clock jump?)")
    _, reset = sync.add_camera("CAM_B", t0 + 93 * MS, "b")  # normal time again
    assert reset.startswith("stamp 3599.9 s behind a jump ahead")
    assert sync.counters.resets == 2
    emitted = []
    for k in range(2, 10):  # CAM_A stays silent: stale after 500 ms, blanked
        emitted += feed_cameras(sync, t0 + k * 83 * MS, offsets=(10, 20), cams=CAMS[1:])
    assert emitted and emitted[-1].missing_cameras == ("CAM_A",)
    assert emitted[-1].stamp < t0 + 10**9 and sync.counters.resets == 2


def test_clock_jump_forward_and_back_recovers_like_a_bag_loop():
    sync = make_sync(max_jump_ns=5_000 * MS)
    t0, jump = 1_000 * MS, 86_400 * 10**9
    assert len(feed_cameras(sync, t0)) == 1
    # Every sensor jumps a day ahead and stays there for a while: detection goes on there
    # (as after a bag loop, what came before the first camera of the new time is cleared) ...
    ahead = feed_cameras(sync, t0 + jump + 83 * MS)
    sync.add_radar("RADAR_A", t0 + jump + 146 * MS, "future sweep")
    ahead += feed_cameras(sync, t0 + jump + 166 * MS)
    assert [s.stamp for s in ahead] == [t0 + jump + 103 * MS, t0 + jump + 186 * MS]
    assert [s.payload for s in ahead[1].radars["RADAR_A"]] == ["future sweep"]
    assert sync.counters.resets == 1
    # ... and when the clock comes back, state resets once more and normal sets follow.
    back = feed_cameras(sync, t0 + 249 * MS) + feed_cameras(sync, t0 + 332 * MS)
    assert [s.stamp for s in back] == [t0 + 269 * MS, t0 + 352 * MS]
    assert back[-1].missing_cameras == () and back[-1].radars["RADAR_A"] == []
    assert sync.counters.resets == 2 and sync.stale_cameras() == ()


def test_small_forward_gaps_are_not_jumps():
    sync = make_sync(max_jump_ns=5_000 * MS)
    t0 = 1_000 * MS
    feed_cameras(sync, t0)
    assert len(feed_cameras(sync, t0 + 4_000 * MS)) == 1  # a 4 s dropout of every camera
    assert sync.counters.resets == 0
