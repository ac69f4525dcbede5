"""The demo motors' profile (simulator/machines_demo.py): what analytics watches and may
propose, the control side's safety policy, and the command allow-list.

Stored on the profile as JSON when the demo makes it; ensure_demo_machines validates them
first (fleetcore.analytics.config.AnalyticsConfig, fleetcore.safety.policy.SafetyPolicy), so
a mistake here is a failing start, not settings silently ignored.
"""

from __future__ import annotations

from fleetcore.simulator.motors import ISO_10816_CLASS_II_LIMIT

PROFILE = "Industrial motor"
DESCRIPTION = (
    "Motors on variable-speed drives: current, bearing vibration (ISO 10816), housing "
    "temperature, speed"
)

_WEAR_TITLE = f"{{key}} is nearing {ISO_10816_CLASS_II_LIMIT} mm/s (ISO 10816 class II)"
# What analytics watches and may propose (fleetcore.analytics.config.AnalyticsConfig).
ANALYTICS: dict[str, object] = {
    "keys": {
        "vibration_rms": {
            "wear": {
                "threshold": ISO_10816_CLASS_II_LIMIT,
                "direction": "rising",
                "warn_within_days": 14,
            }
        },
        "temperature": {},
        "current": {},
    },
    "recommend": [
        {
            "on": "wear",
            "key": "vibration_rms",
            "kind": "reduce_speed",
            "title": f"Reduce speed by 10 % until the bearing is replaced: {_WEAR_TITLE}",
            "method": "set_speed",
            "params": {"rpm": {"from_key": "speed", "times": 0.9}},
            "expires_after_s": 3 * 86_400,
        },
        {
            "on": "wear",
            "key": "vibration_rms",
            "kind": "schedule_maintenance",
            "title": f"Schedule a bearing replacement: {_WEAR_TITLE}",
            "method": "schedule_maintenance",
            "params": {"part": "bearing", "within_days": 3},
            "expires_after_s": 3 * 86_400,
        },
        {
            "on": "range",
            "key": "temperature",
            "severity": "critical",
            "kind": "stop",
            "title": "Stop the motor: {key} is outside its safe range",
            "method": "stop",
        },
        {"on": "range", "kind": "inspect", "title": "Inspect the motor: {key} out of range"},
        {"on": "stuck", "kind": "inspect", "title": "Check the {key} sensor: it stopped changing"},
    ],
}

# The control side's gate on approved actions (fleetcore.safety.policy.SafetyPolicy).
SAFETY_POLICY: dict[str, object] = {
    "methods": {
        "set_speed": {
            "description": "motor speed setpoint on the drive",
            "params": {
                "rpm": {
                    "type": "number",
                    "min": 600,
                    "max": 1500,
                    "key": "speed",
                    "max_step_relative": 0.15,
                    "max_change_per_hour": 300,
                }
            },
        },
        "schedule_maintenance": {
            "description": "a work order for the maintenance team",
            "params": {
                "part": {"type": "string", "allowed": ["bearing", "coupling", "alignment"]},
                "within_days": {"type": "integer", "min": 1, "max": 30},
            },
        },
        "stop": {"critical": True, "description": "stops the motor and the press line it drives"},
    },
    "interlocks": [
        {
            "name": "no speed increase while a critical alert is active",
            "method": "set_speed",
            "param": "rpm",
            "direction": "increase",
            "when": {"severity_at_least": "critical"},
        }
    ],
}

# The profile's command allow-list: what any command to these motors may be, approved or not.
COMMAND_LIMITS: dict[str, object] = {
    "allowed": {
        "set_speed": {
            "type": "object",
            "properties": {"rpm": {"type": "number", "minimum": 0, "maximum": 1800}},
            "required": ["rpm"],
            "additionalProperties": False,
        },
        "schedule_maintenance": {
            "type": "object",
            "properties": {
                "part": {"type": "string", "maxLength": 64},
                "within_days": {"type": "integer", "minimum": 1, "maximum": 365},
            },
            "required": ["part", "within_days"],
            "additionalProperties": False,
        },
        "stop": {"type": "object", "additionalProperties": False},
    }
}
