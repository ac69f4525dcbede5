"""The camera plug-in: frames, triggers, plate detection, spooled upload, edge health.

Configured by the `camera:` section of the agent's settings (see example.yaml); the agent
starts it next to its sensors. `render` is self-contained (Pillow only) for reuse elsewhere.
"""

from fleetcore_agent.camera.detect import Detector, PlateRead, SimulatedDetector, create_detector
from fleetcore_agent.camera.sources import CaptureSource, Frame, SimulatedCamera, create_source
from fleetcore_agent.camera.spool import Spool
from fleetcore_agent.camera.triggers import MotionTrigger, Trigger, create_trigger

__all__ = [
    "CaptureSource",
    "Detector",
    "Frame",
    "MotionTrigger",
    "PlateRead",
    "SimulatedCamera",
    "SimulatedDetector",
    "Spool",
    "Trigger",
    "create_detector",
    "create_source",
    "create_trigger",
]
