"""The Gemma Scope experiments and their claims (Lieberum et al. 2024, arXiv 2408.05147).

- gemmascope.frontier   on the Gemma 2 model trained by the `gemma2` system (its teacher),
                        JumpReLU SAEs at the three sites of the middle layer over a sweep of λ
                        and two widths, all trained in lockstep from one activation stream;
                        delta LM loss and FVU against L0 (paper Figs. 2-4).
- gemmascope.synthetic  activations with a known ground-truth dictionary (sparse features in
                        superposition): a λ sweep, and the dictionary recovered at the true L0.

`gemmascope.frontier` is marked wip: its "wider is better" claim does not reproduce at the
quick budget (the wider SAEs are undertrained and lose most latents), so `alignlab reproduce`
runs it only with `--only gemmascope`.
"""

from . import frontier, synthetic  # noqa: F401  (importing them registers the experiments)
