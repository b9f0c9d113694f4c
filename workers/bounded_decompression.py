"""Compressed message bodies are decompressed up to a limit, never without one.

kombu decompresses a body whose `compression` header asks for it as the
message is built, for every consumer, and its decoders take no limit: a
1.4 KB bz2 body grows to 3.7 GB in the worker. `install()` puts bounded
decoders in their place; a body past `MAX_DECOMPRESSED`, truncated, or in a
compression this worker does not take fails to decode, and the worker
dead-letters its message with the reason (workers.celery_consumer,
workers.raw_consumer).
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Any

from kombu import compression

# RabbitMQ's own default limit on a message (16 MiB): no task or event that the
# broker would have taken uncompressed is refused for being compressed.
MAX_DECOMPRESSED = 16 * 1024 * 1024


class DecompressionRefused(ValueError):
    """A compressed body this worker will not decompress; the message says why."""


def _bounded(make: Callable[[], Any], name: str) -> Callable[[bytes | str], bytes]:
    def decode(body: bytes | str) -> bytes:
        if isinstance(body, str):
            # py-amqp decoded it by its content encoding (UTF-8 for kombu's own
            # producers), when it happened to be valid: the bytes back.
            body = body.encode("utf-8", "surrogatepass")
        decompressor = make()
        try:
            data = decompressor.decompress(body, MAX_DECOMPRESSED + 1)
        except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error) as exc:
            raise DecompressionRefused(f"not valid {name} data ({exc})") from None
        if len(data) > MAX_DECOMPRESSED:
            raise DecompressionRefused(
                f"{name} body larger than {MAX_DECOMPRESSED} bytes once decompressed"
            )
        if not decompressor.eof:
            raise DecompressionRefused(f"{name} body truncated")
        return data

    return decode


_DECODERS = {
    "application/x-gzip": _bounded(zlib.decompressobj, "zlib"),
    "application/x-bz2": _bounded(bz2.BZ2Decompressor, "bzip2"),
    "application/x-lzma": _bounded(lzma.LZMADecompressor, "lzma"),
}


def _refuse(content_type: str) -> Callable[[bytes], bytes]:
    def decode(body: bytes) -> bytes:
        raise DecompressionRefused(f"compression {content_type!r} is not taken by this worker")

    return decode


def install() -> None:
    """Bound every compression kombu knows in this process (idempotent); one this module
    cannot bound (brotli, zstd) is refused."""
    for content_type in list(compression._decoders):
        decoder = _DECODERS.get(content_type) or _refuse(content_type)
        compression._decoders[content_type] = decoder
