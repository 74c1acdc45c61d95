"""Vectorised 32-bit MurmurHash3 (x86, seed 0) of many tokens at once, for ``hash_features``.

All tokens of a batch are UTF-8 encoded into one byte buffer; tokens are ordered by length
so that the 4-byte block ``j`` of every token long enough to have one is mixed in a single
NumPy step, and the tail bytes and finaliser are likewise applied to all tokens together.
The arithmetic is done on ``uint32`` arrays, whose multiplication wraps modulo 2**32 as the
algorithm (Austin Appleby's public-domain MurmurHash3_x86_32) requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["hash_rows", "murmurhash3_32"]

_C1 = np.uint32(0xCC9E2D51)
_C2 = np.uint32(0x1B873593)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _mix_k(k: np.ndarray) -> np.ndarray:
    k = k * _C1
    k = _rotl(k, 15)
    return k * _C2


def _murmur_buffer(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """MurmurHash3 of the byte strings ``buf[starts[i] : starts[i] + lengths[i]]``."""
    n = len(lengths)
    order = np.argsort(-lengths, kind="stable")  # longest first: active tokens are a prefix
    sorted_len = lengths[order]
    starts = starts[order]
    buf = np.concatenate([buf, np.zeros(4, dtype=np.uint8)])
    nblocks = sorted_len // 4
    h = np.zeros(n, dtype=np.uint32)
    with np.errstate(over="ignore"):
        for j in range(int(nblocks[0]) if n else 0):
            m = int(np.searchsorted(-nblocks, -j, side="left"))  # tokens with nblocks > j
            at = starts[:m] + 4 * j
            k = (
                buf[at].astype(np.uint32)
                | (buf[at + 1].astype(np.uint32) << np.uint32(8))
                | (buf[at + 2].astype(np.uint32) << np.uint32(16))
                | (buf[at + 3].astype(np.uint32) << np.uint32(24))
            )
            hm = h[:m] ^ _mix_k(k)
            hm = _rotl(hm, 13)
            h[:m] = hm * np.uint32(5) + np.uint32(0xE6546B64)
        rem = sorted_len & 3
        tail_at = starts + 4 * nblocks
        k1 = np.zeros(n, dtype=np.uint32)
        for b in (2, 1, 0):
            has = rem > b
            k1[has] ^= buf[tail_at[has] + b].astype(np.uint32) << np.uint32(8 * b)
        has_tail = rem > 0
        h[has_tail] ^= _mix_k(k1[has_tail])
        h ^= sorted_len.astype(np.uint32)
        h ^= h >> np.uint32(16)
        h = h * np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h = h * np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    out = np.empty(n, dtype=np.int32)
    out[order] = h.view(np.int32)
    return out


def murmurhash3_32(tokens: Sequence[bytes]) -> np.ndarray:
    """Signed 32-bit MurmurHash3 (seed 0) of each byte string, as an int32 array.

    Examples
    --------
    >>> murmurhash3_32([b"", b"a"]).tolist()
    [0, 1009084850]
    """
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    buf = np.frombuffer(b"".join(tokens), dtype=np.uint8)
    return _murmur_buffer(buf, starts, lengths)


def _hash_tokens(flat: list[Any]) -> np.ndarray:
    """Hashes of a flat token list; ASCII text is encoded in one go."""
    try:
        text = "".join(flat)
    except TypeError:
        text = None
    if text is not None and text.isascii():
        lengths = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return _murmur_buffer(np.frombuffer(text.encode("ascii"), dtype=np.uint8), starts, lengths)
    return murmurhash3_32([_encode(t) for t in flat])


def _encode(token: Any) -> bytes:
    if isinstance(token, str):
        return token.encode("utf-8")
    if isinstance(token, bytes):
        return token
    raise ValueError(f"tokens must be strings, got {type(token).__name__} {token!r}")


def hash_rows(
    rows: Iterable[Iterable[str]], n_features: int, alternate_sign: bool, dtype: Any
) -> np.ndarray:
    """Dense hashed counts of each row's tokens (one row per sample)."""
    per_row: list[int] = []
    flat: list[Any] = []
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)):
            raise ValueError(
                f"sample {i} is a single string; each sample must be a list of tokens "
                "(wrap it: [text.split()])"
            )
        toks = list(row)
        flat.extend(toks)
        per_row.append(len(toks))
    n_rows = len(per_row)
    if not flat:
        return np.zeros((n_rows, n_features), dtype=dtype)
    h = _hash_tokens(flat).astype(np.int64)
    col = np.abs(h) % n_features
    values = np.where(h >= 0, 1.0, -1.0) if alternate_sign else None
    row_of = np.repeat(np.arange(n_rows, dtype=np.int64), per_row)
    out = np.bincount(row_of * n_features + col, weights=values, minlength=n_rows * n_features)
    return out.reshape(n_rows, n_features).astype(dtype, copy=False)
