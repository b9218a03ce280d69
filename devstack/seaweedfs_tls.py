"""TLS for the local SeaweedFS: a per-start CA and certificates for every component, and the
security.toml that makes them use it (devstack/seaweedfs.py starts the server with these)."""

from __future__ import annotations

import datetime
import json
import os
import secrets
from pathlib import Path


def _write_private(path: Path, data: bytes) -> Path:
    """Write a secret file readable by its owner only (created 0600, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(data)
    return path


def make_tls_files(directory: Path, host: str) -> dict[str, Path]:
    """A fresh CA and one certificate + key it signed (server and client use, for ``host`` and
    localhost), as PEM files of mode 0600 in ``directory`` (made 0700). SeaweedFS checks that
    a peer's certificate chains to the CA; it does not check host names."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    now = datetime.datetime.now(datetime.UTC)
    valid = {
        "not_valid_before": now - datetime.timedelta(minutes=5),
        "not_valid_after": now + datetime.timedelta(days=3650),
    }
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pinrec local SeaweedFS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid["not_valid_before"])
        .not_valid_after(valid["not_valid_after"])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pinrec-seaweedfs")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid["not_valid_before"])
        .not_valid_after(valid["not_valid_after"])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return {
        "ca": _write_private(directory / "ca.crt", ca.public_bytes(pem)),
        "cert": _write_private(directory / "seaweedfs.crt", cert.public_bytes(pem)),
        "key": _write_private(
            directory / "seaweedfs.key",
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ),
    }


#: gRPC servers (and the client side) that demand mutual TLS; HTTP servers that demand HTTPS
#: with a client certificate.
_GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "admin", "worker", "client")
_HTTPS_COMPONENTS = ("master", "volume", "filer", "admin")


def security_toml(tls: dict[str, Path]) -> str:
    """SeaweedFS's security.toml: JWT keys for volume and filer writes, mTLS on every gRPC port,
    HTTPS with client certificates on the master, volume, filer and admin HTTP ports."""

    def q(value: object) -> str:
        return json.dumps(str(value))  # a TOML basic string

    lines = [
        "# written by devstack.seaweedfs for one start of the server; keys are random per start",
        "[jwt.signing]",
        f"key = {q(secrets.token_hex(32))}",
        "expires_after_seconds = 10",
        "[jwt.filer_signing]",
        f"key = {q(secrets.token_hex(32))}",
        "expires_after_seconds = 10",
        "[access]",
        "ui = false",
        "[grpc]",
        f"ca = {q(tls['ca'])}",
    ]
    for component in _GRPC_COMPONENTS:
        lines += [f"[grpc.{component}]", f"cert = {q(tls['cert'])}", f"key = {q(tls['key'])}"]
    lines += [
        "[https.client]",
        "enabled = true",
        f"cert = {q(tls['cert'])}",
        f"key = {q(tls['key'])}",
        f"ca = {q(tls['ca'])}",
    ]
    for component in _HTTPS_COMPONENTS:
        lines += [f"[https.{component}]", f"cert = {q(tls['cert'])}", f"key = {q(tls['key'])}", f"ca = {q(tls['ca'])}"]
    return "\n".join(lines) + "\n"
