"""How the central side (ingest workers, the ops tool, the fleet service) reaches the broker."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls: bool = False  # TLS with the system's trusted CAs when no ca_file is given
    client_id: str | None = None


def central_client(
    broker: BrokerSettings, *, client_id: str, clean_session: bool, manual_ack: bool = False
) -> paho.Client:
    """A paho client with the broker's credentials and TLS applied (MQTT 3.1.1)."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=broker.client_id or client_id,
        clean_session=clean_session,
        protocol=paho.MQTTv311,
        manual_ack=manual_ack,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.ca_file is not None or broker.tls:
        client.tls_set(
            ca_certs=broker.ca_file,
            certfile=broker.cert_file,
            keyfile=broker.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client
