"""notifications: turns frictions and other triggers into one consistent message per member."""
