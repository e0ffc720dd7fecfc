"""cardd: a prepaid calling-card IVR for FreeSWITCH."""

__version__ = "0.1.0"
