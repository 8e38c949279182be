"""Gemma Scope: JumpReLU sparse autoencoders on every site of a Gemma 2 model.

Lieberum et al. 2024, "Gemma Scope: Open Sparse Autoencoders Everywhere All At Once on
Gemma 2" (arXiv 2408.05147), with the JumpReLU SAE of Rajamanoharan et al. 2024
(arXiv 2407.14435).
"""
