"""localserve: zero-configuration development mode.

On first start, :func:`ensure_config` writes ``DIR/moxtw.toml`` with every setting spelled
out and commented, and a self-signed certificate for ``localhost``; later starts read the
file, so a user can edit it.  The flags of ``twistd moxtw localserve`` override the file for
that run only.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import attrs

from .config import AccountConfig, Config, QueueConfig, WebhookConfig, load_config
from .passwords import hash_password

LOGIN = "mox@localhost"
FROMID_LOGIN = "mox+fromid@localhost"
PASSWORD = "moxmoxmox"
ADMIN_PASSWORD = "moxadmin"

PORTS = {
    "smtp": 1025,
    "submission": 1587,
    "submissions": 1465,
    "http": 1080,
    "metrics": 1081,
}


def have_ipv6_loopback() -> bool:
    """Whether ``::1`` can be bound on this machine."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _endpoints(port: int, ipv6: bool) -> str:
    eps = [f'"tcp:{port}:interface=127.0.0.1"']
    if ipv6:
        eps.append(f'"tcp6:{port}:interface=\\\\:\\\\:1"')
    return "[" + ", ".join(eps) + "]"


def render_config(*, password_hash: str, admin_password_hash: str, ipv6: bool) -> str:
    """The commented ``moxtw.toml`` that localserve writes on first start."""
    ep = {name: _endpoints(port, ipv6) for name, port in PORTS.items()}
    return f"""\
# moxtw localserve configuration, written on first start; edit it and restart.
# Every setting of localserve is spelled out here.  See etc/moxtw.toml in the source
# for a production example and README.md for what each section does.

# Marks this as localserve: outgoing mail is delivered to this daemon's own SMTP
# listener (any recipient domain), and special recipient localparts simulate failures:
# ...temperror@, ...permerror@, ...timeout@, or ending in a code such as ...550@.
localserve = true

# Host name used in EHLO, Message-IDs and Received headers.
hostname = "localhost"

# Database and message files; relative paths are relative to this file.
data_dir = "data"

# Largest message accepted (webapi Send and SMTP), as in mox.
max_message_size = "100MiB"

# Password for the admin API and `moxtw queue ...` commands: "{ADMIN_PASSWORD}".
# Change it with: moxtw setpassword --admin --config moxtw.toml
admin_password_hash = "{admin_password_hash}"

[listeners]
# Endpoint strings (Twisted's serverFromString syntax), one or more per listener.
smtp = {ep["smtp"]}                # incoming SMTP, no authentication
submission = {ep["submission"]}     # SMTP submission with STARTTLS and AUTH
submissions = {ep["submissions"]}   # SMTP submission with implicit TLS
http = {ep["http"]}                # webapi at /webapi/v0/
metrics = {ep["metrics"]}             # Prometheus metrics at /metrics

[tls]
# Self-signed certificate for localhost, generated on first start.
cert_file = "tls/localhost.crt"
key_file = "tls/localhost.key"

[webapi]
path = "/webapi/"                 # the webapi lives below this path
max_request_size = "10MiB"        # larger request bodies are refused before parsing
workers = 1                       # extra processes serving the webapi on the same port

[queue]
port = 25                         # port dialled on MX hosts (unused: localserve delivers to itself)
max_concurrent = 100              # deliveries in flight at once
max_per_domain = 10               # deliveries in flight per destination domain
retry_scale = 1                   # divides every retry interval (--retry-scale overrides)

[dns]
nameservers = []                  # empty: the system resolver configuration
timeout = "5s"

[dnsbl]
zones = []                        # monitoring-only DNSBL zones for our own IPs
ips = []

[domains.localhost]
# Everything after "+" in a localpart is ignored for delivery and login, so
# mox+anything@localhost is mox@localhost; FromIDs go after it.
catchall_separators = ["+"]
localpart_case_sensitive = false
disabled = false

[accounts.mox]
domain = "localhost"
full_name = ""
# Every address at localhost belongs to this account ("@localhost" is the catch-all).
addresses = ["{LOGIN}", "@localhost"]
# Password for all login addresses of this account: "{PASSWORD}".
password_hash = "{password_hash}"
# Sends authenticated as this address get a unique MAIL FROM (mox+<fromid>@localhost),
# so bounces (DSNs) are matched to the message that caused them.
fromid_login_addresses = ["{FROMID_LOGIN}"]
keep_retired_messages = "72h"
keep_retired_webhooks = "72h"
max_outgoing_messages_per_day = 1000
max_first_time_recipients_per_day = 200

# Webhooks (also settable with --outgoing-webhook, --incoming-webhook and
# --webhook-authorization).  Uncomment to enable:
# [accounts.mox.outgoing_webhook]
# url = "http://127.0.0.1:8089/hooks/outgoing"
# authorization = "Bearer secret"
# events = []                     # empty: all events
# [accounts.mox.incoming_webhook]
# url = "http://127.0.0.1:8089/hooks/incoming"
# authorization = "Bearer secret"
"""


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` through a temporary file and a rename, file and directory fsynced
    (used for localserve's and ``moxtw quickstart``'s files)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def generate_certificate(cert_path: Path, key_path: Path, hostname: str = "localhost") -> None:
    """A self-signed certificate (and key) for ``hostname``, valid for 10 years."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(hostname),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def ensure_config(directory: Path) -> tuple[Path, bool]:
    """Create ``directory/moxtw.toml`` (and its certificate) if missing; (path, created)."""
    config_path = directory / "moxtw.toml"
    if config_path.exists():
        return config_path, False
    directory.mkdir(parents=True, exist_ok=True)
    generate_certificate(directory / "tls" / "localhost.crt", directory / "tls" / "localhost.key")
    text = render_config(
        password_hash=hash_password(PASSWORD),
        admin_password_hash=hash_password(ADMIN_PASSWORD),
        ipv6=have_ipv6_loopback(),
    )
    atomic_write(config_path, text.encode("utf-8"))
    return config_path, True


@attrs.frozen
class Overrides:
    """localserve's command-line flags, applied over the file for one run."""

    outgoing_webhook: str = ""
    incoming_webhook: str = ""
    webhook_authorization: str = ""
    retry_scale: int = 0


def apply_overrides(config: Config, overrides: Overrides) -> Config:
    accounts = dict(config.accounts)
    account: AccountConfig = accounts["mox"] if "mox" in accounts else next(iter(accounts.values()))
    changes: dict[str, Any] = {}
    if overrides.outgoing_webhook:
        changes["outgoing_webhook"] = WebhookConfig(
            url=overrides.outgoing_webhook, authorization=overrides.webhook_authorization
        )
    if overrides.incoming_webhook:
        changes["incoming_webhook"] = WebhookConfig(
            url=overrides.incoming_webhook, authorization=overrides.webhook_authorization
        )
    if overrides.webhook_authorization and not changes:
        for key in ("outgoing_webhook", "incoming_webhook"):
            hook = getattr(account, key)
            if hook is not None:
                changes[key] = attrs.evolve(hook, authorization=overrides.webhook_authorization)
    if changes:
        accounts[account.name] = attrs.evolve(account, **changes)
    queue: QueueConfig = config.queue
    if overrides.retry_scale:
        queue = attrs.evolve(queue, retry_scale=float(overrides.retry_scale))
    return attrs.evolve(config, accounts=accounts, queue=queue)


def load_localserve(directory: Path, overrides: Overrides) -> tuple[Config, bool]:
    path, created = ensure_config(directory)
    return apply_overrides(load_config(path), overrides), created


def banner(config: Config, directory: Path) -> str:
    """The startup text: where things listen and how to log in, like mox's banner."""
    def port(name: str) -> str:
        eps = getattr(config.listeners, name)
        return eps[0].split(":")[1] if eps else "(off)"

    http = port("http")
    lines = [
        f"moxtw localserve in {directory}",
        f"  webapi:      http://localhost:{http}{config.webapi.path}v0/  (basic auth {LOGIN} / {PASSWORD})",
        f"  FromID login: {FROMID_LOGIN} / {PASSWORD}  (unique MAIL FROM per message, for DSN matching)",
        f"  admin password: {ADMIN_PASSWORD}",
        f"  metrics:     http://localhost:{port('metrics')}/metrics",
        f"  smtp:        localhost:{port('smtp')} (incoming, no auth)",
        f"  submission:  localhost:{port('submission')} (STARTTLS), localhost:{port('submissions')} (implicit TLS), {LOGIN} / {PASSWORD}",
        "  every address @localhost is account mox; recipients ending in temperror, permerror,",
        "  timeout or a code such as 550 (e.g. x550@example.com) simulate delivery failures.",
    ]
    for name, account in config.accounts.items():
        if account.outgoing_webhook:
            lines.append(f"  outgoing webhooks of {name}: {account.outgoing_webhook.url}")
        if account.incoming_webhook:
            lines.append(f"  incoming webhooks of {name}: {account.incoming_webhook.url}")
    if config.queue.retry_scale != 1:
        lines.append(f"  retry intervals divided by {config.queue.retry_scale:g}")
    return "\n".join(lines)
