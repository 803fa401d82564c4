"""A pure-Python MQTT broker (amqtt) for the demo on machines without mosquitto.

Not for production and not used by the tests (they always run the real mosquitto). It has no
shared subscriptions, so the demo's single ingest subscribes to the plain wildcard.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from harness.broker import free_port, wait_port


class EmbeddedBroker:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    def start(self) -> None:
        from amqtt.broker import Broker

        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main() -> None:
                self._broker = Broker(config)
                await self._broker.start()
                started.set()

            loop.run_until_complete(main())
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="embedded-broker", daemon=True)
        self._thread.start()
        started.wait(10)
        wait_port("127.0.0.1", self.port)

    def stop(self) -> None:
        if self._loop is not None and self._broker is not None:
            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                fut.result(5)
            except Exception:  # best effort on the way out of a demo
                logging.getLogger(__name__).debug("embedded broker shutdown", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
