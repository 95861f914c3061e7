"""Create the TLS certificates, SuperNode authentication keys and organisations' signing keys
of a fedsynth deployment.

``deploy/make_certs.py`` is its command line;
``fedsynth deploy local`` (``server.deploy_local``) calls :func:`issue` directly.

Written into ``--out DIR``:

``ca.crt``, ``ca.key``
    A self-signed certificate authority (ECDSA P-384). ``ca.crt`` is what every SuperNode
    and operator passes as its root certificate (``flower-supernode --root-certificates``,
    ``root-certificates`` of a connection in ``$FLWR_HOME/config.toml``) and what the
    SuperLink passes as ``--ssl-ca-certfile``. Keep ``ca.key`` offline once done.
``server.pem``, ``server.key``
    The server certificate signed by that CA, for the SuperLink (``--ssl-certfile``,
    ``--ssl-keyfile``) and the coordinator service, valid for every ``--host`` (DNS names
    and IP addresses as subject alternative names).
``NAME.key``, ``NAME.pub`` (one pair per SuperNode)
    The SuperNode's authentication key pair as Flower 1.41 node authentication expects it:
    an ECDSA P-384 private key in OpenSSH format (``flower-supernode
    --auth-supernode-private-key NAME.key``, loaded with ``load_ssh_private_key``) and the
    OpenSSH public key (``flwr supernode register NAME.pub <connection>``, run by the
    operator before the node connects to a SuperLink started with
    ``--enable-supernode-auth``).
``NAME.signing.pem`` (one per organisation), ``roster.toml``
    The organisation's Ed25519 signing key for authenticated SecAgg+ (``[identity] signing-key``
    of its daemon config; it never leaves the organisation) and the federation's roster of their
    public keys, which every organisation pins (``[identity] roster``). In a real federation each
    organisation makes its own key and the roster is assembled from the public halves.

Private key files are created with mode 0600, the others 0644. Existing files are never
overwritten unless ``--force`` is given (then all of them are replaced).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..common.identity import new_federation, private_key_pem

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
RESERVED = {"ca", "server"}
CURVE = ec.SECP384R1  # P-384: what `ssh-keygen -t ecdsa -b 384` makes; a NIST curve Flower accepts
BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock differences between machines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make_certs.py",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1]
        + "\nExample:\n  python deploy/make_certs.py --out certs --host superlink.example.org "
        "--host 10.0.0.5 --nodes 3\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder to write into (created if missing)")
    parser.add_argument("--host", action="append", dest="hosts", metavar="HOST",
                        help="DNS name or IP address the server certificate is valid for; repeat for "
                        f"several. Adds to {' and '.join(DEFAULT_HOSTS)}, which are always included: the "
                        "SuperLink's own SuperExec connects to it over loopback. The first one given is "
                        "also its common name")
    nodes = parser.add_mutually_exclusive_group()
    nodes.add_argument("--nodes", type=int, metavar="N", default=0,
                       help="create N SuperNode key pairs, named PREFIX0 .. PREFIX{N-1} (default: 0)")
    nodes.add_argument("--node", action="append", dest="names", metavar="NAME",
                       help="create a SuperNode key pair NAME.key/NAME.pub; repeat for several "
                       "(letters, digits, '.', '_', '-'; not 'ca' or 'server')")
    parser.add_argument("--node-prefix", default="org-", metavar="PREFIX",
                        help="name prefix of the key pairs made by --nodes (default: %(default)s)")
    parser.add_argument("--days", type=int, default=365, metavar="DAYS",
                        help="validity of the CA and server certificates in days (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="replace files that already exist (default: refuse and write nothing)")
    args = parser.parse_args(argv)

    if args.days < 1:
        parser.error("--days must be at least 1")
    if args.nodes < 0:
        parser.error("--nodes must not be negative")
    args.hosts = list(dict.fromkeys([*(args.hosts or []), *DEFAULT_HOSTS]))
    for host in args.hosts:
        if not host or any(c.isspace() for c in host) or "/" in host:
            parser.error(f"--host {host!r} is neither a DNS name nor an IP address")
    args.names = args.names or [f"{args.node_prefix}{i}" for i in range(args.nodes)]
    if len(set(args.names)) != len(args.names):
        parser.error("node names must be distinct")
    for name in args.names:
        if not NODE_NAME.match(name) or name in RESERVED:
            parser.error(f"invalid node name {name!r}: use letters, digits, '.', '_', '-' "
                         "(at most 64, not 'ca' or 'server')")
    return args


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(CURVE())


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def san_entry(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsynth"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "fedsynth deployment CA")])
    now = dt.datetime.now(dt.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def make_server(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hosts: list[str],
                days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_key()
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsynth"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([san_entry(h) for h in hosts]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def make_node(name: str) -> tuple[bytes, bytes]:
    """An ECDSA P-384 key pair in OpenSSH format: (private key file, public key line)."""
    key = new_key()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b" " + name.encode() + b"\n"


def write(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write ``data`` with ``mode``; never replaces a file unless ``force`` (then atomically)."""
    if not force:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # the umask may have narrowed it
            f.write(data)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Issued:
    """One file :func:`issue` wrote."""

    path: Path
    mode: int
    what: str


def issue(out: Path, hosts: list[str], names: list[str], days: int = 365, force: bool = False) -> list[Issued]:
    """Write the CA, the server certificate for ``hosts`` and one node key pair per name into ``out``.

    Every credential of a federation is made here (the one place to extend). Raises
    ``FileExistsError`` naming the files already there, unless ``force``.
    """
    targets = [out / n for n in ("ca.crt", "ca.key", "server.pem", "server.key")]
    targets += [out / f"{name}{suffix}" for name in names for suffix in (".key", ".pub", ".signing.pem")]
    targets += [out / "roster.toml"] if names else []
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    if existing and not force:
        raise FileExistsError("refusing to overwrite existing files (use --force to replace them): "
                              + ", ".join(str(p) for p in existing))
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca(days)
    server_key, server_cert = make_server(ca_key, ca_cert, hosts, days)
    pem = serialization.Encoding.PEM
    files = [
        (Issued(out / "ca.crt", 0o644, "CA certificate (root certificates for SuperNodes and `flwr`)"),
         ca_cert.public_bytes(pem)),
        (Issued(out / "ca.key", 0o600, "CA private key (keep offline)"), pem_key(ca_key)),
        (Issued(out / "server.pem", 0o644, f"server certificate for {', '.join(hosts)}"), server_cert.public_bytes(pem)),
        (Issued(out / "server.key", 0o600, "server private key"), pem_key(server_key)),
    ]
    for name in names:
        private, public = make_node(name)
        files.append((Issued(out / f"{name}.key", 0o600, f"SuperNode {name}: private key (--auth-supernode-private-key)"),
                      private))
        files.append((Issued(out / f"{name}.pub", 0o644, f"SuperNode {name}: public key (flwr supernode register)"),
                      public))
    files += signing_files(out, names)
    for issued, data in files:
        write(issued.path, data, issued.mode, force)
    return [issued for issued, _ in files]


def signing_files(out: Path, names: list[str]) -> list[tuple[Issued, bytes]]:
    """Each organisation's Ed25519 signing key for authenticated SecAgg+ and the roster of their
    public halves, which every organisation pins (``common.identity``)."""
    identities = new_federation(names)
    files = [(Issued(out / f"{name}.signing.pem", 0o600,
                     f"organisation {name}: signing key for authenticated SecAgg+ ([identity] signing-key)"),
              private_key_pem(identity.private_key)) for name, identity in identities.items()]
    if identities:
        roster = next(iter(identities.values())).roster
        files.append((Issued(out / "roster.toml", 0o644,
                             "the federation's roster of signing keys ([identity] roster of every organisation)"),
                      roster.dumps().encode()))
    return files


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        print(f"error: {out} exists and is not a folder", file=sys.stderr)
        return 2
    try:
        files = issue(out, args.hosts, args.names, args.days, args.force)
    except FileExistsError as exc:
        head, _, paths = str(exc).partition(": ")
        print(f"error: {head}:", file=sys.stderr)
        for p in paths.split(", "):
            print(f"  {p}", file=sys.stderr)
        return 1
    not_after = x509.load_pem_x509_certificate((out / "server.pem").read_bytes()).not_valid_after_utc
    print(f"Wrote to {out} (certificates valid until {not_after.strftime('%Y-%m-%d %H:%M UTC')}):")
    width = max(len(f.path.name) for f in files)
    for f in files:
        print(f"  {f.path.name:<{width}}  {f.mode:04o}  {f.what}")
    return 0
