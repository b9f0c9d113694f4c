"""A TCP forwarder on loopback that a test can cut and restore, to take a link down on purpose."""

from __future__ import annotations

import asyncio
import threading

from harness.ports import free_port


class Proxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target>; `cut()` drops and refuses connections."""

    def __init__(self, target_port: int, answer_delay: float = 0.0) -> None:
        """answer_delay: seconds each chunk of the target's answers is held back."""
        self.target_port = target_port
        self.answer_delay = answer_delay
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        # Connections whose bytes are swallowed: open, silent, like a half-open link.
        self._silenced: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy").start()

    def _call(self, coro, timeout: float = 5):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float = 0.0
    ) -> None:
        try:
            while data := await reader.read(65536):
                if writer in self._silenced:
                    continue
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer, self.answer_delay)
        )
        self._writers -= {writer, up_writer}

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _stall(self) -> None:
        self._silenced |= self._writers

    def start(self) -> Proxy:
        self._call(self._listen())
        return self

    def cut(self) -> None:
        self._call(self._cut())

    def stall(self) -> None:
        """Keep today's connections open but forward nothing on them; new ones work."""
        self._call(self._stall())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)

    @property
    def rs_url(self) -> str:
        return f"rs://127.0.0.1:{self.port}"
