"""Coprocessor Actor Critic (Pan, Schrum, Myers, Bıyık & Dragan, ICML 2024).

A coprocessor stimulates an injured simulated brain so that it acts well in the world. The
brains (a lesioned SAC policy, `brain`; a lesioned modular rate RNN after Michaels et al.,
`michaels`) and the patient environment (`patient`) are simulations, named so; CopAC itself
(`copac`) learns Q* from the free world simulator and a forward model f(s, x) -> a from a few
patient episodes. Baselines: SAC acting on the stimulation (`alignlab.rl.sac`) and MBPO
(`mbpo`). Experiments: `copac.reacher`, `copac.lesions`, `copac.pendulum`, `copac.rnn_brain`.
Docs: docs/copac.md.
"""
