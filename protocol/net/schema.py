"""Field checks for the maps services exchange: every request and reply is checked before use.

A peer's map is untrusted however it got here: a missing field, a field of
the wrong type or size, or (in a request) a field nobody asked for is a
:class:`MalformedMessage` that names the map and the field, never a
``KeyError`` or ``TypeError`` deep inside a service. Requests are checked
whole with :func:`check_map` (unknown fields refused, like an unknown
``param`` in the OpenAI API); replies field by field with the typed getters,
which leave fields they are not asked about alone, so a newer peer may add
some.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from protocol.codec import Tensor
from protocol.errors import MalformedMessage

T = TypeVar("T")
Check = Callable[[str, object], object]
"""(where, value) → the value, or raise MalformedMessage naming ``where``."""

UINT64_MAX = 2**64 - 1


def _name(where: str, name: str) -> str:
    return f"{where}: field {name!r}"


def _present(value: Mapping[str, Any], name: str, where: str) -> object:
    if not isinstance(value, Mapping):
        raise MalformedMessage(f"{where} must be a map, got {type(value).__name__}")
    if name not in value:
        raise MalformedMessage(f"{_name(where, name)} is missing")
    return value[name]


def uint(where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT64_MAX:
        raise MalformedMessage(f"{where} must be an unsigned 64-bit integer, got {value!r:.40}")
    return value


def boolean(where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise MalformedMessage(f"{where} must be true or false, got {value!r:.40}")
    return value


def text(where: str, value: object, limit: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise MalformedMessage(f"{where} must be text of at most {limit} characters")
    return value


def blob(where: str, value: object) -> bytes:
    if not isinstance(value, bytes) or not value:
        raise MalformedMessage(f"{where} must be non-empty bytes, got {type(value).__name__}")
    return value


def sized(size: int) -> Callable[[str, object], bytes]:
    def check(where: str, value: object) -> bytes:
        if not isinstance(value, bytes) or len(value) != size:
            got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
            raise MalformedMessage(f"{where} must be {size} bytes, got {got}")
        return value

    return check


digest = sized(32)
"""A SHA-256 digest or an Ed25519 public key: 32 bytes."""


def digest_or_empty(where: str, value: object) -> bytes:
    """32 bytes, or empty bytes for "none"."""
    return b"" if value == b"" else digest(where, value)


def tensor(where: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise MalformedMessage(f"{where} must be a tensor, got {type(value).__name__}")
    return value


def items(check: Callable[[str, object], T], limit: int) -> Callable[[str, object], list[T]]:
    """A list of at most ``limit`` values, each passing ``check``."""

    def check_list(where: str, value: object) -> list[T]:
        if not isinstance(value, list) or len(value) > limit:
            raise MalformedMessage(f"{where} must be a list of at most {limit} items")
        return [check(f"{where}[{i}]", item) for i, item in enumerate(value)]

    return check_list


def get(value: Mapping[str, Any], name: str, check: Callable[[str, object], T],
        where: str) -> T:
    """``value[name]`` checked by ``check``; a missing field is malformed."""
    return check(_name(where, name), _present(value, name, where))


def get_optional(value: Mapping[str, Any], name: str, check: Callable[[str, object], T],
                 where: str) -> T | None:
    """``value[name]`` checked by ``check``, or None when absent."""
    if not isinstance(value, Mapping):
        raise MalformedMessage(f"{where} must be a map, got {type(value).__name__}")
    if name not in value:
        return None
    return check(_name(where, name), value[name])


def check_map(value: object, where: str, required: Mapping[str, Check],
              optional: Mapping[str, Check] | None = None) -> dict[str, Any]:
    """The checked fields of a request map; a missing, mistyped or unknown field is refused."""
    if not isinstance(value, Mapping):
        raise MalformedMessage(f"{where} must be a map, got {type(value).__name__}")
    optional = optional or {}
    unknown = sorted(str(k) for k in value.keys() - required.keys() - optional.keys())
    if unknown:
        raise MalformedMessage(f"{where}: unknown fields {unknown}")
    out = {name: check(_name(where, name), _present(value, name, where))
           for name, check in required.items()}
    for name, check in optional.items():
        if name in value:
            out[name] = check(_name(where, name), value[name])
    return out
