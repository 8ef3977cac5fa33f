"""Exception types for everything a peer can send us.

Each names what was wrong so that an operator (or a test) can act on it.
All derive from :class:`ProtocolError`, so a service loop can catch one type
and drop the message without crashing.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message or request that must be rejected; nothing was changed."""


class MalformedMessage(ProtocolError):
    """The bytes do not decode to a well-formed message of the expected kind."""


class OversizedMessage(ProtocolError):
    """The bytes exceed the size bound; they were not decoded."""


class UnsupportedVersion(MalformedMessage):
    """The message carries a schema version this code does not speak."""


class BadSignature(ProtocolError):
    """The signature does not verify for the claimed signer and domain."""


class ReplayedMessage(ProtocolError):
    """The message (by content id) was already accepted once."""
