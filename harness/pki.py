"""A throwaway PKI for tests and demos: a CA, a broker certificate, client certificates.

Everything is generated at run time with ``cryptography`` and written as PEM files into a directory
the caller owns (a pytest ``tmp_path``); no key or certificate is ever committed. Keys are EC P-256:
fast to make, and every TLS stack the fleet uses (OpenSSL in mosquitto, Python's ssl) takes them.

Production certificates come from the organisation's CA or an ACME client, never from here.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = timedelta(days=2)
# Clocks on test machines and containers drift; a certificate "not yet valid" by a few seconds is
# a confusing failure, so validity starts an hour in the past.
BACKDATE = timedelta(hours=1)


@dataclass(frozen=True)
class CertFiles:
    """PEM files of one certificate and its private key."""

    cert_file: Path
    key_file: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "omni test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created 0600 from the start: a private key is never world-readable, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class TestPki:
    """A CA that issues server and client certificates into ``directory``.

    ``TestPki.create(dir)`` makes the CA; ``server_cert()`` and ``client_cert(name)`` issue
    leaf certificates signed by it. Two instances are two unrelated CAs (a client trusting one
    does not trust a broker certified by the other).
    """

    __test__ = False  # not a pytest test class, despite the name

    directory: Path
    name: str
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    ca_file: Path
    issued: dict[str, CertFiles] = field(default_factory=dict)

    @classmethod
    def create(cls, directory: Path, name: str = "omni-test-ca") -> TestPki:
        directory.mkdir(parents=True, exist_ok=True)
        key = _new_key()
        now = datetime.now(UTC)
        subject = _name(name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        ca_file = directory / f"{name}.crt"
        _write_cert(ca_file, cert)
        return cls(directory=directory, name=name, ca_key=key, ca_cert=cert, ca_file=ca_file)

    def _issue(
        self, common_name: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = _new_key()
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(self.ca_key, hashes.SHA256())

    def _save(self, stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> CertFiles:
        files = CertFiles(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        _write_cert(files.cert_file, cert)
        _write_key(files.key_file, key)
        self.issued[stem] = files
        return files

    def server_cert(
        self,
        stem: str = "broker",
        hosts: tuple[str, ...] = ("localhost",),
        ips: tuple[str, ...] = ("127.0.0.1", "::1"),
    ) -> CertFiles:
        """A broker certificate valid for the given DNS names and IP addresses (SANs)."""
        san: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        key, cert = self._issue(hosts[0] if hosts else ips[0], ExtendedKeyUsageOID.SERVER_AUTH, san)
        return self._save(stem, key, cert)

    def client_cert(self, common_name: str) -> CertFiles:
        """A client certificate whose CN is ``common_name`` (the MQTT username, by convention)."""
        key, cert = self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH, [])
        return self._save(f"client-{common_name}", key, cert)
