"""A throwaway PKI for the test control plane, made with the openssl command line.

One CA signs the apiserver serving certificate and one client certificate per component; a separate RSA key
pair signs service-account tokens. Everything is regenerated per state directory and never leaves it.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PKI", "CertKey", "generate_pki", "issue_certificate", "load_ca"]

_DAYS = "365"


@dataclass(frozen=True)
class CertKey:
    """A PEM certificate and its private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class PKI:
    """Every credential the control plane needs."""

    ca: CertKey
    apiserver: CertKey
    admin: CertKey
    controller_manager: CertKey
    scheduler: CertKey
    kwok: CertKey
    front_proxy: CertKey
    kubelet_client: CertKey
    service_account_key: Path
    service_account_pub: Path


# Client certificates: file stem -> (common name, organisation); RBAC maps them onto built-in roles.
_CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("slm-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
    "kwok": ("kwok-controller", "system:masters"),
    # The apiserver's client identity towards aggregated API servers (e.g. metrics-server).
    "front-proxy-client": ("front-proxy-client", None),
    # The apiserver's client identity towards kubelets (logs, exec, port-forward on the real node).
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}

_SERVER_SANS = (
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:127.0.0.1",
    "IP:10.0.0.1",
)


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _config(path: Path, common_name: str, org: str | None, extensions: list[str]) -> Path:
    subject = [f"CN = {common_name}"] + ([f"O = {org}"] if org else [])
    text = "\n".join(
        ["[req]", "distinguished_name = dn", "prompt = no", "", "[dn]", *subject, "", "[ext]", *extensions, ""]
    )
    path.write_text(text, encoding="utf-8")
    return path


def _ca(directory: Path) -> CertKey:
    pair = CertKey(directory / "ca.crt", directory / "ca.key")
    config = _config(
        directory / "ca.cnf",
        "slm-operator-test-ca",
        None,
        [
            "basicConstraints = critical,CA:TRUE",
            "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
            "subjectKeyIdentifier = hash",
        ],
    )
    _openssl(
        "req", "-x509", "-config", config.name, "-extensions", "ext", "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", pair.key.name,
        "-out", pair.cert.name, "-days", _DAYS,
        cwd=directory,
    )  # fmt: skip
    return pair


def _leaf(
    directory: Path,
    ca: CertKey,
    stem: str,
    common_name: str,
    org: str | None,
    *,
    server: bool,
    sans: tuple[str, ...] = _SERVER_SANS,
) -> CertKey:
    pair = CertKey(directory / f"{stem}.crt", directory / f"{stem}.key")
    extensions = [
        "basicConstraints = critical,CA:FALSE",
        "keyUsage = critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage = {'serverAuth,clientAuth' if server else 'clientAuth'}",
        "authorityKeyIdentifier = keyid",
    ]
    if server:
        extensions.append(f"subjectAltName = {','.join(sans)}")
    config = _config(directory / f"{stem}.cnf", common_name, org, extensions)
    csr = directory / f"{stem}.csr"
    _openssl(
        "req", "-new", "-config", config.name, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", pair.key.name, "-out", csr.name,
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr.name, "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", f"0x{secrets.token_hex(16)}", "-days", _DAYS, "-extfile", config.name,
        "-extensions", "ext", "-out", pair.cert.name,
        cwd=directory,
    )  # fmt: skip
    csr.unlink()
    return pair


def generate_pki(directory: Path) -> PKI:
    """Create a fresh CA, serving and client certificates and the service-account key pair in `directory`."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the openssl command is needed to create the test control plane's certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory)
    clients = {stem: _leaf(directory, ca, stem, cn, org, server=False) for stem, (cn, org) in _CLIENTS.items()}
    apiserver = _leaf(directory, ca, "apiserver", "kube-apiserver", None, server=True)
    sa_key, sa_pub = directory / "service-account.key", directory / "service-account.pub"
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", sa_key.name, cwd=directory)
    _openssl("pkey", "-in", sa_key.name, "-pubout", "-out", sa_pub.name, cwd=directory)
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return PKI(
        ca=ca,
        apiserver=apiserver,
        admin=clients["admin"],
        controller_manager=clients["controller-manager"],
        scheduler=clients["scheduler"],
        kwok=clients["kwok"],
        front_proxy=clients["front-proxy-client"],
        kubelet_client=clients["apiserver-kubelet-client"],
        service_account_key=sa_key,
        service_account_pub=sa_pub,
    )


def load_ca(directory: Path) -> CertKey:
    """The CA that :func:`generate_pki` made in `directory`."""
    pair = CertKey(directory / "ca.crt", directory / "ca.key")
    if not (pair.cert.is_file() and pair.key.is_file()):
        raise FileNotFoundError(f"no test CA in {directory} (start the control plane first)")
    return pair


def issue_certificate(
    directory: Path,
    ca: CertKey,
    stem: str,
    common_name: str,
    org: str | None = None,
    *,
    sans: tuple[str, ...] = (),
) -> CertKey:
    """One more certificate signed by `ca`: a client certificate, or a serving one when `sans` are given
    (entries like ``IP:10.0.0.1`` or ``DNS:name``)."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = _leaf(directory, ca, stem, common_name, org, server=bool(sans), sans=sans)
    pair.key.chmod(0o600)
    return pair
