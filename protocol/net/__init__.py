"""The network layer: py-libp2p hosts, gossip topics and request/response protocols.

:mod:`protocol.net.wire` names the topics and protocols and frames their bytes,
:mod:`protocol.net.host` runs a Noise-only libp2p host with gossipsub,
:mod:`protocol.net.gossip` validates every gossiped message before it is relayed
or used, :mod:`protocol.net.metrics` counts what happened (Prometheus, ``assay_``
prefix) and :mod:`protocol.net.http` serves a small ASGI app under trio.
"""
