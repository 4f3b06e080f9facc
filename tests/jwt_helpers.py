"""Bearer JWT test kit: an issuer with generated RSA/EC keys, its JWKS as a file or over HTTPS."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://keycloak.test/realms/primehub"
AUDIENCE = "primehub-deployments"


def rsa_key() -> rsa.RSAPrivateKey:
    """A fresh 2048-bit RSA key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def b64url(raw: bytes) -> str:
    """Base64url without padding, as in a JWT."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass
class Issuer:
    """Signing keys by kid; mints tokens and writes the public JWKS."""

    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    minted: list[str] = field(default_factory=list)  # every token, to look for in logs

    def add(self, kid: str, key: Any) -> None:
        """Publish another key (rotation)."""
        self.keys[kid] = key

    def jwks(self) -> dict[str, Any]:
        """The public key set, as an issuer serves it."""
        entries = []
        for kid, key in self.keys.items():
            algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
            entry = algorithm.to_jwk(key.public_key(), as_dict=True)
            alg = "RS256" if algorithm is RSAAlgorithm else "ES256"
            entries.append({**entry, "kid": kid, "use": "sig", "alg": alg})
        return {"keys": entries}

    def write(self, path: Path) -> None:
        """Write the JWKS file atomically (the gateway may read it at any moment)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.jwks()))
        tmp.replace(path)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid claims for `alice` in group `team-a` (Keycloak path form), overridable."""
        now = int(time.time())
        base = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(uuid.uuid4()),
            "preferred_username": "alice",
            "groups": ["/team-a"],
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,  # every token differs, so none is served from the cache
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, kid: str = "rsa-1", *, key: Any = None, **claims: Any) -> str:
        """A token signed with `kid`'s key (or another `key` under that kid: a forgery)."""
        signer = key if key is not None else self.keys[kid]
        alg = "RS256" if isinstance(signer, rsa.RSAPrivateKey) else "ES256"
        token = jwt.encode(self.claims(**claims), signer, algorithm=alg, headers={"kid": kid})
        self.minted.append(token)
        return token

    def unsigned(self, header: dict[str, Any], signature: bytes = b"", **claims: Any) -> str:
        """A token with any header and a given signature (alg none and the like)."""
        signing_input = (
            b64url(json.dumps(header).encode())
            + "."
            + b64url(json.dumps(self.claims(**claims)).encode())
        )
        token = signing_input + "." + b64url(signature)
        self.minted.append(token)
        return token

    def hs256_with_public_key(self, kid: str = "rsa-1") -> str:
        """The classic confusion attack: HS256 keyed with the RSA public key's PEM."""
        pem = (
            self.keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(self.claims()).encode())
        )
        signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + b64url(signature)
        self.minted.append(token)
        return token


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files (the cert is its own CA)."""
    key = ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jwks.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "jwks-cert.pem", directory / "jwks-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class JwksServer:
    """An HTTPS server (in a thread) answering GET /jwks with the issuer's current key set."""

    def __init__(self, issuer: Issuer, directory: Path) -> None:
        self.issuer = issuer
        self.fetches = 0
        self.cert_file, key_file = self_signed(directory)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                body = json.dumps(server.issuer.jwks()).encode()
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The JWKS URL."""
        return f"https://127.0.0.1:{self.httpd.server_address[1]}/jwks"

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def settings_file(path: Path, jwks: str, ca: str = "") -> Path:
    """Write the gateway's --jwt-config file (JwtSettings JSON) and return its path."""
    from primehub_jupyter.core.access import JwtSettings

    settings = JwtSettings(issuer=ISSUER, audience=AUDIENCE, jwks=jwks, jwks_ca=ca)
    path.write_text(settings.model_dump_json())
    return path
