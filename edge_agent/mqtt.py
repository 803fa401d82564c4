"""Building a paho client from the device's MQTT settings (TLS, credentials, last will)."""

from __future__ import annotations

import os
import random
import ssl
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from device_configs.device import MqttSettings


def read_password(settings: MqttSettings) -> str | None:
    if settings.password_env:
        value = os.environ.get(settings.password_env)
        if value is None:
            raise ValueError(f"environment variable {settings.password_env} (MQTT password) is not set")
        return value
    if settings.password_file:
        return Path(settings.password_file).read_text().splitlines()[0]
    return None


def make_client(settings: MqttSettings, client_id: str, *, clean_session: bool = False) -> paho.Client:
    """A client with a persistent session (so QoS 1 messages wait for it while it is away)."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=paho.MQTTv311,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, read_password(settings))
    if settings.tls is not None:
        client.tls_set(
            ca_certs=settings.tls.ca_file,
            certfile=settings.tls.cert_file,
            keyfile=settings.tls.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client


class Backoff:
    """Exponential backoff with full jitter: a fleet that lost the broker at the same moment does
    not come back at the same moment."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s = min_s
        self.max_s = max(max_s, min_s)
        self._ceiling = min_s
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        delay = self._rng.uniform(self.min_s, self._ceiling)
        self._ceiling = min(self._ceiling * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._ceiling = self.min_s
