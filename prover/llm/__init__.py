"""The ``llm`` verification mode on the node: seeded sampling, generation, sketches.

Exact output hashes cannot verify LLM generation on real hardware: logits
differ in their last bits across kernels, batch sizes and KV-cache versus
prefill. This mode instead makes every source of randomness a portable
function of the job (:mod:`prover.llm.sampler`), commits to the tokens and
to a few bytes of the final hidden states (:mod:`prover.llm.sketch`), and lets
a validator check both with one teacher-forced prefill
(:mod:`verifier.llm`) against tolerances measured on honest variation
(:mod:`prover.llm.job`, ``assay calibrate``).
"""
