"""Accounts and addresses: which account an address belongs to, logins, FromIDs."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .address import Address, AddressError, canonical_localpart, parse_address
from .config import AccountConfig, Config, DomainConfig


@attrs.frozen
class Login:
    """A successful basic-auth username lookup (the password is checked separately)."""

    account: AccountConfig
    #: The login address exactly as given (after parsing): decides the default From and
    #: whether FromIDs are used.
    address: Address
    fromid: bool


@attrs.define
class Accounts:
    """Address → account resolution built from the configuration.

    Lookups canonicalise the localpart as mox does: lower-cased unless the domain is
    case-sensitive, everything from the first catchall separator stripped.  An ``@domain``
    address makes the account the domain's catch-all.
    """

    domains: Mapping[str, DomainConfig]
    accounts: Mapping[str, AccountConfig]
    _by_address: dict[str, str] = attrs.field(init=False, factory=dict)
    _catchall: dict[str, str] = attrs.field(init=False, factory=dict)
    _fromid_logins: dict[str, frozenset[tuple[str, str]]] = attrs.field(init=False, factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Accounts:
        return cls(domains=config.domains, accounts=config.accounts)

    def __attrs_post_init__(self) -> None:
        self.rebuild()

    def rebuild(self) -> None:
        """Index ``accounts`` again, after entries of it were replaced, added or removed
        (a configuration reload, :mod:`moxtw.settings`); the new index is swapped in whole."""
        by_address: dict[str, str] = {}
        catchall: dict[str, str] = {}
        fromid_logins: dict[str, frozenset[tuple[str, str]]] = {}
        for name, account in self.accounts.items():
            for text in account.addresses:
                local, _, domain = text.rpartition("@")
                domain = domain.lower()
                if not local:
                    catchall[domain] = name
                    continue
                key = self._key(local, domain)
                if key is not None:
                    by_address[key] = name
            logins = set()
            for text in account.fromid_login_addresses:
                try:
                    a = parse_address(text)
                except AddressError:
                    continue
                logins.add((a.localpart, a.domain))
            fromid_logins[name] = frozenset(logins)
        self._by_address, self._catchall, self._fromid_logins = by_address, catchall, fromid_logins

    def _key(self, localpart: str, domain: str) -> str | None:
        d = self.domains.get(domain)
        if d is None:
            return None
        local = canonical_localpart(localpart, d.catchall_separators, d.localpart_case_sensitive)
        return f"{local}@{domain}"

    def domain(self, name: str) -> DomainConfig | None:
        return self.domains.get(name)

    def lookup(self, address: Address) -> AccountConfig | None:
        """The account that ``address`` belongs to, or None."""
        key = self._key(address.localpart, address.domain)
        if key is None:
            return None
        name = self._by_address.get(key) or self._catchall.get(address.domain)
        return self.accounts.get(name) if name is not None else None

    def login(self, username: str) -> Login | None:
        """Resolve a basic-auth username (an email address) to its account."""
        try:
            address = parse_address(username)
        except AddressError:
            return None
        account = self.lookup(address)
        if account is None:
            return None
        fromid = (address.localpart, address.domain) in self._fromid_logins.get(account.name, frozenset())
        return Login(account=account, address=address, fromid=fromid)

    def may_send_from(self, account: AccountConfig, address: Address) -> bool:
        found = self.lookup(address)
        return found is not None and found.name == account.name
