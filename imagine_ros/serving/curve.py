"""Optional CURVE encryption and client authentication (ZeroMQ's CurveZMQ, elliptic-curve keys).

Every peer has a key pair, written by :func:`generate_keys` (``imagine-ros keygen``) as ``NAME.key`` (public, safe
to copy) and ``NAME.key_secret`` (public + secret, keep private) in ZeroMQ's certificate format.

- The broker is the CURVE server: its secret certificate (:class:`CurveServerKeys`), and a folder of allowed client
  public keys (``*.key``). A client whose key is not in the folder, that expects another server key, or that does not
  encrypt at all gets no answer (ZeroMQ fails the handshake; the broker logs it and lists the refused keys in
  ``mmi.stats``). Without a folder, any client key is accepted
  (encryption without authentication).
- Optionally a second folder of worker public keys (``--curve-workers``): only a peer whose key is in it may register
  as a worker (READY); any other peer that speaks the worker protocol gets DISCONNECT and is ignored. Without it, any
  peer the handshake admits may register as a worker. The keys in it pass the handshake too (they need not be copied
  to the client folder as well).
- Clients and workers are CURVE clients (:class:`CurveClientKeys`): their own secret certificate and the broker's
  public key.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import zmq

from imagine_ros.errors import ConfigError

log = logging.getLogger(__name__)


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE support (zmq.has('curve') is False)")


def generate_keys(directory: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write ``DIR/NAME.key`` (public) and ``DIR/NAME.key_secret`` (secret, mode 0600). Returns both paths.

    Refuses to overwrite an existing key pair."""
    import zmq.auth

    _require_curve()
    d = Path(directory)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"key name must be a plain file name, got {name!r}")
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise ConfigError(f"{public} or {secret} exists already; choose another --name or folder")
    d.mkdir(parents=True, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(str(d), name)
    os.chmod(sec, 0o600)
    return Path(pub), Path(sec)


def load_public(path: str | os.PathLike) -> bytes:
    """The Z85 public key of a ``.key`` (or ``.key_secret``) certificate file."""
    import zmq.auth

    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read a CURVE public key from {path}: {e}") from None
    return public


def load_secret(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys of a ``.key_secret`` certificate file."""
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read a CURVE key pair from {path}: {e}") from None
    if not secret:
        raise ConfigError(f"{path} holds no secret key (use the NAME.key_secret file, not NAME.key)")
    return public, secret


@dataclass(frozen=True)
class CurveClientKeys:
    """A client's (or worker's) key pair and the server's public key, all Z85 ``bytes``."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def from_files(cls, secret_file: str | os.PathLike, server_public_file: str | os.PathLike) -> CurveClientKeys:
        public, secret = load_secret(secret_file)
        return cls(public, secret, load_public(server_public_file))

    def apply(self, socket: zmq.Socket) -> None:
        """Set the keys on a socket before it connects."""
        _require_curve()
        socket.curve_publickey = self.public
        socket.curve_secretkey = self.secret
        socket.curve_serverkey = self.server_public


def load_public_keys(directory: str | os.PathLike) -> frozenset[str]:
    """The Z85 public keys (as ``str``) of every ``*.key`` certificate in ``directory``."""
    import zmq.auth

    try:
        return frozenset(k.decode("ascii") for k in zmq.auth.load_certificates(str(directory)))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read CURVE public keys from {directory}: {e}") from None


class _KeySet:
    """A ``ThreadAuthenticator`` credentials provider that admits a fixed set of Z85 public keys; ``refused`` holds
    the last keys it refused (most recent last, each once)."""

    def __init__(self, keys: frozenset[str]):
        self.keys = keys
        self.refused: deque[str] = deque(maxlen=10)
        self.lock = threading.Lock()

    def callback(self, domain: str, key: bytes) -> bool:
        k = key.decode("ascii", "replace")
        if k in self.keys:
            return True
        with self.lock:
            if k in self.refused:
                self.refused.remove(k)
            self.refused.append(k)
        return False


def _key_dir(directory: str | os.PathLike, what: str) -> Path:
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{what} folder {d} does not exist")
    if not list(d.glob("*.key")):
        log.warning("%s folder %s holds no *.key file: nobody will be admitted by it", what, d)
    return d


@dataclass(frozen=True)
class CurveServerKeys:
    """The broker's key pair, the folder of allowed client public keys (None: any client key) and the folder of
    public keys allowed to register as workers (None: any peer the handshake admits)."""

    public: bytes
    secret: bytes
    allowed_dir: Path | None = None
    workers_dir: Path | None = None

    @classmethod
    def from_files(
        cls,
        secret_file: str | os.PathLike,
        allowed_dir: str | os.PathLike | None = None,
        workers_dir: str | os.PathLike | None = None,
    ) -> CurveServerKeys:
        public, secret = load_secret(secret_file)
        if allowed_dir is not None:
            allowed_dir = _key_dir(allowed_dir, "allowed public keys")
        if workers_dir is not None:
            workers_dir = _key_dir(workers_dir, "worker public keys")
        return cls(public, secret, allowed_dir, workers_dir)

    def worker_keys(self) -> frozenset[str] | None:
        """The Z85 public keys allowed to register as workers (read now), or None when any key may."""
        return None if self.workers_dir is None else load_public_keys(self.workers_dir)

    def apply(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server (before it binds)."""
        _require_curve()
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True

    def start_authenticator(self, context: zmq.Context):
        """A running ``ThreadAuthenticator`` on ``context`` that admits the allowed keys and the worker keys (or any
        key). It sets every received frame's ``User-Id`` property to the peer's Z85 public key."""
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(context, log=logging.getLogger(__name__ + ".auth"))
        auth.start()
        if self.allowed_dir is None:
            auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        else:
            keys = load_public_keys(self.allowed_dir)
            if self.workers_dir is not None:
                keys |= load_public_keys(self.workers_dir)
            auth.configure_curve_callback(domain="*", credentials_provider=_KeySet(keys))
        return auth


def refused_keys(auth) -> list[str]:
    """The public keys (Z85) that the authenticator from :meth:`CurveServerKeys.start_authenticator` refused last
    (most recent last; empty when it admits any key)."""
    provider = getattr(auth, "credentials_providers", {}).get("*")
    if not isinstance(provider, _KeySet):
        return []
    with provider.lock:
        return list(provider.refused)
