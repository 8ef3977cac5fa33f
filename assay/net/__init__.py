"""The network layer: py-libp2p hosts, gossip topics and request/response protocols.

:mod:`assay.net.wire` names the topics and protocols and frames their bytes,
:mod:`assay.net.host` runs a Noise-only libp2p host with gossipsub,
:mod:`assay.net.gossip` validates every gossiped message before it is relayed
or used, :mod:`assay.net.metrics` counts what happened (Prometheus, ``assay_``
prefix) and :mod:`assay.net.http` serves a small ASGI app under trio.
"""
