"""Sign-in and sign-up throttles, checked before any password work.

Per client address (both routes), per account (sign-in attempts), and failed sign-ins per
account over growing windows, so repeated failures back off. Accounts are keyed by a hash of
the lowercased email whether or not it exists: the answers never reveal which emails do.
"""

from __future__ import annotations

import hashlib

from media_api.errors import RateLimited
from media_api.settings import Settings
from media_api.throttles import Rates, Throttle, parse_rates


def _account(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


class AuthThrottles:
    """The auth routes' limits, parsed once from settings."""

    def __init__(self, throttle: Throttle, settings: Settings) -> None:
        self.throttle = throttle
        self.per_address = parse_rates(settings.rate_limit_auth_per_address)
        self.per_account = parse_rates(settings.rate_limit_login_per_account)
        self.failures = parse_rates(settings.rate_limit_login_failures_per_account)

    async def before_signup(self, address: str) -> None:
        """Counts against the address's budget; raises 429 when it is spent."""
        await self._hit(f"auth:address:{address}", self.per_address, "from this address")

    async def before_login(self, address: str, email: str) -> None:
        """Address and account budgets, then the account's failure backoff. Every attempt
        counts as a failure until it succeeds (`login_succeeded` forgets them), so a burst of
        concurrent guesses cannot all slip through before the first is counted."""
        account = _account(email)
        await self._hit(f"auth:address:{address}", self.per_address, "from this address")
        await self._hit(f"auth:account:{account}", self.per_account, "for this account")
        retry_after = await self.throttle.hit(f"auth:failures:{account}", self.failures)
        if retry_after is not None:
            raise RateLimited("too many failed sign-ins for this account", retry_after)

    async def login_succeeded(self, email: str) -> None:
        """The right password: the account's failures are forgiven."""
        await self.throttle.clear(f"auth:failures:{_account(email)}", self.failures)

    async def _hit(self, key: str, rates: Rates, where: str) -> None:
        retry_after = await self.throttle.hit(key, rates)
        if retry_after is not None:
            raise RateLimited(f"too many sign-in or sign-up attempts {where}", retry_after)
