"""The detector's parameter table is the one source: config/detector.yaml, the JSON schema and
the README table agree with it, and a running node declares exactly it, descriptions and
ranges included, as `ros2 param describe` sees them over DDS."""

from __future__ import annotations

import os
import re
import time
from dataclasses import fields
from pathlib import Path

import pytest
import rclpy
import yaml
from rcl_interfaces.srv import DescribeParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from ros_rig import write_random_checkpoint

from imkd_ros import parameters
from imkd_ros.detector_node import DetectorNode
from imkd_ros.parameters import DetectorParams, ParameterError

REPO = Path(__file__).resolve().parents[1]
TABLE = {f.name: (f.default, f.metadata["spec"]) for f in fields(DetectorParams)}


def ros_default(default):
    return list(default) if isinstance(default, tuple) else default


def test_schema_file_is_what_the_table_makes():
    assert (REPO / "config/detector.schema.json").read_text() == parameters.schema_text(), (
        "regenerate: python -m imkd_ros.parameters --schema > config/detector.schema.json")
    schema = parameters.json_schema()
    props = schema["definitions"]["imkd_detector"]["properties"]
    assert list(props) == list(TABLE)
    assert props["radar_sweeps"] == {"type": "integer", "default": 6, "minimum": 1,
                                     "description": TABLE["radar_sweeps"][1].description}
    assert props["trigger"]["enum"] == ["cameras", "keyframes"]
    assert props["score_threshold"]["maximum"] == 1.0
    assert props["status_period"]["exclusiveMinimum"] == 0.0
    ref = schema["properties"]["/**"]["properties"]["ros__parameters"]["$ref"]
    assert ref == "#/definitions/imkd_detector"


def test_readme_table_is_what_the_table_makes():
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- parameters:[^\n]*-->\n(.*?)<!-- /parameters -->", text, re.S)
    assert block and block.group(1) == parameters.markdown_table(), (
        "regenerate the README block: python -m imkd_ros.parameters --markdown")


def test_parameter_file_has_the_table_defaults():
    values = yaml.safe_load((REPO / "config/detector.yaml").read_text())
    values = values["/**"]["ros__parameters"]
    assert list(values) == list(TABLE)
    for name, value in values.items():
        default = ros_default(TABLE[name][0])
        assert type(value) is type(default) and value == default, name


def test_cli_prints_schema_and_table(capsys):
    assert parameters.main(["--schema"]) == 0
    assert capsys.readouterr().out == parameters.schema_text()
    assert parameters.main(["--markdown"]) == 0
    assert capsys.readouterr().out == parameters.markdown_table()


def test_every_rule_is_checked_and_named(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"")  # only its existence is a parameter rule
    good = {"checkpoint": str(tmp_path / "m.pt")}
    assert DetectorParams(**good).radar_sweeps == 6
    for bad, message in [
        ({"checkpoint": ""}, "parameter 'checkpoint' = '': required"),
        ({"cameras": ()}, "parameter 'cameras' = []: must not be empty"),
        ({"radars": ("RADAR/FRONT",)}, "parameter 'radars' = ['RADAR/FRONT']: names must be"),
        ({"radar_filter": "some"}, "parameter 'radar_filter' = 'some': must be nuscenes or all"),
        ({"score_threshold": 1.5}, "parameter 'score_threshold' = 1.5: must be in [0, 1]"),
        ({"tf_wait": -0.1}, "parameter 'tf_wait' = -0.1: must be >= 0"),
        ({"status_period": 0.0}, "parameter 'status_period' = 0.0: must be > 0"),
        ({"base_frame": ""}, "parameter 'base_frame' = '': must not be empty"),
        ({"calibration_file": "/nonexistent.yaml"}, "'/nonexistent.yaml': no such file"),
    ]:
        with pytest.raises(ParameterError) as info:
            DetectorParams(**{**good, **bad})
        assert message in str(info.value)


def test_string_arrays_take_lists_comma_separated_names_and_none():
    assert parameters.string_list("radars", ["RADAR_FRONT"]) == ("RADAR_FRONT",)
    assert parameters.string_list("radars", "RADAR_FRONT, RADAR_BACK_LEFT") == (
        "RADAR_FRONT", "RADAR_BACK_LEFT")
    assert parameters.string_list("radars", "[RADAR_FRONT,RADAR_BACK_LEFT]") == (
        "RADAR_FRONT", "RADAR_BACK_LEFT")
    for empty in (None, "", "none", "None", "[]", " [ ] ", []):
        assert parameters.string_list("radars", empty) == ()
    with pytest.raises(ParameterError, match="parameter 'radars' = 3: must be a list of names"):
        parameters.string_list("radars", 3)
    with pytest.raises(ParameterError, match=r"parameter 'radars' = \['A', ''\]: names must"):
        DetectorParams.from_values({"checkpoint": __file__, "radars": "A,"})


def test_a_sensor_subset_is_named_and_an_unknown_camera_refused():
    model = ("CAM_FRONT", "CAM_BACK")
    full = DetectorParams(checkpoint=__file__, cameras=model)
    assert full.configured_without(model) == ""
    radar_subset = DetectorParams(checkpoint=__file__, cameras=model,
                                  radars=("RADAR_FRONT", "RADAR_BACK_LEFT", "RADAR_BACK_RIGHT"))
    assert radar_subset.configured_without(model) == (
        "configured without radars RADAR_FRONT_RIGHT, RADAR_FRONT_LEFT")
    camera_only = DetectorParams(checkpoint=__file__, cameras=("CAM_BACK",), radars=())
    assert camera_only.configured_without(model) == (
        "configured without cameras CAM_FRONT and radars RADAR_FRONT, RADAR_FRONT_RIGHT, "
        "RADAR_BACK_RIGHT, RADAR_BACK_LEFT, RADAR_FRONT_LEFT")
    other_names = DetectorParams(checkpoint=__file__, cameras=model, radars=("front_radar",))
    assert other_names.configured_without(model) == "configured without radars (1 of 5)"
    with pytest.raises(ParameterError, match="CAM_SIDE not among the model's cameras"):
        DetectorParams(checkpoint=__file__, cameras=("CAM_SIDE",)).configured_without(model)


@pytest.mark.ros
@pytest.mark.parametrize("given, radars", [
    (["-p", "radars:=[]"], ()),
    (["-p", "radars:=none"], ()),
    (["-p", "radars:=RADAR_FRONT,RADAR_BACK_LEFT"], ("RADAR_FRONT", "RADAR_BACK_LEFT")),
    (["-p", "radars:=[RADAR_FRONT]"], ("RADAR_FRONT",)),
    ("yaml", ()),
    ([], DetectorParams.radars),
])
def test_sensor_subsets_from_the_command_line_and_yaml(tmp_path, given, radars):
    """`-p radars:=[]` and `radars: []` reach rclpy as no value at all: taken as none."""
    if given == "yaml":
        (tmp_path / "p.yaml").write_text("/**:\n  ros__parameters:\n    radars: []\n")
        given = ["--params-file", str(tmp_path / "p.yaml")]
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node(parameters.NODE_NAME, context=context,
                                 cli_args=["--ros-args", "-p", f"checkpoint:={__file__}",
                                           *given])
        try:
            assert parameters.declare(node).radars == radars
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.ros
def test_node_declares_the_table_as_ros2_param_describe_shows_it(tmp_path):
    checkpoint = write_random_checkpoint(tmp_path / "model.pt")
    name = f"det_params_{os.getpid()}"
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = DetectorNode(context=context, cli_args=["--ros-args", "-r", f"__node:={name}"],
                            parameter_overrides=[Parameter("checkpoint", value=str(checkpoint)),
                                                 Parameter("device", value="cpu")])
        client_node = rclpy.create_node("describe_client", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(client_node)
        try:
            client = client_node.create_client(DescribeParameters,
                                               f"/{name}/describe_parameters")
            assert client.wait_for_service(timeout_sec=10)
            future = client.call_async(DescribeParameters.Request(names=list(TABLE)))
            deadline = time.monotonic() + 10
            while not future.done() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            described = {d.name: d for d in future.result().descriptors}
            assert set(described) == set(TABLE)
            for pname, (default, spec) in TABLE.items():
                d = described[pname]
                assert d.description == spec.description, pname
                assert d.additional_constraints == "; ".join(r.says for r in spec.rules())
                if pname not in ("checkpoint", "device"):
                    assert node.get_parameter(pname).value == ros_default(default), pname
            assert described["radar_sweeps"].integer_range[0].from_value == 1
            score = described["score_threshold"].floating_point_range[0]
            assert (score.from_value, score.to_value) == (0.0, 1.0)
            assert not described["status_period"].floating_point_range  # > 0: words only
            # The ranges hold after start-up too: rclpy refuses an out-of-range value.
            result = node.set_parameters([Parameter("radar_sweeps", value=0)])[0]
            assert not result.successful and node.p.radar_sweeps == 6
        finally:
            node.stop()
            node.destroy_node()
            client_node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_package_uris_resolve_to_the_share_directory():
    """`package://imkd_ros/<path>` (the default checkpoint's form) names a file of the installed
    share directory; an unknown package is refused naming the parameter and the package."""
    params = DetectorParams.from_values({"checkpoint": "package://imkd_ros/package.xml"})
    resolved = Path(params.checkpoint)
    assert resolved.parent.parts[-2:] == ("share", "imkd_ros"), resolved
    assert resolved.read_bytes() == (Path(__file__).parents[1] / "package.xml").read_bytes()
    with pytest.raises(ParameterError, match=re.escape(
            "parameter 'checkpoint' = 'package://no_such_pkg/m.pt': package 'no_such_pkg' is "
            "not installed")):
        DetectorParams.from_values({"checkpoint": "package://no_such_pkg/m.pt"})
    with pytest.raises(ParameterError, match="no such file"):
        DetectorParams.from_values({"checkpoint": "package://imkd_ros/models/none.pt"})


def test_reliable_inputs_keep_about_a_second_of_messages():
    """Reliable delivery into a 2-deep queue still loses what a busy callback thread has not
    taken yet; a bag replay (reliable) must not lose a keyframe's image that way."""
    from imkd_ros.qos import RADAR_DEPTH, RELIABLE_DEPTH, sensor_profile

    live, replay = sensor_profile(False), sensor_profile(True)
    assert live.depth == 2 and replay.depth == RELIABLE_DEPTH >= 12
    assert sensor_profile(False, RADAR_DEPTH).depth == RADAR_DEPTH
    assert sensor_profile(True, RADAR_DEPTH).depth == RELIABLE_DEPTH
