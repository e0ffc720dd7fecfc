"""PIN hashes: HMAC-SHA256 under a secret key kept outside the database.

Why a keyed hash and not a slow one: a 4-digit PIN has 10,000 values, so
whoever holds a stored hash finds the PIN in well under a minute whatever the
hash costs (scrypt at n=2**11 cost 4.5 ms of cardd's CPU per call and bought
nothing against that). What protects a PIN is a secret the database does not
hold: with the key in a file of its own, a leaked database alone says nothing
about any PIN, and guessing must go through the throttled phone line.

Stored forms (accounts.pin_hash):
- ``hmac-sha256$<salt b64>$<mac b64>``: mac = HMAC-SHA256(key, salt || PIN).
  The random salt keeps two cards with the same PIN from sharing a hash.
- ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``: cards hashed before the key
  existed; still accepted, and rehashed to HMAC on their next right PIN.
- ``plain$<pin>``: imported PINs not hashed yet (`cardd card import`);
  accepted, and hashed on their first right PIN or by `cardd card hash-pins`.
- NULL: no PIN.

The key: KEY_BYTES random bytes, hex, in `daemon.pin_key_file` (default
`<data_dir>/pin.key`), mode 0600, the same file on every cardd host. `cardd
serve` and `cardd db migrate` create it when it is missing; the other operator
commands that hash PINs only read it, so a host without the shared key fails
loudly instead of hashing PINs no other host can check. One process, one key:
load_key installs it for every hash_pin/check_pin of the process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path
from typing import Any

from cardd.errors import PinKeyError

KEY_BYTES = 32
KEY_FILE_NAME = "pin.key"
HMAC_SCHEME = "hmac-sha256"
PLAIN_PREFIX = "plain$"
_SALT_BYTES = 16


class PinKey:
    """The secret PIN hashes are keyed with, and where it came from."""

    def __init__(self, secret: bytes, path: str, *, created: bool = False):
        if len(secret) != KEY_BYTES:
            raise PinKeyError(f"PIN key file {path}: expected {KEY_BYTES} bytes, got {len(secret)}")
        self._secret = secret
        self.path = path
        self.created = created  # by this process, just now

    def mac(self, salt: bytes, pin: str) -> bytes:
        return hmac.new(self._secret, salt + pin.encode("utf-8"), hashlib.sha256).digest()

    def __repr__(self) -> str:  # never the secret, not even in a traceback
        return f"PinKey({self.path!r})"


_key: PinKey | None = None


def key_path(daemon: Any) -> str:
    """The key file of these daemon settings: pin_key_file, or pin.key under data_dir."""
    return daemon.pin_key_file or os.path.join(daemon.data_dir, KEY_FILE_NAME)


def load_key(path: str | os.PathLike[str], *, create: bool) -> PinKey:
    """Read (with create: first create) the key file and make it this process's key."""
    global _key
    path = os.fspath(path)
    created = create and not os.path.exists(path) and _create_key_file(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise PinKeyError(f"PIN key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise PinKeyError(
                f"PIN key file {path} is readable by others (mode {info.st_mode & 0o777:o}): chmod 600 {path}"
            )
        text = Path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise PinKeyError(
            f"PIN key file {path} is missing: `cardd serve` or `cardd db migrate` creates it on the first"
            " cardd host; copy that file (mode 0600) to every other host"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PinKeyError(f"PIN key file {path} cannot be read: {exc}") from None
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise PinKeyError(f"PIN key file {path}: expected {2 * KEY_BYTES} hex digits") from None
    _key = PinKey(secret, path, created=bool(created))
    return _key


def use_key_of(daemon: Any, *, create: bool = False) -> PinKey:
    """load_key for these daemon settings (the operator commands' entry point)."""
    return load_key(key_path(daemon), create=create)


def _create_key_file(path: str) -> bool:
    """Write a new key atomically: a complete 0600 file appears under `path`, or
    nothing does. When two processes create at once, the first link wins and
    both then read the winner's key. True when this call's key won."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(os.urandom(KEY_BYTES).hex() + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def refuse_new_key_for_hashed_pins(pool: Any) -> None:
    """A key this process just created cannot check PINs hashed under another
    one: on a host where the shared key file was not copied, starting would
    make every card's PIN fail. Refuse, and take the new file back."""
    key = installed_key()
    if not key.created:
        return
    with pool.connection() as conn:
        row = conn.execute("SELECT count(*) FROM accounts WHERE pin_hash LIKE %s", (HMAC_SCHEME + "$%",)).fetchone()
    if row and row[0]:
        os.unlink(key.path)
        key.created = False
        raise PinKeyError(
            f"PIN key file {key.path} was missing, but {row[0]} cards' PINs are hashed under a key: copy"
            " pin.key (mode 0600) from a cardd host that has it; the new key was not kept"
        )


def installed_key() -> PinKey:
    if _key is None:
        raise PinKeyError("no PIN key loaded (cardd.billing.pins.load_key was not called)")
    return _key


def hash_pin(pin: str) -> str:
    """The stored form of a PIN: salted HMAC-SHA256 under this process's key."""
    salt = os.urandom(_SALT_BYTES)
    mac = installed_key().mac(salt, pin)
    return "$".join([HMAC_SCHEME, _b64(salt), _b64(mac)])


def check_pin(pin: str, stored: str | None) -> bool:
    """True when `pin` matches the stored form (any of the forms above), in
    constant time for a given form. A NULL hash is the empty PIN."""
    if stored is None:
        return hmac.compare_digest(pin.encode("utf-8"), b"")
    if stored.startswith(PLAIN_PREFIX):
        return hmac.compare_digest(pin.encode("utf-8"), stored[len(PLAIN_PREFIX) :].encode("utf-8"))
    try:
        scheme, _, _ = stored.partition("$")
        if scheme == HMAC_SCHEME:
            _, salt_b64, mac_b64 = stored.split("$")
            salt, expected = _unb64(salt_b64), _unb64(mac_b64)
            return hmac.compare_digest(installed_key().mac(salt, pin), expected)
        if scheme == "scrypt":
            return _check_scrypt(pin, stored)
    except ValueError:
        pass
    # A malformed or unknown stored form never authenticates anyone.
    return False


def needs_rehash(stored: str | None) -> bool:
    """A stored form that should become HMAC once its PIN is proved right."""
    return stored is not None and not stored.startswith(HMAC_SCHEME + "$")


def decoy_check(pin: str) -> None:
    """The work of one HMAC check, for a card number that is no card: it takes
    as long to refuse as a wrong PIN (identify's decoy)."""
    hmac.compare_digest(installed_key().mac(os.urandom(_SALT_BYTES), pin), os.urandom(32))


def _check_scrypt(pin: str, stored: str) -> bool:
    scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
    salt, expected = _unb64(salt_b64), _unb64(digest_b64)
    digest = hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected))
    return hmac.compare_digest(digest, expected)


def scrypt_hash(pin: str, *, n: int = 2**11, r: int = 8, p: int = 1) -> str:
    """The legacy stored form (cardd before the key file), for tests and migration checks."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    return "$".join(["scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
