"""Comparative language feedback in a shared trajectory–language latent space (Yang et al.,
CoRL 2024, "Trajectory Improvement and Reward Learning from Comparative Language Feedback";
official code USC-Lira/language-preference-learning @120990d). Everything here is a
simulation: trajectories come from a scripted, seeded reach-lift world (`world`) that stands in
for the original's robosuite pools, and the users who give feedback are simulated too. A
trajectory encoder is aligned with the embeddings of comparative utterances ("Move faster.")
so that the change from one trajectory to another points along the utterance that describes
it; the latent space then drives trajectory improvement by retrieval and reward learning from
language, against a Bradley–Terry comparisons baseline. The paper's human study is not
reproduced.
"""
