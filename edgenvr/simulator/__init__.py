"""The built-in test camera (GStreamer RTSP server), labelled synthetic scenes and a simulated recording load
(days of recording, retention and index batching on a simulated clock), for tests, benchmarks and the demo.

This is the simulator's public API: the demo, the tests and the benchmarks import only these names."""

from edgenvr.simulator.camera import (
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
)
from edgenvr.simulator.recording_load import SimulatedRecordingLoad

__all__ = ["LEFT_THIRD", "MotionTruth", "RIGHT_THIRD", "SCENES", "SceneTruth", "SimulatedCamera", "SimulatedRecordingLoad", "SimulatorError", "analysis_frames", "counter_ignore_polygon", "decode_frame_counter", "make_clip", "make_scene_clip", "simulator_unavailable_reason"]
