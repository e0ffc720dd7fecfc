"""The prompt catalogue and audio, installed as cardd.sounds (setup.cfg maps this directory into the package)."""
