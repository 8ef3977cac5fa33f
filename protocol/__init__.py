"""The shared vocabulary every role speaks: messages, codec, keys, BLS and the beacon, sampling,
economics, configuration, and the libp2p transport (``protocol.net``). Imports none of ours."""
