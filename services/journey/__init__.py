"""journey: stitches each member's journey and detects friction in event time."""

from services.journey import compiled

# What runs the engine: its compiled build when current (services/journey/compiled.py), else Python.
ENGINE = compiled.use(__path__)
