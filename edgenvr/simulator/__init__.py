"""The built-in test camera (GStreamer RTSP server), labelled synthetic scenes and a simulated recording load
(days of recording, retention and index batching on a simulated clock), for tests, benchmarks and the demo.

This is the simulator's public API: the demo, the tests and the benchmarks import only these names."""

from edgenvr.simulator.camera import (
    CLIP_CACHE,
    SimulatedCamera,
    SimulatorError,
    decode_frame_counter,
    make_clip,
    simulator_unavailable_reason,
)
from edgenvr.simulator.labelled_scenes import (
    LEFT_THIRD,
    RIGHT_THIRD,
    SCENES,
    MotionTruth,
    SceneTruth,
    analysis_frames,
    counter_ignore_polygon,
    make_scene_clip,
    private_room,
)
from edgenvr.simulator.real_footage import (
    FURTHER_ALONG,
    ROOM,
    STREET,
    FootageUnavailable,
    fetch_street_footage,
    street_views,
)
from edgenvr.simulator.recording_load import SimulatedRecordingLoad

__all__ = ["CLIP_CACHE", "FURTHER_ALONG", "LEFT_THIRD", "ROOM", "STREET", "FootageUnavailable", "MotionTruth", "RIGHT_THIRD", "SCENES",
           "SceneTruth", "SimulatedCamera", "SimulatedRecordingLoad", "SimulatorError", "analysis_frames",
           "counter_ignore_polygon", "decode_frame_counter", "fetch_street_footage", "make_clip", "make_scene_clip",
           "private_room", "simulator_unavailable_reason", "street_views"]
