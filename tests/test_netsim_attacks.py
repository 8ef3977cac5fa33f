"""netsim's adversary strategies, each played briefly on the real rules: none of them pays.

The sweep over r and p is ``bench/adversaries.py``; here each attack runs at
the default colluding share (r = 0.1) and p = 0.2, so that a few rounds
sample enough jobs, against its honest counterfactual.
"""

from __future__ import annotations

import pytest

from netsim.attacks import ATTACKS, AttackSpec, play, run_attack, run_lazy

ROUNDS = 10
P = 200_000


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a not in ("lazy", "replay")])
def test_the_attack_loses_and_no_honest_party_is_slashed(attack: str) -> None:
    result = run_attack(AttackSpec(attack, 0.1, P, rounds=ROUNDS))
    assert result.attacked > 0
    assert result.attacker_profit < 0, result.details
    assert result.honest_slashed == 0


def test_lazy_validators_lose_to_canaries() -> None:
    result = run_lazy(AttackSpec("lazy", 0.1, P), sampled=300)
    assert result.attacked > 0 and result.details["lazy_slashed"] > 0
    assert result.attacker_profit < 0
    assert result.honest_slashed == 0


def test_every_replay_is_refused_and_moves_no_token() -> None:
    attack, honest = play(AttackSpec("replay", 0.1, P, rounds=4), True), \
        play(AttackSpec("replay", 0.1, P, rounds=4), False)
    assert attack.counts.get("replays_accepted", 0) == 0
    assert attack.counts["replays_refused"] == attack.attacked > 0
    members = attack.coalition()
    assert attack.worth(members) == honest.worth(members)
