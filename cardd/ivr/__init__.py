"""The calling-card call flow (session.py reads top to bottom)."""
