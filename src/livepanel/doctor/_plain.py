"""The doctor's plain HTTP checks: the endpoint, TLS, the slash redirect, the Origin rule."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl as ssl_module
from datetime import datetime, timezone

from livepanel.client.endpoint import REDIRECTS, refusal_reason
from livepanel.doctor._http import (
    Answer,
    same_origin_path,
    why,
)
from livepanel.doctor._probe import (
    FOREIGN_ORIGIN,
    Probe,
)


class PlainChecks(Probe):
    """Checks made with plain GET requests."""

    async def _endpoint_check(self) -> Answer | None:
        target = self.endpoint.target(())
        try:
            answer = await self._get(target)
        except ssl_module.SSLCertVerificationError as exc:
            self.add(
                "tls",
                "FAIL",
                f"the certificate of {self.endpoint.host} is not valid: {exc.verify_message}",
                f"serve a certificate for {self.endpoint.host} from a trusted CA, with its chain",
            )
            return None
        except asyncio.TimeoutError:
            self.add(
                "endpoint",
                "FAIL",
                f"{self.http_url} did not answer a plain GET within {self.timeout:g}s",
                "check that the server (and the proxy in front of it) is up and answers",
            )
            return None
        except (OSError, ValueError) as exc:
            self.add("endpoint", "FAIL", f"cannot reach {self.http_url}: {why(exc)}")
            return None
        self._tls_finding(answer)
        if answer.status in REDIRECTS:
            answer = await self._follow(answer) or answer
        return answer if self._endpoint_finding(answer) else None

    async def _follow(self, answer: Answer) -> Answer | None:
        location = answer.headers.get("location", "")
        moved = same_origin_path(self.http_url, location)
        if moved is None:
            self.add(
                "slash",
                "FAIL",
                f"{self.http_url} redirects to {location[:200]!r}, another origin or scheme; "
                "clients do not follow it",
                "run the server with --proxy-headers behind a proxy that sets X-Forwarded-Proto "
                "and Host, or use the URL the redirect names",
            )
            return None
        self.add(
            "slash",
            "warn",
            f"{self.endpoint.path} redirects to {moved} (livepanel's clients follow it; "
            "browsers' EventSource does too)",
            f"connect to {moved} directly",
        )
        self.endpoint = dataclasses.replace(self.endpoint, path=moved)
        try:
            return await self._get(self.endpoint.target(()))
        except (OSError, ValueError, asyncio.TimeoutError):
            return None

    def _tls_finding(self, answer: Answer) -> None:
        if self.endpoint.ssl is None:
            loopback = self.endpoint.host in ("localhost", "127.0.0.1", "::1")
            if loopback:
                self.add("tls", "ok", "plain http on the loopback interface")
            else:
                self.add(
                    "tls",
                    "warn",
                    "plain http: credentials and events travel unencrypted",
                    "serve the endpoint over https / wss (docs/deployment.md)",
                )
            return
        cert = answer.peercert
        if not cert:
            self.add("tls", "warn", "TLS is used but the certificate was not verified")
            return
        expires = datetime.fromtimestamp(
            ssl_module.cert_time_to_seconds(str(cert.get("notAfter"))), tz=timezone.utc
        )
        days = (expires - datetime.now(timezone.utc)).total_seconds() / 86400
        message = f"certificate valid for {self.endpoint.host} until {expires:%Y-%m-%d}"
        if days < 14:
            self.add("tls", "warn", f"{message}: it expires in {days:.1f} days", "renew it")
        else:
            self.add("tls", "ok", message)

    def _endpoint_finding(self, answer: Answer) -> bool:
        status = answer.status
        code, message = refusal_reason(answer.body)
        if status == 426:
            self.add("endpoint", "ok", "a livepanel endpoint; the credentials are accepted")
            return True
        if status == 401:
            given = any(k.lower() == "authorization" for k, _ in self.endpoint.headers)
            self.add(
                "endpoint",
                "FAIL",
                "credentials refused (401)" if given else "the endpoint needs credentials (401)",
                "pass -u USER --password-env VAR with a user the server accepts",
            )
        elif status == 403 and code == "tls_required":
            self.add(
                "endpoint",
                "FAIL",
                "the server requires TLS but sees plain http (403 tls_required)",
                "let the proxy set X-Forwarded-Proto and run the server with --proxy-headers",
            )
        elif status in (403, 429):
            why = f" {code}" if code else ""
            self.add("endpoint", "FAIL", f"refused ({status}{why}): {message[:200]}".rstrip(": "))
        else:
            self.add(
                "endpoint",
                "FAIL",
                f"not a livepanel endpoint: a plain GET of {self.http_url} answered {status} "
                "(livepanel answers 426)",
                "check the URL's path (the endpoint, e.g. /ws) and that the proxy routes it",
            )
        return False

    async def _slash_check(self) -> None:
        if any(f.check == "slash" for f in self.findings):
            return  # the URL itself redirected: already reported
        path = self.endpoint.path
        other = path.rstrip("/") if path.endswith("/") and path != "/" else path + "/"
        if other == path:
            return
        try:
            answer = await self._get(self.endpoint.target(()).replace(path, other, 1))
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            self.add("slash", "warn", f"{other} could not be checked: {why(exc)}")
            return
        if answer.status == 426:
            self.add("slash", "ok", f"{path} and {other} both reach the endpoint")
        elif answer.status in REDIRECTS:
            location = answer.headers.get("location", "")
            moved = same_origin_path(self.http_url, location)
            if moved is None:
                self.add(
                    "slash",
                    "FAIL",
                    f"{other} redirects to {location[:200]!r}, another origin or scheme",
                    "run the server with --proxy-headers behind a proxy that sets "
                    "X-Forwarded-Proto and Host",
                )
            else:
                self.add("slash", "ok", f"{other} redirects to {moved} within the origin")
        else:
            self.add(
                "slash", "ok", f"only {path} is the endpoint ({other} answers {answer.status})"
            )

    async def _origin_check(self) -> None:
        try:
            answer = await self._get(self.endpoint.target(()), [("Origin", FOREIGN_ORIGIN)])
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            self.add("origin", "warn", f"could not be checked: {why(exc)}")
            return
        code, _ = refusal_reason(answer.body)
        if answer.status == 403:
            self.add("origin", "ok", f"a foreign Origin is refused (403 {code or ''})".rstrip())
        else:
            self.add(
                "origin",
                "FAIL",
                f"a handshake from Origin {FOREIGN_ORIGIN} is not refused "
                f"(HTTP {answer.status}): any web page can open this stream",
                "keep allowed_origins=None (same origin) or list only your dashboards' origins",
            )
