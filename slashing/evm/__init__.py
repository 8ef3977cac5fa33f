"""The EVM settlement backend (DESIGN decision 12): the ledger's rules as contracts.

``toolchain`` finds the pinned compiler and node from npm and compiles
``contracts/``; ``anvil`` runs a local EVM node; ``chain`` deploys and calls the
contracts and names every revert; ``points`` puts BLS12-381 points in the
precompiles' encoding.
"""
