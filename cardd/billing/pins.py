"""PIN hashes: salted scrypt, compared in constant time.

Stored form: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` so the cost can be
raised later without invalidating existing cards.

Cost choice: a 4-digit PIN has 10,000 values, so no hash cost makes a stolen
hash safe; the salt stops precomputed tables and the cost slows bulk guessing
of longer PINs. n=2**11, r=8 takes ~5 ms here, which a per-call verification
on the daemon's event loop can afford (n=2**14 took ~42 ms).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SCRYPT_N = 2**11
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32


def hash_pin(pin: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """Salted scrypt hash of a PIN, in the stored form."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_DKLEN)
    return "$".join(
        ["scrypt", str(n), str(r), str(p), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()]
    )


def check_pin(pin: str, stored: str | None) -> bool:
    """True when `pin` matches the stored hash. A NULL hash is the empty PIN."""
    if stored is None:
        return hmac.compare_digest(pin.encode("utf-8"), b"")
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        digest = hashlib.scrypt(
            pin.encode("utf-8"), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        # A malformed stored hash never authenticates anyone.
        return False
    return hmac.compare_digest(digest, expected)


_pin_pool = None


def check_pin_off_loop(pin: str, stored: str | None) -> bool:
    """check_pin in a thread of its own, off the event loop.

    scrypt costs milliseconds of CPU and releases the GIL, so other calls go
    on meanwhile. One thread, not the hub's pool of ten: scrypt is memory-hard,
    and parallel hashes on two cores thrash the cache (measured: ~5 ms more
    CPU per call with ten threads)."""
    global _pin_pool
    if _pin_pool is None:
        from gevent.threadpool import ThreadPool
        _pin_pool = ThreadPool(1)
    return _pin_pool.apply(check_pin, (pin, stored))
