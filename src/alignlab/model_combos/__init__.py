"""Misuse through combinations of safe models (Jones, Dragan & Steinhardt 2024, arXiv 2406.14595).

A red-team harness for *combinations* of chat models (`strategies`: single-model pass@k, the
manual and the automated decompositions, on any `ChatModel`: the small models trained here,
local Hugging Face models, or OpenAI-compatible endpoints) and a miniature in which the
refusal-tuned "frontier" and the compliant "weak" models are real Gemma 2 networks trained
here on chains of digit operations that end by planting a harmless canary (`chains`, `zoo`).
See docs/model_combos.md.
"""
