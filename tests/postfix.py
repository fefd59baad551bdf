"""A private Postfix instance on loopback, as the remote MX of integration tests.

:class:`PostfixMX` writes its own ``config_directory`` (``main.cf``, ``master.cf``),
``queue_directory`` and ``data_directory`` under a directory the caller owns (a test's
temp dir), and runs ``postfix -c DIR start-fg`` as a child process.  Postfix's daemons
reach that directory as other users (postfix, nobody), so the temp dirs below trial's
working directory get ``o+x``; should a directory above it be closed to other users, the
instance runs from its own ``/tmp/moxtw-postfix-*`` instead (removed after the stop).  It never touches
``/etc/postfix`` or a system Postfix: its master lock and PID file live in its own
directories, it listens only on ``host:port`` (a loopback address, a free port), and
nothing can leave it unless a test routes it there (``default_transport`` and
``local_transport`` are ``error:``; see ``transport`` below).

Mail for ``domain`` is delivered by Postfix's ``virtual(8)`` agent into Maildirs under
``DIR/mail/<domain>/<localpart>/`` for each of ``mailboxes``; ``access`` maps a recipient
address to the reply Postfix gives at RCPT TO (``"450 4.2.0 ..."``, ``"550 5.1.1 ..."``).
All maps are ``inline:`` tables, so nothing needs ``postmap``.  Other recipients in
``domain`` are refused with Postfix's own ``550 5.1.1 ... User unknown``.

A test may route mail out, to next hops on loopback: ``relay_domains`` are accepted for
relaying, and ``transport`` (Postfix's ``transport_maps``) routes a domain or address to a
next hop such as ``smtp:[127.0.0.1]:2525`` — a test's own SMTP server, or moxtw's
incoming listener, which is how Postfix's bounces (RFC 3464 DSNs to the envelope sender)
reach moxtw on a port other than 25.  Postfix cannot be pointed at a DNS server on
another port, so with a ``transport`` its SMTP client makes no DNS lookups at all
(``smtp_dns_support_level = disabled``): next hops are ``[IP]:port``.  Everything else
still goes to ``default_transport``, the ``error:`` transport.  ``settings`` adds or
overrides main.cf parameters.

The instance is stopped by the PID of its master process (read from its own PID file and
checked to be the child of the process this helper started), then by the PID of that
process; never by name.  Postfix's master must run as root: :func:`missing` says why an
instance cannot be started here, for a ``SkipTest``.

Reused by ``bench/queue_delivery.py`` (which passes a stand-in for the test case: any
object with ``addCleanup``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater

from tests.helpers import free_port, port_open

reactor: Any = _reactor

#: Where Debian (and most systems) keep Postfix's commands; not always on a user's PATH.
SBIN_PATH = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))


def find_program(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories, else None."""
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + SBIN_PATH)


def missing() -> str | None:
    """Why a private Postfix instance cannot run here (a skip message), or None."""
    if find_program("postfix") is None:
        return "postfix is not installed (Debian: apt-get install postfix); see .ci/run"
    if os.geteuid() != 0:
        return "the postfix master daemon must run as root; run this test as root"
    return None


class _Output(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        self.ended.callback(value.exitCode if value.exitCode is not None else -(value.signal or 0))


def _ppid(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[1])


def _inline(table: dict[str, str]) -> str:
    """A Postfix ``inline:`` table; every entry braced, so values may hold spaces."""
    return "inline:{ " + ", ".join(f"{{ {k} = {v} }}" for k, v in table.items()) + " }"


class PostfixMX:
    """A private Postfix accepting mail for ``domain`` on ``host``:``port``."""

    #: master.cf services Postfix needs to receive and deliver locally (no chroot).
    SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

    def __init__(
        self,
        testcase: Any,
        directory: Path,
        *,
        domain: str = "example.test",
        host: str = "127.0.0.2",
        port: int = 0,
        hostname: str = "",
        mailboxes: tuple[str, ...] = ("someone",),
        access: dict[str, str] | None = None,
        mailbox_owner: str = "nobody",
        relay_domains: tuple[str, ...] = (),
        transport: dict[str, str] | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.testcase = testcase
        self.set_directory(directory.absolute())
        self.domain = domain
        self.host = host
        self.port = port or free_port(host)
        self.hostname = hostname or f"mx.{domain}"
        self.mailboxes = mailboxes
        self.access = dict(access or {})
        self.mailbox_owner = mailbox_owner
        self.relay_domains = relay_domains
        self.transport = dict(transport or {})
        self.settings = dict(settings or {})
        self.proto = _Output()
        self.process: Any = None

    def set_directory(self, directory: Path) -> None:
        self.directory = directory
        self.config_dir = directory / "etc"
        self.queue_dir = directory / "queue"
        #: What main.cf calls the queue directory: ``queue_dir`` itself, or a short symlink
        #: to it when its path is too long for Postfix's postlog socket (sun_path is 108
        #: bytes, and Postfix names that socket by its absolute path).
        self.queue_path = self.queue_dir
        self.data_dir = directory / "data"
        self.mail_dir = directory / "mail"

    # --- configuration -----------------------------------------------------------

    def main_cf(self) -> str:
        owner = pwd.getpwnam(self.mailbox_owner)
        mailboxes = {f"{lp}@{self.domain}": f"{self.domain}/{lp}/" for lp in self.mailboxes}
        restrictions = ["permit_mynetworks", "reject_unauth_destination"]
        if self.access:
            restrictions.insert(0, f"check_recipient_access {_inline(self.access)}")
        return f"""\
# A private instance for moxtw's tests: nothing in here is shared with /etc/postfix.
compatibility_level = 3.6
queue_directory = {self.queue_path}
data_directory = {self.data_dir}
# master.cf's smtpd line names its own address; inet_interfaces must be a configured
# interface address, and only matters for services without one.
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = /dev/stdout
myhostname = {self.hostname}
mydomain = {self.domain}
myorigin = $myhostname
mydestination =
relayhost =
# Nothing leaves this instance: no local delivery, no outbound SMTP.
local_transport = error:5.1.1 no local delivery here
default_transport = error:5.3.0 no outbound delivery here
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtpd_peername_lookup = no
smtpd_banner = $myhostname ESMTP Postfix (moxtw test peer)
virtual_mailbox_domains = {self.domain}
virtual_mailbox_base = {self.mail_dir}
virtual_mailbox_maps = {_inline(mailboxes) if mailboxes else "inline:{ }"}
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = {", ".join(restrictions)}
""" + self.routing_cf()

    def routing_cf(self) -> str:
        """The main.cf lines for ``relay_domains``, ``transport`` and ``settings`` (none
        when they are empty, so the default instance's main.cf is unchanged)."""
        lines = []
        if self.relay_domains:
            lines.append(f"relay_domains = {', '.join(self.relay_domains)}")
        if self.transport:
            lines += [
                "# Next hops are [IP]:port on loopback; no DNS (see tests/postfix.py).",
                f"transport_maps = {_inline(self.transport)}",
                "smtp_dns_support_level = disabled",
            ]
        lines += [f"{k} = {v}" for k, v in self.settings.items()]
        return "".join(line + "\n" for line in lines)

    def master_cf(self) -> str:
        return f"{self.host}:{self.port} inet  n  -  n  -  -  smtpd\n" + self.SERVICES

    def write(self) -> None:
        if self.unreachable() is not None:
            # Above the working directory and not ours to open up (a checkout in a 0700
            # home directory): run the instance from its own directory under /tmp.
            own = Path(tempfile.mkdtemp(prefix="moxtw-postfix-"))
            self.testcase.addCleanup(shutil.rmtree, own, True)  # after stop (cleanups are LIFO)
            self.set_directory(own)
        for d in (self.config_dir, self.queue_dir, self.data_dir, self.mail_dir):
            d.mkdir(parents=True, exist_ok=True)
        if len(str(self.queue_dir / "public" / "postlog")) > 100 and self.queue_path == self.queue_dir:
            link_dir = Path(tempfile.mkdtemp(prefix="moxtw-pf-"))
            self.queue_path = link_dir / "q"
            self.queue_path.symlink_to(self.queue_dir)
            self.testcase.addCleanup(shutil.rmtree, link_dir)  # the link, not its target
        (self.config_dir / "main.cf").write_text(self.main_cf())
        (self.config_dir / "master.cf").write_text(self.master_cf())
        postfix = pwd.getpwnam("postfix")
        os.chown(self.data_dir, postfix.pw_uid, postfix.pw_gid)
        owner = pwd.getpwnam(self.mailbox_owner)
        os.chown(self.mail_dir, owner.pw_uid, owner.pw_gid)
        for d in (self.directory, self.mail_dir):
            d.chmod(0o755)
        self.allow_traversal()

    def unreachable(self) -> Path | None:
        """The first directory above the working directory (which :meth:`allow_traversal`
        does not change) that other users cannot search, or None."""
        cwd = Path.cwd().resolve()
        for d in self.directory.parents:
            if (d == cwd or cwd in d.parents) or not d.exists():
                continue
            if not d.stat().st_mode & 0o001:
                return d
        return None

    def allow_traversal(self) -> None:
        """Let other users search every directory above ``directory``: master opens its
        lock in ``data_dir`` as the postfix user, virtual(8) writes the Maildirs as the
        mailbox owner, both by absolute path.  Test temp dirs (``mkdtemp``) are 0700, so
        ``o+x`` (search, not read) is added to those at or below the working directory
        (trial's temp dir); :meth:`write` moved the instance if one above is closed."""
        cwd = Path.cwd().resolve()
        for d in (self.directory, *self.directory.parents):
            mode = d.stat().st_mode
            if not mode & 0o001 and (d == cwd or cwd in d.parents or d == self.directory):
                d.chmod(mode | 0o001)

    # --- process -----------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        env["PATH"] = env.get("PATH", "/usr/bin:/bin") + os.pathsep + SBIN_PATH
        return env

    @property
    def output(self) -> str:
        return self.proto.output.decode("utf-8", "replace")

    async def start(self, timeout: float = 30.0) -> PostfixMX:
        """Write the configuration, start ``postfix start-fg`` and wait for SMTP."""
        postfix = find_program("postfix")
        if postfix is None:
            raise RuntimeError("postfix is not installed")
        self.write()
        argv = [postfix, "-c", str(self.config_dir), "start-fg"]
        self.process = reactor.spawnProcess(self.proto, postfix, argv, env=self.env(), path=str(self.directory))
        self.testcase.addCleanup(self.stop)
        deadline = time.monotonic() + timeout
        while not port_open(self.port, self.host):
            if self.proto.ended.called or time.monotonic() > deadline:
                why = "exited" if self.proto.ended.called else f"not listening after {timeout}s"
                raise RuntimeError(
                    f"postfix {why} on {self.host}:{self.port}:\n{self.output}\n"
                    f"postfix check says:\n{await self.check()}"
                )
            await deferLater(reactor, 0.05, lambda: None)
        return self

    async def check(self) -> str:
        """``postfix -c DIR check`` on a pseudo-terminal: the postfix command writes its
        fatal errors only to syslog and to a terminal, so this is how to see them."""
        postfix = find_program("postfix")
        assert postfix is not None
        proto = _Output()
        argv = [postfix, "-c", str(self.config_dir), "check"]
        reactor.spawnProcess(proto, postfix, argv, env=self.env(), path=str(self.directory), usePTY=True)
        code = await proto.ended
        return f"{proto.output.decode('utf-8', 'replace').strip()}\n(exit status {code})"

    def master_pid(self) -> int | None:
        """The master daemon's PID, if it is the child of the process started here."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        ours = None if self.process is None else self.process.pid  # None once it ended
        if ours is None or _ppid(pid) != ours:
            return None
        return pid

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the master (it stops its own children; ``postfix-script`` then
        exits); SIGKILL to master and script if that takes longer than ``timeout``."""
        if self.process is None or self.proto.ended.called:
            return
        master = self.master_pid()
        if master is not None:
            os.kill(master, signal.SIGTERM)
        else:
            self.process.signalProcess("TERM")
        deadline = time.monotonic() + timeout
        while not self.proto.ended.called and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
        if not self.proto.ended.called:
            master = self.master_pid()
            if master is not None:
                os.kill(master, signal.SIGKILL)
            self.process.signalProcess("KILL")
            await self.proto.ended

    # --- mailboxes ---------------------------------------------------------------

    def maildir(self, localpart: str) -> Path:
        return self.mail_dir / self.domain / localpart

    def messages(self, localpart: str) -> list[bytes]:
        """The messages delivered to ``localpart``'s Maildir, oldest first."""
        files: list[Path] = []
        for sub in ("new", "cur"):
            d = self.maildir(localpart) / sub
            if d.is_dir():
                files.extend(p for p in d.iterdir() if p.is_file())
        files.sort(key=lambda p: (p.stat().st_mtime, p.name))
        return [p.read_bytes() for p in files]


def smtp_sink_argv(host: str, port: int, backlog: int = 256) -> list[str] | None:
    """``smtp-sink`` listening on ``host:port`` (as root it must drop to ``nobody``), or
    None when it is not installed."""
    sink = find_program("smtp-sink")
    if sink is None:
        return None
    argv = [sink]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]
    return [*argv, f"{host}:{port}", str(backlog)]
