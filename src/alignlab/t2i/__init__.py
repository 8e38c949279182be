"""Imagen 3 (Imagen Team, 2024): latent text-to-image diffusion on a simulated shapes world."""
