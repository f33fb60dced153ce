"""Certificates for a TLS-secured pool: one private CA, and a key pair per role.

Dask authenticates both ends of every connection against the pool's own certificate authority
(mutual TLS): the scheduler accepts only workers and clients holding a certificate signed by that
CA, and they accept only a scheduler holding one. :func:`make_certificates` creates the CA and a
certificate for each role (scheduler, worker, client) in one folder; copy ``ca.pem`` and the
role's pair to each machine. :func:`security_from_files` turns such files into the
``distributed.Security`` object a client passes to ``DaskPool(address, security=...)``.

Keys are ECDSA P-256 (fast to make, accepted by every TLS 1.2+ OpenSSL); private keys are
written with mode 0600 from the start, so they are never readable by others, even briefly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shlex
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from neuropool.errors import ConfigError, SourceNotFoundError

#: The roles a certificate is made for, in the order they are written.
ROLES = ("scheduler", "worker", "client")


def default_hosts() -> list[str]:
    """``localhost``, ``127.0.0.1`` and this machine's host name (and its FQDN when different)."""
    hosts = ["localhost", "127.0.0.1"]
    for name in (socket.gethostname(), socket.getfqdn()):
        if name and name not in hosts:
            hosts.append(name)
    return hosts


def _names(hosts: Iterable[str]) -> list[Any]:
    """Subject alternative names: IP addresses as ``IPAddress``, anything else as ``DNSName``."""
    from cryptography import x509

    out: list[Any] = []
    for host in hosts:
        host = host.strip()
        if not host:
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` created with ``mode`` (a private key is never world-readable)."""
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # the umask may have removed bits from the requested mode


def make_certificates(
    folder: str | os.PathLike[str],
    hosts: Iterable[str] | None = None,
    days: int = 365,
    *,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Create a certificate authority and a signed certificate for each role of a pool.

    Parameters
    ----------
    folder : path
        Where the files go; created if missing.
    hosts : iterable of str, optional
        Host names and IP addresses the certificates are valid for (subject alternative
        names). By default :func:`default_hosts`. Dask does not check host names (it checks
        that the peer's certificate is signed by the pool's CA), but other TLS tools do.
    days : int
        Validity of every certificate, from now.
    overwrite : bool
        Replace existing files. Off by default: a new CA locks out every machine that holds
        certificates from the old one.

    Returns
    -------
    dict
        ``"ca"``, ``"ca-key"``, ``"scheduler"``, ``"scheduler-key"``, ``"worker"``,
        ``"worker-key"``, ``"client"``, ``"client-key"`` -> path of the PEM file.

    Raises
    ------
    ConfigError
        If ``days`` is not positive, no host is given, or the files exist and ``overwrite`` is
        false.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if days < 1:
        raise ConfigError(f"certificates must be valid for at least 1 day, got days={days}")
    hosts = list(default_hosts() if hosts is None else hosts)
    sans = _names(hosts)
    if not sans:
        raise ConfigError(f"no host names given for the certificates (got {hosts!r}); "
                          "give at least one, e.g. --hosts localhost,127.0.0.1,server1.lab")
    folder = Path(folder)
    files = {"ca": folder / "ca.pem", "ca-key": folder / "ca-key.pem"}
    for role in ROLES:
        files[role] = folder / f"{role}.pem"
        files[f"{role}-key"] = folder / f"{role}-key.pem"
    existing = [p.name for p in files.values() if p.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"{folder} already holds {', '.join(existing)}; a new CA would lock out every machine "
            "using the old certificates. Choose another folder, or pass --force (overwrite=True) "
            "to replace them."
        )
    folder.mkdir(parents=True, exist_ok=True)

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock skew
    until = now + dt.timedelta(days=days)

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "neuropool"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "neuropool pool CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(files["ca-key"], pem_key(ca_key), 0o600)
    _write(files["ca"], ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)

    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "neuropool"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, f"neuropool {role}")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            # every role both listens and connects (workers talk to each other), so each
            # certificate serves as server and as client
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(files[f"{role}-key"], pem_key(key), 0o600)
        _write(files[role], cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return files


def check_tls_files(ca_file: str | None, cert: str | None, key: str | None) -> bool:
    """True when all three TLS files are given and exist, False when none is given.

    Raises
    ------
    ConfigError
        When only some are given.
    SourceNotFoundError
        When a file given does not exist.
    """
    given = {"--tls-ca-file": ca_file, "--tls-cert": cert, "--tls-key": key}
    if not any(given.values()):
        return False
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise ConfigError(
            f"TLS needs all of --tls-ca-file, --tls-cert and --tls-key; missing {', '.join(missing)}. "
            "Make them with: neuropool certs DIR"
        )
    for option, path in given.items():
        if not Path(path).is_file():  # type: ignore[arg-type]
            raise SourceNotFoundError(f"{option} {path}: no such file; make the files with "
                                      "neuropool certs DIR, or correct the path")
    return True


def security_from_files(
    ca_file: str | os.PathLike[str],
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str],
    require_encryption: bool = True,
) -> Any:
    """A ``distributed.Security`` using one certificate/key pair for every role.

    Parameters
    ----------
    ca_file : path
        The pool's CA certificate (``ca.pem``).
    cert, key : path
        This machine's certificate and private key (e.g. ``client.pem``, ``client-key.pem``).
    require_encryption : bool
        Refuse unencrypted (``tcp://``) connections.

    Returns
    -------
    distributed.Security
        For ``DaskPool("tls://host:8786", security=...)``, or a scheduler / worker.

    Raises
    ------
    SourceNotFoundError
        When a file does not exist.
    """
    from distributed import Security

    paths = {"ca_file": ca_file, "cert": cert, "key": key}
    for what, path in paths.items():
        if not Path(path).is_file():
            raise SourceNotFoundError(f"TLS {what} {path}: no such file; make the files with "
                                      "neuropool certs DIR, or correct the path")
    ca, crt, k = (str(Path(p).resolve()) for p in (ca_file, cert, key))
    return Security(
        require_encryption=require_encryption,
        tls_ca_file=ca,
        tls_client_cert=crt, tls_client_key=k,
        tls_scheduler_cert=crt, tls_scheduler_key=k,
        tls_worker_cert=crt, tls_worker_key=k,
    )


_USAGE = """\
Keep ca-key.pem on this machine only. Copy ca.pem and a role's pair to each machine.

On the scheduler machine:
  neuropool scheduler {scheduler}

On every worker machine (add --gpus N as needed):
  neuropool worker tls://SCHEDULER_HOST:{port} {worker}

Clients, in Python:
  security = distributed.Security(tls_ca_file={ca!r}, tls_client_cert={cert!r}, \
tls_client_key={key!r}, require_encryption=True)
  pool = neuropool.cluster.connect('tls://SCHEDULER_HOST:{port}', security=security)

Clients, on the command line (neuropool run SESSION --cluster tls://SCHEDULER_HOST:{port}):
  export DASK_DISTRIBUTED__COMM__TLS__CA_FILE={ca_sh}
  export DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT={cert_sh}
  export DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY={key_sh}
  export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True"""


def usage(folder: str | os.PathLike[str], port: int = 8786) -> str:
    """How to use the files of :func:`make_certificates`: the exact scheduler and worker
    commands, the ``distributed.Security(...)`` line for Python clients, and the environment
    variables for ``neuropool run --cluster tls://...``."""
    d = Path(folder).resolve()
    ca, cert, key = (str(d / n) for n in ("ca.pem", "client.pem", "client-key.pem"))
    tls = {role: f"--tls-ca-file {shlex.quote(ca)} --tls-cert {shlex.quote(str(d / f'{role}.pem'))} "
                 f"--tls-key {shlex.quote(str(d / f'{role}-key.pem'))}" for role in ("scheduler", "worker")}
    return _USAGE.format(port=port, ca=ca, cert=cert, key=key, ca_sh=shlex.quote(ca),
                         cert_sh=shlex.quote(cert), key_sh=shlex.quote(key), **tls)
