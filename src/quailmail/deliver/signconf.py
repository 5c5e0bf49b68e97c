"""Per-domain signing at delivery: QmailToaster's `control/dkim/signconf.xml`.

QmailToaster signs outgoing mail with qmail-dkim (Manuel Mausz's qmail-remote
wrapper around Mail::DKIM), configured by one XML file:

    <dkimsign>
      <global algorithm="rsa-sha256" domain="/var/qmail/control/me"
              keyfile="/var/qmail/control/dkim/global.key" method="simple" selector="beta">
        <types id="dkim" />
      </global>
      <sample.com domain="sample.com" selector="default">
        <types id="dkim" />
        <types id="domainkey" method="nofws" />
      </sample.com>
    </dkimsign>

How a message is signed, as qmail-dkim does it:

- The rule is the element named after the domain of `Sender:` (else
  `From:`), else that of a parent domain (`bar.sample.com` finds
  `<sample.com>`; never the top-level label alone, as `control/dksign`),
  else `<global>`.
- Each `<types>` child is one signature: `id="dkim"` a DKIM-Signature,
  `id="domainkey"` a DomainKey-Signature, `id="none"` (or no `<types>` in a
  domain element) signs nothing for that domain.  `<global>` without
  `<types>` keeps qmail-dkim's built-in `dkim`.
- Attributes are inherited: built-in defaults, then `<global>`, then the
  domain element, then the `<types>` element.  The domain element does
  inherit `<global>`'s `domain`: without its own it signs as `control/me`.
- `domain` is a name, or a file (a value with `/`: `./me` is `control/me`,
  relative paths are relative to the control directory) whose first word
  is the name.  `%` (ours) is
  the sender's domain; with a `%` in `keyfile` too the key is looked up as
  `control/dksign` does, parent domains included, and d= is the domain
  whose key was found.
- `keyfile`: `%` stands for the signing domain (d=); relative paths are
  relative to the control directory.
- `method` is the canonicalization: `simple`, `relaxed` (c=relaxed, i.e.
  relaxed/simple, RFC 6376 §3.5), `relaxed/relaxed` and the other pairs for
  DKIM; `simple` or `nofws` for DomainKeys.  A method meant for the other
  kind, inherited, is taken as its nearest equivalent (DKIM `nofws` is
  `relaxed`, DomainKeys `relaxed…` is `nofws`).
- `headers` (colon-separated) are signed in addition to the default DKIM
  list, as Mail::DKIM::Signer's `Headers`; DomainKeys signs every field
  anyway.  `identity` is i=, `expiration` x= (a Unix time, as Mail::DKIM
  takes it); `query` may only be `dns` or `dns/txt`.

Built-in defaults (qmail-dkim's global): `keyfile` `control/dkim/global.key`,
`domain` `control/me`, `selector` `beta`, `method` `simple`, `algorithm`
`rsa-sha256`, `types` `dkim`.

Where we differ, on purpose:

- Several `<types id="dkim">` may sit in one element, each with its own
  `keyfile`, `selector` and `algorithm`: RSA and Ed25519 together
  (RFC 8463 §4 recommends both during the transition).  qmail-dkim's
  XML::Simple keeps only the last.  At most one `domainkey` per element:
  a DomainKey-Signature without h= covers every field below it, so only one
  can hold.
- The key decides the algorithm: an Ed25519 key signs `ed25519-sha256`, an
  RSA key `rsa-sha256`, so a `<types>` with an Ed25519 key need not override
  an inherited RSA `algorithm`.  `rsa-sha1` (the seeds' example) is signed
  as `rsa-sha256`: RFC 8301 §3.1 forbids signing with SHA-1 and verifiers,
  ours included, refuse it.  The key and its DNS record stay the same.
- A key file that is missing skips that signature (the others are made: an
  Ed25519 key can be rolled out domain by domain); with none made the
  message goes unsigned, as with `control/dksign`.  A key file that exists
  but cannot be read or used, a domain file that cannot be read, or a
  signature that cannot be made keeps the message queued (temporary).
  qmail-dkim defers in those cases too.
- The file is refused whole, with one line saying why, when it is not
  well-formed, has a DTD or entity declaration (`<!DOCTYPE`, `<!ENTITY`), an
  unknown attribute, element or value.  qmail-dkim ignores what it does not
  know.

A domain whose first label is a digit cannot be an XML element name: such a
domain is reached through its parent's element or `<global>` (a limit
qmail-dkim has too).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from quailmail.auth.dkim import DEFAULT_HEADERS, SignError, sign_dkim
from quailmail.auth.domainkeys import Canon, DomainKeysSigningError, sign_domainkeys
from quailmail.auth.domainkeys.names import covers, is_dns_name, is_selector
from quailmail.auth.keys import KeyProblem, PrivateKey, parse_private_key
from quailmail.auth.message import Message, parse_message, sender_domain
from quailmail.config.control import CACHE, parse_value
from quailmail.deliver.dksign import Signed, find_key, sign_for_delivery

SIGNCONF = "dkim/signconf.xml"  # under the control directory

SignType = Literal["dkim", "domainkey"]

# qmail-dkim's built-in global (its documented example): what an attribute
# is when neither the file nor a parent element sets it.
DEFAULTS: Mapping[str, str] = {
    "keyfile": "dkim/global.key",
    "domain": "./me",  # control/me, read as a domain file
    "selector": "beta",
    "method": "simple",
    "algorithm": "rsa-sha256",
}
_ATTRIBUTES = frozenset(
    {"keyfile", "domain", "selector", "method", "algorithm"}
    | {"headers", "identity", "expiration", "query"}
)
_ALGORITHMS = frozenset({"rsa-sha256", "rsa-sha1", "ed25519-sha256"})
# method → (DKIM c=, DomainKeys c=)
_METHODS: Mapping[str, tuple[str, str]] = {
    "simple": ("simple", "simple"),
    "relaxed": ("relaxed", "nofws"),
    "nofws": ("relaxed", "nofws"),
    "simple/simple": ("simple/simple", "simple"),
    "simple/relaxed": ("simple/relaxed", "simple"),
    "relaxed/simple": ("relaxed/simple", "nofws"),
    "relaxed/relaxed": ("relaxed/relaxed", "nofws"),
}
_DECLARATION = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 §3.6.8 ftext


class SignConfError(ValueError):
    """signconf.xml cannot be used; the text is the reason, one line."""


@dataclass(frozen=True, slots=True)
class SignSpec:
    """One signature to make, its attributes resolved through inheritance."""

    type: SignType
    keyfile: str
    domain: str  # a name, a file (has "/"), or "%" (the sender's domain)
    selector: str
    canon: str  # c=, already mapped for the type
    headers: tuple[str, ...] = ()
    identity: str | None = None
    expiration: int | None = None


@dataclass(frozen=True, slots=True)
class SignConf:
    """A parsed signconf.xml: the global rule and one rule per domain."""

    global_rule: tuple[SignSpec, ...]
    domains: Mapping[str, tuple[SignSpec, ...]] = field(default_factory=dict)

    def rule_for(self, domain: str | None) -> tuple[str, tuple[SignSpec, ...]]:
        """(element name, signatures) for a sender domain: the domain's own
        element, a parent's, else global."""
        if domain:
            labels = domain.lower().rstrip(".").split(".")
            # bar.example.com, example.com -- never the top-level label alone.
            for start in range(max(len(labels) - 1, 1)):
                name = ".".join(labels[start:])
                rule = self.domains.get(name)
                if rule is not None:
                    return name, rule
        return "global", self.global_rule


# -- parsing -------------------------------------------------------------------


def parse_signconf(data: bytes) -> SignConf:
    """`control/dkim/signconf.xml` → SignConf, or SignConfError saying why."""
    if b"\x00" in data:
        raise SignConfError("not UTF-8 (or another ASCII-compatible encoding)")
    # Entities are how XML bombs and external fetches get in; a signing
    # configuration needs neither, so any DTD is refused before expat runs.
    if _DECLARATION.search(data):
        raise SignConfError("a DTD or entity declaration (<!DOCTYPE, <!ENTITY) is not allowed")
    try:
        root = ET.fromstring(data)  # noqa: S314 - DTDs and entities refused above
    except ET.ParseError as exc:
        raise SignConfError(f"not well-formed XML: {exc}") from None
    if root.tag != "dkimsign":
        raise SignConfError(f"the root element is <{_tag(root)}>, not <dkimsign>")
    _check_attributes(root, frozenset())
    global_attrs = dict(DEFAULTS)
    global_el = None
    domains: dict[str, ET.Element] = {}
    for child in root:
        name = _tag(child).lower()
        if name == "global":
            if global_el is not None:
                raise SignConfError("<global> appears twice")
            global_el = child
        elif name == "types":
            raise SignConfError("<types> belongs inside <global> or a domain element")
        elif not is_dns_name(name) or "." not in name:
            raise SignConfError(f"<{_tag(child)}> is neither <global> nor a domain name")
        elif name in domains:
            raise SignConfError(f"<{name}> appears twice")
        else:
            domains[name] = child
    if global_el is not None:
        global_attrs.update(_own_attributes(global_el))
    global_rule = _rule(global_el, global_attrs, builtin_dkim=True)
    rules = {}
    for name, element in domains.items():
        rules[name] = _rule(element, {**global_attrs, **_own_attributes(element)})
    return SignConf(global_rule, rules)


def _tag(element: ET.Element) -> str:
    tag = element.tag
    if not isinstance(tag, str) or tag.startswith("{"):
        raise SignConfError(f"namespaced element {tag!r} is not part of signconf.xml")
    return tag


def _check_attributes(element: ET.Element, allowed: frozenset[str]) -> None:
    for name in element.attrib:
        if name not in allowed:
            raise SignConfError(f"<{_tag(element)}> has an unknown attribute {name!r}")


def _own_attributes(element: ET.Element) -> dict[str, str]:
    _check_attributes(element, _ATTRIBUTES)
    return {name: value.strip() for name, value in element.attrib.items()}


def _rule(
    element: ET.Element | None, attrs: Mapping[str, str], *, builtin_dkim: bool = False
) -> tuple[SignSpec, ...]:
    where = "<global>" if element is None else f"<{_tag(element)}>"
    types: list[tuple[str, dict[str, str]]] = []
    for child in element if element is not None else ():
        if _tag(child) != "types":
            raise SignConfError(f"{where} may hold only <types>, not <{_tag(child)}>")
        _check_attributes(child, _ATTRIBUTES | {"id"})
        own = {name: value.strip() for name, value in child.attrib.items()}
        types.append((own.pop("id", "").lower(), own))
    if not types and builtin_dkim:
        types = [("dkim", {})]
    ids = [kind for kind, _ in types]
    for kind in ids:
        if kind not in ("dkim", "domainkey", "none"):
            raise SignConfError(f'{where}: <types id="{kind}"> is not dkim, domainkey or none')
    if "none" in ids:
        if len(ids) > 1:
            raise SignConfError(f'{where}: <types id="none"> cannot be combined with others')
        return ()
    if ids.count("domainkey") > 1:
        raise SignConfError(f'{where}: one <types id="domainkey"> at most (a second cannot verify)')
    specs = [_spec(kind, {**attrs, **own}, where) for kind, own in types]
    # Two signatures of one kind under one name: only one could verify.
    seen: set[tuple[str, str, str]] = set()
    for spec in specs:
        slot = (spec.type, spec.domain, spec.selector)
        if slot in seen:
            raise SignConfError(
                f"{where}: two {spec.type} signatures with selector {spec.selector}"
            )
        seen.add(slot)
    return tuple(specs)


def _spec(kind: str, attrs: Mapping[str, str], where: str) -> SignSpec:
    sign_type: SignType = "dkim" if kind == "dkim" else "domainkey"
    selector = attrs["selector"]
    if not is_selector(selector):
        raise SignConfError(f"{where}: selector {selector[:60]!r} is not a DNS label")
    domain = attrs["domain"]
    # A single label is no signing domain: `me` is a file meant as `./me`.
    if "/" not in domain and domain != "%" and (not is_dns_name(domain) or "." not in domain):
        hint = f" (a file in control/ is written ./{domain})" if is_dns_name(domain) else ""
        raise SignConfError(
            f"{where}: domain {domain[:60]!r} is neither a domain name nor a file{hint}"
        )
    if not attrs["keyfile"]:
        raise SignConfError(f"{where}: keyfile is empty")
    algorithm = attrs["algorithm"].lower()
    if algorithm not in _ALGORITHMS:
        raise SignConfError(f"{where}: unknown algorithm {algorithm[:40]!r}")
    method = attrs["method"].lower()
    if method not in _METHODS:
        raise SignConfError(f"{where}: unknown method {method[:40]!r}")
    headers = tuple(h.strip().lower() for h in attrs.get("headers", "").split(":") if h.strip())
    for name in headers:
        if not _HEADER_NAME.match(name):
            raise SignConfError(f"{where}: {name[:40]!r} is not a header name")
    identity = attrs.get("identity") or None
    if identity is not None and "@" not in identity:
        raise SignConfError(f"{where}: identity {identity[:60]!r} has no @domain")
    expiration = None
    if attrs.get("expiration"):
        if not attrs["expiration"].isdigit():
            raise SignConfError(f"{where}: expiration must be a Unix time in seconds")
        expiration = int(attrs["expiration"])
    if attrs.get("query", "dns/txt").lower() not in ("dns", "dns/txt"):
        raise SignConfError(f"{where}: query must be dns/txt, the only method there is")
    dkim_canon, dk_canon = _METHODS[method]
    return SignSpec(
        type=sign_type,
        keyfile=attrs["keyfile"],
        domain=domain,
        selector=selector,
        canon=dkim_canon if sign_type == "dkim" else dk_canon,
        headers=headers,
        identity=identity,
        expiration=expiration,
    )


# -- signing -------------------------------------------------------------------


class _Defer(Exception):
    """The message must wait; the text is the reason."""

    def __init__(self, reason: str, key: Path | None = None) -> None:
        super().__init__(reason)
        self.key = key


def sign_with_signconf(data: bytes, conf: SignConf, *, root_control: Path) -> Signed:
    """The signatures `conf` asks for on `data`: DKIM-Signature fields in
    the order of the `<types>`, then the DomainKey-Signature (which must sit
    right above the fields it covers).  `root_control` is the control
    directory that relative paths are read from."""
    message = parse_message(data)
    sender = sender_domain(message.headers)
    _name, specs = conf.rule_for(sender)
    dkim_fields: list[bytes] = []
    dk_fields: list[bytes] = []
    first: tuple[Path, str] | None = None
    try:
        for spec in specs:
            made = _sign_one(message, spec, sender, root_control)
            if made is None:
                continue  # no key file: that signature is not made
            fields, path, d = made
            (dkim_fields if spec.type == "dkim" else dk_fields).append(fields)
            first = first or (path, d)
    except _Defer as defer:
        return Signed(temporary=str(defer), key=defer.key)
    if first is None:
        return Signed()
    return Signed(fields=b"".join(dkim_fields + dk_fields), key=first[0], domain=first[1])


def _sign_one(
    message: Message, spec: SignSpec, sender: str | None, control: Path
) -> tuple[bytes, Path, str] | None:
    found = _key_file(spec, sender, control)
    if found is None:
        return None
    path, d = found
    key = _read_key(path)
    if key is None:
        return None
    try:
        if spec.type == "domainkey":
            canon: Canon = "nofws" if spec.canon == "nofws" else "simple"
            fields = sign_domainkeys(message, key, selector=spec.selector, domain=d, canon=canon)
        else:
            if spec.identity is not None and not covers(d, spec.identity.rpartition("@")[2]):
                raise _Defer(f"identity {spec.identity} is not within d={d}", path)
            fields = sign_dkim(
                message,
                key,
                selector=spec.selector,
                domain=d,
                algorithm="ed25519-sha256" if key.type == "ed25519" else "rsa-sha256",
                canon=spec.canon,
                headers=_dkim_headers(message, spec.headers) if spec.headers else None,
                identity=spec.identity,
                expiration=spec.expiration,
            )
    except (SignError, DomainKeysSigningError) as exc:
        raise _Defer(f"cannot sign with {path}: {exc}", path) from None
    return fields, path, d


def _key_file(spec: SignSpec, sender: str | None, control: Path) -> tuple[Path, str] | None:
    """(key path, d=) for `spec`, or None when there is no key to sign with."""
    if spec.domain == "%":
        if sender is None:
            return None
        template = str(control / spec.keyfile)
        if "%" in spec.keyfile:
            return find_key(template, sender)
        return Path(template), sender.lower().rstrip(".")
    d = _signing_domain(spec.domain, control)
    keyfile = spec.keyfile.replace("%", d)
    return control / keyfile, d


def _signing_domain(value: str, control: Path) -> str:
    if "/" not in value:
        return value.lower()
    path = control / value
    try:
        line = CACHE.get(path, parse_value, None)
    except OSError as exc:
        raise _Defer(f"cannot read domain file {path}: {exc.strerror or exc}") from None
    if line is None:
        raise _Defer(f"domain file {path} does not exist")
    words = line.split()
    d = words[0].lower().rstrip(".") if words else ""
    if not is_dns_name(d):
        raise _Defer(f"domain file {path} does not start with a domain name")
    return d


def _read_key(path: Path) -> PrivateKey | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Defer(f"cannot read key {path}: {exc.strerror or exc}", path) from None
    try:
        return parse_private_key(data)
    except KeyProblem as exc:
        raise _Defer(f"key {path} cannot be used: {exc}", path) from None


def _dkim_headers(message: Message, extra: tuple[str, ...]) -> tuple[str, ...]:
    """The default DKIM list plus `extra`, as the fields appear, From oversigned."""
    wanted = set(DEFAULT_HEADERS) | set(extra)
    names = [h.lname for h in message.headers if h.lname in wanted]
    return (*names, "from")


# -- the one entry point of remote delivery --------------------------------------------


def sign_outgoing(data: bytes, control_dir: Path) -> Signed:
    """Every signature remote delivery puts on `data`: `dkim/signconf.xml`'s
    and `dksign`'s, read from `control_dir` (ROOT/control).

    The seeds run both (DKIM from signconf.xml in qmail-remote, DomainKeys
    from DKSIGN): the DKIM-Signature fields come first, signconf.xml's then
    dksign's, and one DomainKey-Signature last, right above the message.
    When signconf.xml makes a DomainKey-Signature, dksign's is left out: a
    second could not verify.  Either one temporary → temporary (nothing
    else is returned); so is a signconf.xml that cannot be read or parsed,
    since the message must not leave unsigned for a typo.  Nothing
    configured, or no key for the sender: `Signed()` (send unsigned).
    """
    path = control_dir / SIGNCONF
    try:
        conf = CACHE.get(path, parse_signconf, None)
        template = CACHE.get(control_dir / "dksign", parse_value, None)
    except SignConfError as exc:
        return Signed(temporary=f"{path}: {exc}")
    except OSError as exc:
        return Signed(temporary=f"cannot read {exc.filename or path}: {exc.strerror or exc}")
    first = Signed() if conf is None else sign_with_signconf(data, conf, root_control=control_dir)
    if first.temporary is not None:
        return first
    first_dkim, first_dk = split_fields(first.fields)
    second = sign_for_delivery(data, template, domainkeys=not first_dk)
    if second.temporary is not None:
        return second
    second_dkim, second_dk = split_fields(second.fields)
    fields = first_dkim + second_dkim + first_dk + second_dk
    if not fields:
        return Signed()
    lead = first if first.fields else second
    return Signed(fields=fields, key=lead.key, domain=lead.domain)


def split_fields(fields: bytes) -> tuple[bytes, bytes]:
    """(DKIM-Signature fields, DomainKey-Signature field) of a signer's output,
    where the DomainKey-Signature, if any, is last."""
    marker = b"DomainKey-Signature:"
    if fields.startswith(marker):
        return b"", fields
    at = fields.find(b"\n" + marker)
    if at < 0:
        return fields, b""
    return fields[: at + 1], fields[at + 1 :]
