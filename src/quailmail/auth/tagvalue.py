"""Tag=value lists (RFC 6376 §3.2), shared by DKIM, DomainKeys and key records.

    tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
    tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]

Values keep their inner folding whitespace; callers that need it gone (b=, bh=,
p=) remove it themselves, because the rule differs per tag.
"""

from __future__ import annotations

_FWS = " \t\r\n"


class TagValueError(ValueError):
    """The list does not parse (RFC 6376 §3.2); the text says where."""


def parse_tag_list(text: str) -> dict[str, str]:
    """Parse a tag-list into an ordered dict; duplicate tags are an error (§3.2)."""
    tags: dict[str, str] = {}
    parts = text.split(";")
    if not parts[-1].strip(_FWS) and len(parts) > 1:
        parts.pop()  # a trailing ";" is allowed
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip(_FWS)
        if not eq:
            if not part.strip(_FWS):
                raise TagValueError("empty tag-spec")
            raise TagValueError(f"tag without '=': {part.strip(_FWS)[:40]!r}")
        # tag-name = ALPHA *ALNUMPUNC (ALNUMPUNC: ALPHA / DIGIT / "_")
        if not (name.isascii() and name.isidentifier()) or name[0] == "_":
            raise TagValueError(f"bad tag name {name[:40]!r}")
        if name in tags:
            raise TagValueError(f"duplicate tag {name!r}")
        tags[name] = value.strip(_FWS)
    return tags


def strip_fws(value: str) -> str:
    """Remove every whitespace character (base64 values may be folded anywhere)."""
    return "".join(value.split())
