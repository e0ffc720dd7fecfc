"""cardd: a prepaid calling-card IVR for FreeSWITCH."""

from importlib import resources
from pathlib import Path

__version__ = "0.1.0"


def installed_dir(package: str) -> Path:
    """The directory of a data package installed with cardd: cardd.schema
    (the migrations) or cardd.sounds (the prompts). setup.cfg maps the
    checkout's top-level schema/ and sounds/ to these, for wheels and editable
    installs alike, so this works wherever cardd was installed from."""
    found = resources.files(package)
    if not isinstance(found, Path):
        # FreeSWITCH is handed absolute paths of the prompts: a zipped install cannot serve.
        raise RuntimeError(f"{package} is not installed as plain files ({found!r})")
    return found
