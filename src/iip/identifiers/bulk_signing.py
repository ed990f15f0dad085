"""Node signatures for many records at once, made in worker processes beside the writer.

An Ed25519 signature costs tens of microseconds: for a million handles registered in bulk that is
most of a CPU core. Large lists are signed by worker processes (a short script on their stdin and
stdout that imports only the signature library), one request per chunk, while the caller checks
and writes the rows before and after it; small lists are signed in the calling process.

The signatures are the node key's own: Ed25519 is deterministic (RFC 8032), so libsodium
(PyNaCl) and `cryptography` give the same signature for the same key and bytes, and
`signing.verify_row` accepts them like any other.
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress

from cryptography.hazmat.primitives import serialization

from iip.identifiers.signing import NodeKey

logger = logging.getLogger(__name__)

PARALLEL_MIN_PAYLOADS = 256  # fewer are signed in the calling process: a request costs more than it saves
MAX_WORKERS = 4
SIGNATURE_CHARS = 88  # base64 of 64 bytes
SEED_BYTES = 32

# Request: 32-byte seed, count (u32 LE), count lengths (u32 LE), the payloads back to back.
# Answer: count base64 signatures of 88 characters each. EOF on stdin ends the worker.
WORKER_SCRIPT = """
import base64, signal, struct, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
try:
    from nacl.bindings import crypto_sign, crypto_sign_seed_keypair
except ImportError:
    crypto_sign = None
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
src, out = sys.stdin.buffer, sys.stdout.buffer
seed = sign = None
while True:
    head = src.read(36)
    if len(head) < 36:
        break
    if head[:32] != seed:
        seed = head[:32]
        if crypto_sign is not None:
            secret = crypto_sign_seed_keypair(seed)[1]
            sign = lambda m, s=secret: crypto_sign(m, s)[:64]
        else:
            sign = Ed25519PrivateKey.from_private_bytes(seed).sign
    (count,) = struct.unpack("<I", head[32:])
    lengths = struct.unpack(f"<{count}I", src.read(4 * count))
    body = src.read(sum(lengths))
    signatures, at = [], 0
    for length in lengths:
        signatures.append(base64.b64encode(sign(body[at : at + length])))
        at += length
    out.write(b"".join(signatures))
    out.flush()
"""


def _seed(key: NodeKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _local_signer(key: NodeKey) -> Callable[[bytes], str]:
    try:
        from nacl.bindings import crypto_sign, crypto_sign_seed_keypair
    except ImportError:  # pragma: no cover - PyNaCl is a dependency; cryptography signs alike
        return key.sign
    secret = crypto_sign_seed_keypair(_seed(key))[1]
    return lambda payload: base64.b64encode(crypto_sign(payload, secret)[:64]).decode()


def sign_here(key: NodeKey, payloads: Sequence[bytes]) -> list[str]:
    """Base64 signatures of `payloads`, in order, made in this process."""
    sign = _local_signer(key)
    return [sign(payload) for payload in payloads]


class _Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script, no shell
            [sys.executable, "-c", WORKER_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def sign(self, seed: bytes, payloads: Sequence[bytes]) -> list[str]:
        count = len(payloads)
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:  # pragma: no cover - both are pipes
            raise OSError("the signing worker has no pipes")
        request = [seed, struct.pack(f"<I{count}I", count, *map(len, payloads)), *payloads]
        stdin.write(b"".join(request))
        stdin.flush()
        answer = stdout.read(SIGNATURE_CHARS * count)
        if len(answer) != SIGNATURE_CHARS * count:
            raise OSError(f"the signing worker stopped (exit code {self.process.poll()})")
        text = answer.decode("ascii")
        return [text[at : at + SIGNATURE_CHARS] for at in range(0, len(text), SIGNATURE_CHARS)]

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class SignerPool:
    """Worker processes, each driven by one thread that waits on its pipes (the GIL is free meanwhile)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="iip-sign")
        self._local = threading.local()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def submit(self, key: NodeKey, payloads: Sequence[bytes]) -> Future[list[str]]:
        return self.executor.submit(self._sign, key, list(payloads))

    def _sign(self, key: NodeKey, payloads: list[bytes]) -> list[str]:
        worker: _Worker | None = getattr(self._local, "worker", None)
        try:
            if worker is None:
                worker = _Worker()
                self._local.worker = worker
                with self._lock:
                    self._workers.append(worker)
            return worker.sign(_seed(key), payloads)
        except OSError as err:
            # A worker that cannot start or has died: sign here; the next request starts a new one.
            logger.warning("signing in process: %s", err)
            self._local.worker = None
            if worker is not None:
                worker.close()
                with self._lock, suppress(ValueError):
                    self._workers.remove(worker)
            return sign_here(key, payloads)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()


_pool: SignerPool | None = None
_pool_lock = threading.Lock()
_inherited: list[SignerPool] = []


def worker_count() -> int:
    """Worker processes to sign with: one per core the process may use, none on a single core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(cores, MAX_WORKERS)


def _shared_pool() -> SignerPool | None:
    global _pool  # noqa: PLW0603 - one pool per process, started on first use
    with _pool_lock:
        if _pool is None and worker_count() and sys.executable:
            _pool = SignerPool(worker_count())
        return _pool


def shutdown() -> None:
    """Stop the worker processes (at exit; a later request starts new ones)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


class Signatures:
    """Signatures being made, in parts: `result()` waits for them all, in order."""

    def __init__(self, parts: list[Future[list[str]]]) -> None:
        self.parts = parts

    def result(self) -> list[str]:
        return [signature for part in self.parts for signature in part.result()]


def _forget_in_child() -> None:
    # A forked child has none of the parent's threads: it starts its own pool when it needs one, and
    # lets go of the parent's pipes so the parent's workers still see their end of input.
    global _pool, _pool_lock
    if _pool is not None:
        for worker in _pool._workers:
            for stream in (worker.process.stdin, worker.process.stdout):
                if stream is not None:
                    with suppress(OSError):
                        stream.close()
        _inherited.append(_pool)  # kept: its processes are the parent's to wait for
    _pool, _pool_lock = None, threading.Lock()


atexit.register(shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def sign_many(key: NodeKey, payloads: Sequence[bytes]) -> Signatures:
    """Base64 signatures of `payloads` by `key`, in order: in worker processes when there are many,
    split among them so the last of a batch is not left waiting on one."""
    pool = _shared_pool() if len(payloads) >= PARALLEL_MIN_PAYLOADS else None
    if pool is None:
        done: Future[list[str]] = Future()
        done.set_result(sign_here(key, payloads))
        return Signatures([done])
    parts = max(1, min(pool.workers, len(payloads) // PARALLEL_MIN_PAYLOADS))
    size = -(-len(payloads) // parts)
    return Signatures([pool.submit(key, payloads[at : at + size]) for at in range(0, len(payloads), size)])
