"""journey: stitches each member's journey and detects friction in event time."""
