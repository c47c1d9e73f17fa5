"""SMTP probe: greeting, EHLO, STARTTLS (or implicit TLS) and what the certificate says.

The certificate is checked against the system's CAs (or the ones given) for the name the
server should present; when that fails the probe connects once more without verification,
only to report what the certificate is, so the condition can say what is wrong with it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass, field, replace
from datetime import datetime

import aiosmtplib
from cryptography import x509
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    not_after: datetime
    dns_names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SmtpProbeResult:
    host: str
    port: int
    banner: str | None = None
    latency_ms: int | None = None
    extensions: list[str] = field(default_factory=list)
    tls: bool | None = None
    """None: TLS not attempted (mode none); False: attempted and failed; True: it worked."""
    tls_version: str | None = None
    certificate: CertificateInfo | None = None
    certificate_verified: bool | None = None
    certificate_problem: str | None = None
    """Why the certificate did not verify. Mail between MTAs is opportunistic TLS, so this is
    reported but does not make the server unreachable."""
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.banner is not None and self.error is None

    @property
    def message(self) -> str:
        if self.banner is None:
            return f"no SMTP greeting from {self.host}:{self.port}: {self.error}"
        if self.error:
            return f"{self.host}:{self.port} greeted ({self.banner[:80]}) but {self.error}"
        tls = f", TLS {self.tls_version}" if self.tls else ""
        cert = ""
        if self.certificate is not None:
            expiry = self.certificate.not_after.date().isoformat()
            cert = f", certificate {self.certificate.subject} until {expiry}"
            if self.certificate_problem:
                cert += f" (not verified: {self.certificate_problem})"
        return f"{self.host}:{self.port} answers: {self.banner[:80]}{tls}{cert}"


def _certificate(der: bytes | None) -> CertificateInfo | None:
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names = list(names.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = []
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertificateInfo(
        subject=str(common[0].value) if common else cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        dns_names=dns_names,
    )


def _context(verify: bool, ca_pem: str | None) -> ssl.SSLContext:
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    return context


async def _attempt(
    host: str,
    port: int,
    *,
    mode: str,
    helo_name: str,
    server_name: str,
    timeout: float,  # noqa: ASYNC109 - applied per SMTP step by aiosmtplib
    verify: bool,
    ca_pem: str | None,
) -> SmtpProbeResult:
    context = _context(verify, ca_pem)
    began = time.monotonic()
    banner: str | None = None
    latency: int | None = None
    extensions: list[str] = []
    if mode == "tls":
        # Implicit TLS: the handshake comes first and aiosmtplib takes the name to verify (and
        # send as SNI) from `hostname`; connect the socket ourselves so that name need not
        # resolve to the address probed.
        try:
            sock = await asyncio.to_thread(socket.create_connection, (host, port), timeout)
        except OSError as error:
            return SmtpProbeResult(host, port, error=f"{type(error).__name__}: {error}")
        smtp = aiosmtplib.SMTP(
            hostname=server_name,
            sock=sock,
            local_hostname=helo_name,
            timeout=timeout,
            use_tls=True,
            tls_context=context,
        )
    else:
        smtp = aiosmtplib.SMTP(
            hostname=host, port=port, local_hostname=helo_name, timeout=timeout, start_tls=False
        )
    try:
        greeting = await smtp.connect()
        latency = int((time.monotonic() - began) * 1000)
        banner = f"{greeting.code} {greeting.message}"
        await smtp.ehlo()
        extensions = sorted(smtp.esmtp_extensions)
        if mode == "starttls":
            if not smtp.supports_extension("starttls"):
                return SmtpProbeResult(
                    host,
                    port,
                    banner,
                    latency,
                    extensions,
                    tls=False,
                    error="the server does not offer STARTTLS",
                )
            await smtp.starttls(server_hostname=server_name, tls_context=context)
        tls: bool | None = None
        version = None
        certificate = None
        if mode in ("starttls", "tls"):
            transport = smtp.transport
            ssl_object = transport.get_extra_info("ssl_object") if transport else None
            tls = ssl_object is not None
            if ssl_object is not None:
                version = ssl_object.version()
                certificate = _certificate(ssl_object.getpeercert(binary_form=True))
        return SmtpProbeResult(
            host,
            port,
            banner,
            latency,
            extensions,
            tls,
            version,
            certificate,
            certificate_verified=verify if tls else None,
        )
    except ssl.SSLCertVerificationError:
        raise
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise cause from error
        return SmtpProbeResult(
            host,
            port,
            banner,
            latency,
            extensions,
            tls=False if mode != "none" and banner is not None else None,
            error=f"{type(error).__name__}: {error}",
        )
    finally:
        if smtp.is_connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()


async def probe_smtp(
    host: str,
    port: int,
    *,
    mode: str = "starttls",
    helo_name: str = "probe.penguinmails.io",
    server_name: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - applied per SMTP step by aiosmtplib
    ca_pem: str | None = None,
) -> SmtpProbeResult:
    """Greeting, EHLO and (mode starttls / tls) the TLS handshake and certificate."""
    name = server_name or host
    try:
        return await _attempt(
            host,
            port,
            mode=mode,
            helo_name=helo_name,
            server_name=name,
            timeout=timeout,
            verify=True,
            ca_pem=ca_pem,
        )
    except ssl.SSLCertVerificationError as error:
        reason = error.verify_message or str(error)
    seen = await _attempt(
        host,
        port,
        mode=mode,
        helo_name=helo_name,
        server_name=name,
        timeout=timeout,
        verify=False,
        ca_pem=None,
    )
    if seen.tls:
        return replace(
            seen,
            certificate_verified=False,
            certificate_problem=f"does not verify for {name}: {reason}",
        )
    return seen
